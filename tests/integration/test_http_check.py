"""The HTTP /v1/check adapter (nginx auth_request, Traefik ForwardAuth) against a real server,
with real HTTP clients over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ringfence.service.adapters.clock import ManualClock
from ringfence.service.app import App
from ringfence.service.core.model import Observation
from ringfence.service.settings import Settings

T0 = 1_789_948_830.0
CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/120.0.0.0 Safari/537.36")
BROWSER = {"User-Agent": CHROME_UA, "Accept": "*/*", "Accept-Encoding": "gzip, deflate, br",
           "Accept-Language": "en-US,en;q=0.9"}
FLEET_POLICY = """
[thresholds]
throttle = 0.3
challenge = 0.5
block = 0.8
[ramps]
device_accounts_full = 4
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start an app with /v1/check on a free port; records the observations it scores."""
    apps: list[App] = []

    async def start_app(policy: str | None = None, **overrides: Any
                        ) -> tuple[App, int, list[Observation]]:
        if policy is not None:
            path = tmp_path / f"policy-{len(apps)}.toml"
            path.write_text(policy)
            overrides["policy_file"] = path
        port = free_port()
        settings = Settings(**{**dict(
            host="127.0.0.1", port=0, data_dir=tmp_path / f"data-{len(apps)}",
            hash_key="00" * 32, persist=False, clustering=False, shutdown_grace_s=0.5,
            checkpoint_interval_s=3600, geoip_reload_interval_s=3600,
            http_check_port=port), **overrides})
        app = App(settings, clock=ManualClock(T0))
        await app.start()
        apps.append(app)
        seen: list[Observation] = []
        assert app.engine is not None
        score = app.engine.score

        def recording(obs: Observation) -> Any:
            seen.append(obs)
            return score(obs)
        app.engine.score = recording  # type: ignore[method-assign]
        return app, port, seen

    yield start_app
    for app in apps:
        if app.server is not None:  # not stopped by the test itself
            await app.stop(0)


async def http(port: int, requests: list[tuple[str, dict[str, str]]]
               ) -> list[tuple[int, dict[str, str], bytes]]:
    """Send requests over one keep-alive connection; returns (status, headers, body) each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for target, headers in requests:
            lines = [f"GET {target} HTTP/1.1", "Host: ringfence"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            await writer.drain()
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            got: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                got[name.lower()] = value.strip()
            body = await reader.readexactly(int(got.get("content-length", "0")))
            answers.append((status, got, body))
    finally:
        writer.close()
        await writer.wait_closed()
    return answers


async def check(port: int, headers: dict[str, str], target: str = "/v1/check"
                ) -> tuple[int, dict[str, str], bytes]:
    return (await http(port, [(target, headers)]))[0]


async def test_allowed_request_gets_200_with_the_ringfence_headers(start):
    _, port, seen = await start()

    def call() -> tuple[int, dict[str, str]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/check",
            headers={**BROWSER, "X-Ringfence-Account": "alice",
                     "X-Forwarded-Uri": "/v1/chat/completions?stream=1",
                     "X-Ja4": "t13d1516h2_8daaf6152771_02713d6af862"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}

    status, headers = await asyncio.to_thread(call)
    assert status == 200
    assert headers["x-ringfence-action"] == "allow"
    assert headers["x-ringfence-limit-key"] == "account:alice"
    assert 0 <= float(headers["x-ringfence-score"]) < 0.5
    obs = seen[-1]
    assert obs.context.endpoint == "/v1/chat/completions"
    assert obs.fingerprint.ja4.startswith("t13d1516h2")
    # the header order the client sent, proxy-added headers left out
    assert obs.fingerprint.header_names[:1] == ("host",)
    assert "x-ringfence-account" not in obs.fingerprint.header_names


async def test_block_tier_gets_429_and_nginx_mode_gets_403(start):
    _, port, _ = await start(FLEET_POLICY)
    answers = [await check(port, {**BROWSER, "X-Ringfence-Account": f"fleet-{i}",
                                  "X-Ringfence-Device-Id": "planted"})
               for i in range(8)]
    status, headers, body = answers[-1]
    assert status == 429
    assert headers["x-ringfence-action"] == "block"
    assert int(headers["retry-after"]) >= 1
    assert "x-ringfence-score" not in headers  # no score oracle for the client
    assert json.loads(body)["error"] == "rate_limited"
    assert answers[0][0] == 200
    nginx = await check(port, {**BROWSER, "X-Ringfence-Account": "fleet-9",
                               "X-Ringfence-Device-Id": "planted"},
                        target="/v1/check?deny_status=403")
    assert nginx[0] == 403 and nginx[1]["x-ringfence-action"] == "block"


async def test_missing_account_is_allowed_and_marked_skipped(start):
    _, port, seen = await start()
    status, headers, _ = await check(port, BROWSER)
    assert status == 200
    assert headers["x-ringfence-skipped"] == "no_account"
    assert seen == []


async def test_forwarded_for_is_believed_only_from_trusted_proxies(start):
    _, untrusted_port, untrusted_seen = await start()
    _, trusted_port, trusted_seen = await start(gateway_trusted_proxies="127.0.0.0/8, 10.0.0.0/8")
    headers = {**BROWSER, "X-Ringfence-Account": "kim",
               "X-Forwarded-For": "192.0.2.1, 203.0.113.50, 10.1.2.3"}
    assert (await check(untrusted_port, headers))[0] == 200
    assert str(untrusted_seen[-1].client_ip) == "127.0.0.1"  # the peer itself
    assert (await check(trusted_port, headers))[0] == 200
    # the nearest hop that is not a trusted proxy (192.0.2.1 could be forged by the client)
    assert str(trusted_seen[-1].client_ip) == "203.0.113.50"


async def test_keep_alive_health_and_unknown_paths(start):
    app, port, _ = await start()
    answers = await http(port, [("/healthz", {}), ("/nope", {}),
                                ("/v1/check", {**BROWSER, "X-Ringfence-Account": "lee"})])
    assert [a[0] for a in answers] == [200, 404, 200]
    app.http_check.stop_serving()
    assert (await check(port, {}, target="/healthz"))[0] == 503


async def test_bad_requests_get_4xx_not_a_crash(start):
    _, port, _ = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/check HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).split()[1] == b"411"
    writer.close()
    await writer.wait_closed()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/check HTTP/1.1\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    await writer.drain()
    first = await reader.readline()
    assert first == b"" or first.split()[1] == b"431"
    writer.close()
    await writer.wait_closed()


async def test_stop_closes_idle_keep_alive_connections(start):
    app, port, _ = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).split()[1] == b"200"
    await asyncio.wait_for(app.stop(0), timeout=5)
    assert await asyncio.wait_for(reader.read(), timeout=5) is not None
    writer.close()


