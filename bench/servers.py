"""The two servers the throughput benchmark compares, each run in its own (spawned) process.

Both bind 127.0.0.1 with ``server_options(settings)``; both register Score through a generic
handler under the real service name. The no-op one deserializes the ScoreRequest and answers a
constant, typical ScoreResponse; the Score one is the real ``App``. A server stops when the
parent sets ``stop``, when the parent process goes away, or after ``max_lifetime_s``.

With ``stall_monitor`` a heartbeat task measures how late the event loop runs it, and a thread
samples the loop thread's stack while it is late, so the report can say which code blocked it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
import time
from collections import Counter
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import grpc

from ringfence.service.api.servicer import SERVICE_NAME
from ringfence.service.app import App, server_options
from ringfence.service.settings import Settings
from ringfence.v1 import risk_pb2 as pb


def pin_to(cpus: set[int] | None) -> None:
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)


def constant_response() -> pb.ScoreResponse:
    """A response shaped like a typical Score answer (two reasons, limit, TTL, times)."""
    response = pb.ScoreResponse(
        risk_score=0.2275, action=pb.ACTION_ALLOW, policy_action=pb.ACTION_ALLOW,
        limit_key="account:acct_000123_5f0c2a9e", limit_scope=pb.LIMIT_SCOPE_ACCOUNT,
        suggested_limit=pb.Limit(requests_per_unit=600, unit=pb.Limit.UNIT_MINUTE),
        reasons=[pb.Reason(code="PREFIX_SHARED_BY_ACCOUNTS", weight=0.0875,
                           message="network prefix used by 3 accounts in 24 h"),
                 pb.Reason(code="ACCOUNT_NEW", weight=0.15, message="account is 0.0 h old")],
        policy_version="default")
    response.decision_ttl.FromSeconds(60)
    response.decided_at.GetCurrentTime()
    return response


class StallMonitor:
    """Event-loop stalls: how long (heartbeat lateness) and where (stack samples)."""

    def __init__(self, tick: float = 0.005, threshold: float = 0.02) -> None:
        self.tick = tick
        self.threshold = threshold
        self.beat = time.monotonic()
        self.stalls: list[float] = []
        self.where: Counter[str] = Counter()  # stack signature → seconds seen stalled
        self._main = threading.get_ident()
        self._done = threading.Event()

    async def heartbeat(self) -> None:
        while True:
            before = time.monotonic()
            self.beat = before
            await asyncio.sleep(self.tick)
            late = time.monotonic() - before - self.tick
            if late > self.threshold:
                self.stalls.append(late)

    def watch(self) -> None:
        previous = time.monotonic()
        while not self._done.wait(self.tick):
            now = time.monotonic()
            if now - self.beat > self.threshold + self.tick:
                frame = sys._current_frames().get(self._main)
                if frame is not None:
                    # Weighted by the time since the last look: this thread itself waits
                    # for the GIL while the loop thread holds it.
                    self.where[_signature(frame)] += now - previous
            previous = now

    def stop(self) -> None:
        self._done.set()

    def report(self) -> dict[str, Any]:
        stalls = sorted(self.stalls)
        return {
            "stalls": len(stalls), "stalled_s": round(sum(stalls), 3),
            "stall_max_ms": round(stalls[-1] * 1e3, 1) if stalls else 0.0,
            "stall_p50_ms": round(stalls[len(stalls) // 2] * 1e3, 1) if stalls else 0.0,
            "stall_samples": [(where, round(seconds * 1e3)) for where, seconds
                              in self.where.most_common(8)],
        }


def _signature(frame: Any) -> str:
    """The loop thread's ringfence frames, outermost first (the outermost two and the
    innermost two), or the innermost frame when no ringfence code is on the stack."""
    chain = []
    innermost = frame
    while frame is not None:
        path = frame.f_code.co_filename
        if "/ringfence/" in path:
            chain.append(f"{path.rsplit('/ringfence/', 1)[1]}:{frame.f_code.co_name}")
        frame = frame.f_back
    if not chain:
        return (f"{innermost.f_code.co_filename.rsplit('/', 1)[-1]}:"
                f"{innermost.f_code.co_name}")
    chain.reverse()
    if len(chain) > 4:
        chain = [*chain[:2], "…", *chain[-2:]]
    return " > ".join(chain)


@contextlib.asynccontextmanager
async def _monitored(enabled: bool, stats: dict[str, Any]) -> Any:
    if not enabled:
        yield
        return
    monitor = StallMonitor()
    task = asyncio.create_task(monitor.heartbeat())
    thread = threading.Thread(target=monitor.watch, name="stall-monitor", daemon=True)
    thread.start()
    try:
        yield
    finally:
        monitor.stop()
        task.cancel()
        thread.join(1)
        stats.update(monitor.report())


async def _until_stopped(stop: Event, parent: int, deadline: float) -> None:
    while not stop.is_set() and os.getppid() == parent and time.monotonic() < deadline:
        await asyncio.sleep(0.25)


async def _serve_noop(settings: Settings, events: Queue, stop: Event, parent: int,
                      max_lifetime_s: float, monitor: bool) -> None:
    response = constant_response()

    async def score(request: pb.ScoreRequest, context: grpc.aio.ServicerContext
                    ) -> pb.ScoreResponse:
        return response

    server = grpc.aio.server(options=server_options(settings))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Score": grpc.unary_unary_rpc_method_handler(
            score, request_deserializer=pb.ScoreRequest.FromString,
            response_serializer=pb.ScoreResponse.SerializeToString),
    }),))
    port = server.add_insecure_port(f"{settings.host}:0")
    await server.start()
    stats: dict[str, Any] = {}
    try:
        events.put(("ready", port))
        async with _monitored(monitor, stats):
            await _until_stopped(stop, parent, time.monotonic() + max_lifetime_s)
    finally:
        await server.stop(0.5)
    events.put(("stopped", stats))


async def _serve_score(settings: Settings, events: Queue, stop: Event, parent: int,
                       max_lifetime_s: float, monitor: bool) -> None:
    app = App(settings)
    port = await app.start()
    stats: dict[str, Any] = {}
    try:
        events.put(("ready", port))
        async with _monitored(monitor, stats):
            await _until_stopped(stop, parent, time.monotonic() + max_lifetime_s)
    finally:
        if app.store is not None:
            stats["accounts"] = len(app.store.accounts.cache)
            stats["devices"] = len(app.store.devices.cache)
            stats["prefixes"] = len(app.store.prefixes.cache)
        stats["events_dropped"] = getattr(app.events, "dropped", 0)
        await app.stop(0.5)
    events_db = settings.data_dir / "events.db"
    if events_db.exists():
        with contextlib.closing(sqlite3.connect(events_db)) as conn:
            stats["events_logged"] = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    events.put(("stopped", stats))


def serve(kind: str, settings: Settings, events: Queue, stop: Event, parent: int,
          max_lifetime_s: float, cpus: set[int] | None, monitor: bool) -> None:
    """Process entry point: ``kind`` is "noop" or "score"."""
    pin_to(cpus)
    run = _serve_noop if kind == "noop" else _serve_score
    try:
        asyncio.run(run(settings, events, stop, parent, max_lifetime_s, monitor))
    except BaseException as exc:
        events.put(("failed", f"{type(exc).__name__}: {exc}"))
        raise
