"""``GET /v1/check``: the gateway check over plain HTTP/1.1, for nginx ``auth_request`` and
Traefik ForwardAuth (stdlib asyncio, no framework).

The check request carries the original request's headers (both proxies forward them);
the original path comes from ``X-Forwarded-Uri`` (Traefik) or ``X-Original-Uri`` (nginx,
set it with ``proxy_set_header``). Answers: 200 allow (x-ringfence-* headers to copy
upstream), 429 block, 403 challenge, 400 missing account when so configured. nginx treats any
status other than 2xx/401/403 as an error, so ``/v1/check?deny_status=403`` turns every
denial into 403 (``x-ringfence-action`` still says which). ``/healthz`` answers 200 while
serving and 503 once shutdown began. Bodies of check requests are read and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from http import HTTPStatus
from urllib.parse import parse_qs

from ringfence.service.adapters.event_log import EventLogUnavailable
from ringfence.service.api.durable import Barrier, wait_committed
from ringfence.service.api.gateway import Gateway, GatewayRequest

log = logging.getLogger(__name__)

CHECK_PATH = "/v1/check"
HEALTH_PATH = "/healthz"
MAX_HEAD_BYTES = 32 * 1024  # request line + headers
MAX_HEADERS = 128
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT_S = 30.0  # a keep-alive connection waiting this long for a request is closed
READ_TIMEOUT_S = 10.0  # a request head or body taking longer than this is dropped


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class HttpCheckServer:
    """The /v1/check listener; ``start`` returns the bound port, ``close`` stops it and
    drops open connections."""

    def __init__(self, gateway: Gateway, host: str, port: int, *,
                 reuse_port: bool = False, committed: Barrier | None = None) -> None:
        self._gateway = gateway
        self._committed = committed  # event_log_ack=committed: answer after the commit
        self._host = host
        self._port = port
        self._reuse_port = reuse_port  # worker processes sharing one port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.serving = False
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connection, self._host, self._port,
                                                  limit=MAX_HEAD_BYTES,
                                                  reuse_port=self._reuse_port or None)
        self.port = self._server.sockets[0].getsockname()[1]
        self.serving = True
        return self.port

    def stop_serving(self) -> None:
        """Answer /healthz with 503 from now on (shutdown began); checks still answer."""
        self.serving = False

    async def close(self) -> None:
        self.serving = False
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        peer_host = peer[0] if isinstance(peer, tuple) else ""
        try:
            keep_alive = True
            while keep_alive:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT_S):
                        first = await reader.readline()
                    if not first:
                        break
                    async with asyncio.timeout(READ_TIMEOUT_S):
                        method, target, version, headers = await _read_head(first, reader)
                        await _drain_body(reader, headers)
                except _BadRequest as exc:
                    await _write(writer, exc.status, (), "", head_only=False, keep_alive=False)
                    break
                keep_alive = _keep_alive(version, headers)
                status, answer, body = self._answer(method, target, peer_host, headers)
                if self._committed is not None:
                    try:
                        await wait_committed(self._committed)
                    except EventLogUnavailable:
                        status, answer, body = 503, (), "event log unavailable\n"
                await _write(writer, status, answer, body, head_only=method == "HEAD",
                             keep_alive=keep_alive)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # idle, slow, gone, or a first line over the limit: just close
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, method: str, target: str, peer: str,
                headers: tuple[tuple[str, str], ...]
                ) -> tuple[int, tuple[tuple[str, str], ...], str]:
        path, _, query = target.partition("?")
        if path == HEALTH_PATH:
            return (200, (), "ok\n") if self.serving else (503, (), "shutting down\n")
        if path != CHECK_PATH:
            return 404, (), ""
        v = self._gateway.check(GatewayRequest(peer=peer, headers=headers, path=""),
                                transport="http")
        deny_status = _deny_status(query)
        if v.allowed or deny_status is None:
            return v.status, v.headers, v.body
        return deny_status, v.headers, v.body


def _deny_status(query: str) -> int | None:
    values = parse_qs(query).get("deny_status")
    if not values or not values[0].isdigit():
        return None
    status = int(values[0])
    return status if 400 <= status <= 499 else None


async def _read_head(first: bytes, reader: asyncio.StreamReader
                     ) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    try:
        method, target, version = first.decode("latin-1").rstrip("\r\n").split(" ")
    except ValueError:
        raise _BadRequest(400, "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise _BadRequest(505, "only HTTP/1.x")
    headers: list[tuple[str, str]] = []
    size = len(first)
    while True:
        try:
            line = await reader.readline()
        except (asyncio.LimitOverrunError, ValueError):
            raise _BadRequest(431, "header line too long") from None
        size += len(line)
        if size > MAX_HEAD_BYTES or len(headers) >= MAX_HEADERS:
            raise _BadRequest(431, "headers too large")
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line in (b"\r\n", b"\n"):
            break
        name, sep, value = line.decode("utf-8", "replace").partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, "malformed header")
        headers.append((name.lower(), value.strip()))
    return method, target, version, tuple(headers)


async def _drain_body(reader: asyncio.StreamReader,
                      headers: tuple[tuple[str, str], ...]) -> None:
    names = dict(headers)
    if "transfer-encoding" in names:
        raise _BadRequest(411, "send the check without a body or with Content-Length")
    length = names.get("content-length", "0")
    if not length.isdigit():
        raise _BadRequest(400, "bad Content-Length")
    if int(length) > MAX_BODY_BYTES:
        raise _BadRequest(413, "body too large")
    if int(length):
        await reader.readexactly(int(length))


def _keep_alive(version: str, headers: tuple[tuple[str, str], ...]) -> bool:
    connection = dict(headers).get("connection", "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


async def _write(writer: asyncio.StreamWriter, status: int,
                 headers: tuple[tuple[str, str], ...], body: str, *, head_only: bool,
                 keep_alive: bool) -> None:
    data = body.encode()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Status"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body and not any(name == "content-type" for name, _ in headers):
        lines.append("content-type: text/plain; charset=utf-8")
    lines += [f"content-length: {len(data)}",
              f"connection: {'keep-alive' if keep_alive else 'close'}", "", ""]
    writer.write("\r\n".join(lines).encode()
                 + (b"" if head_only else data))
    await writer.drain()