NGINX = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin")
NGINX_WRAPPER = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{  # stands in for the API: echoes what reaches it
    listen 127.0.0.1:{api_port};
    location / {{
      return 200 "action=$http_x_ringfence_action score=$http_x_ringfence_score
key=$http_x_ringfence_limit_key";
    }}
  }}
  {snippet}
}}
"""


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
async def test_the_nginx_snippet_works_with_a_real_nginx(start, tmp_path):
    app, check_port, _ = await start(FLEET_POLICY, gateway_trusted_proxies="127.0.0.1")
    await check(check_port, {**BROWSER, "X-Ringfence-Account": "warm-up"})  # first call is slow
    listen_port, api_port = free_port(), free_port()
    snippet = (Path(__file__).resolve().parents[2] / "deploy/nginx/ringfence.conf").read_text()
    accounts = "key-alice alice;\n" + "".join(f"key-{i} fleet-{i};\n" for i in range(8))
    snippet = (snippet.replace("ringfence:8081", f"127.0.0.1:{check_port}")
               .replace("api:8000", f"127.0.0.1:{api_port}")
               .replace("listen 8080;", f"listen 127.0.0.1:{listen_port};")
               .replace("include /etc/nginx/ringfence-accounts.map;", accounts)
               .replace("200ms", "3s"))  # a loaded test machine, not the production budget
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_WRAPPER.format(tmp=tmp_path, api_port=api_port, snippet=snippet))
    nginx = await asyncio.create_subprocess_exec(NGINX, "-c", str(conf), "-p", str(tmp_path),
                                                 stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", listen_port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        status, _, body = await check(listen_port, {**BROWSER, "X-Api-Key": "key-alice",
                                                    "X-Ringfence-Score": "0.99"})
        assert status == 200
        assert b"key=account:alice" in body
        assert b"score=0." in body and b"score=0.99" not in body  # the forged one overwritten
        # a client naming its own account is not scored as that account
        status, _, body = await check(listen_port, {"X-Ringfence-Account": "mallory"})
        assert status == 200 and b"key=account:mallory" not in body
        answers = [await check(listen_port, {**BROWSER, "X-Api-Key": f"key-{i}",
                                             "X-Ringfence-Device-Id": "planted"})
                   for i in range(8)]
        statuses = [a[0] for a in answers]
        assert statuses[0] == 200 and statuses[-1] == 429
        assert 403 in statuses  # the challenge tier on the way
        assert int(answers[-1][1]["retry-after"]) >= 1
        await app.stop(0)  # ringfence down: nginx fails open
        status, _, _ = await check(listen_port, {"X-Api-Key": "key-alice"})
        assert status == 200
    finally:
        nginx.terminate()
        await nginx.wait()
