"""The servers the benchmarks compare, each run in its own (spawned) process.

All bind 127.0.0.1 with ``server_options(settings)`` and serve RiskService/Score,
RiskService/ScoreBatch and Envoy's Authorization/Check under their real names:

* ``noop``: deserializes the request and answers a constant, typical response (a ScoreResponse;
  a ScoreBatchResponse of as many of them as there were items; an OK CheckResponse with the
  x-ringfence-* headers and dynamic metadata). The floor of gRPC plus this harness.
* ``fixed``: the baseline a user would otherwise run: a plain per-account fixed-window limiter
  (600 requests a minute per account in an in-process ``MemoryHitCounter``, the counter the
  rate limit service uses) that reads the account, INCRs its window and answers allow or
  throttle in the same response shapes. No fingerprint, profile, event log or clustering.
* ``score``: the real ``App``. With ``prefill`` > 0 it is fed that many synthetic tracked
  accounts through its engine before it answers ready (``prefill`` below).

A server stops when the parent sets ``stop``, when the parent process goes away, or after
``max_lifetime_s``. The noop and fixed servers run without the App's interceptors (metrics,
auth, tracing): they are what a bare limiter would be.

With ``stall_monitor`` a heartbeat task measures how late the event loop runs it, and a thread
samples the loop thread's stack while it is late, so the report can say which code blocked it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import sqlite3
import sys
import threading
import time
from collections import Counter, deque
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from loadgen import pin_to
from workload import prefill_requests

from ringfence.service.adapters.memory_counter import MemoryHitCounter
from ringfence.service.api import envoy
from ringfence.service.api.convert import Limits, to_observation
from ringfence.service.api.gateway import ACTION, LIMIT_KEY, SCORE, Verdict
from ringfence.service.api.servicer import SERVICE_NAME
from ringfence.service.app import App, server_options
from ringfence.service.core.ratelimit import Budget, charge
from ringfence.service.settings import Settings
from ringfence.v1 import risk_pb2 as pb

KINDS = ("noop", "fixed", "score")
MAX_KEPT = 20_000  # timed stalls and stack looks kept per server
FIXED_WINDOW = Budget(requests=600, window_s=60)


def constant_response() -> pb.ScoreResponse:
    """A response shaped like a typical Score answer (two reasons, limit, TTL, times)."""
    response = pb.ScoreResponse(
        risk_score=0.2275,
        action=pb.ACTION_ALLOW,
        policy_action=pb.ACTION_ALLOW,
        limit_key="account:acct_000123_5f0c2a9e",
        limit_scope=pb.LIMIT_SCOPE_ACCOUNT,
        suggested_limit=pb.Limit(requests_per_unit=600, unit=pb.Limit.UNIT_MINUTE),
        reasons=[
            pb.Reason(
                code="PREFIX_SHARED_BY_ACCOUNTS",
                weight=0.0875,
                message="network prefix used by 3 accounts in 24 h",
            ),
            pb.Reason(code="ACCOUNT_NEW", weight=0.15, message="account is 0.0 h old"),
        ],
        policy_version="default",
    )
    response.decision_ttl.FromSeconds(60)
    response.decided_at.GetCurrentTime()
    return response


def constant_check_response() -> external_auth_pb2.CheckResponse:
    """An OK CheckResponse shaped like a typical ringfence answer (headers and metadata)."""
    metadata = {
        "risk_score": 0.2275,
        "action": "allow",
        "policy_action": "allow",
        "shadow": False,
        "limit_key": "account:acct_000123_5f0c2a9e",
        "limit_scope": "account",
        "limit": {"requests_per_unit": 600, "unit": "MINUTE"},
        "hits_addend": 1,
        "decision_ttl_s": 60.0,
        "route_to_fallback": False,
        "reasons": "PREFIX_SHARED_BY_ACCOUNTS,ACCOUNT_NEW",
        "policy_version": "default",
        "degraded": False,
    }
    return envoy.check_response(
        Verdict(
            200,
            headers=(
                (SCORE, "0.2275"),
                (ACTION, "allow"),
                (LIMIT_KEY, "account:acct_000123_5f0c2a9e"),
            ),
            metadata=metadata,
        )
    )


def _header(check: external_auth_pb2.CheckRequest, name: str) -> str:
    http = check.attributes.request.http
    for h in http.header_map.headers:
        if h.key == name:
            return h.raw_value.decode("utf-8", "replace") or h.value
    return http.headers.get(name, "")


class FixedWindowLimiter:
    """Score, ScoreBatch and Check answered by a per-account fixed-window counter only."""

    def __init__(self, budget: Budget = FIXED_WINDOW, max_keys: int = 100_000) -> None:
        self.budget = budget
        self.counter = MemoryHitCounter(max_keys)

    async def _answer(self, account_id: str) -> pb.ScoreResponse:
        key = f"account:{account_id}"
        status = await charge(self.counter, key, self.budget, 1, time.time())
        action = pb.ACTION_THROTTLE if status.over_limit else pb.ACTION_ALLOW
        response = pb.ScoreResponse(
            risk_score=0.0,
            action=action,
            policy_action=action,
            limit_key=key,
            limit_scope=pb.LIMIT_SCOPE_ACCOUNT,
            suggested_limit=pb.Limit(
                requests_per_unit=self.budget.requests, unit=pb.Limit.UNIT_MINUTE
            ),
            policy_version="fixed-window",
        )
        response.decision_ttl.FromSeconds(int(status.reset_in_s) + 1)
        response.decided_at.GetCurrentTime()
        return response

    async def score(
        self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreResponse:
        if not request.account_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "account_id: is required")
        return await self._answer(request.account_id)

    async def score_batch(
        self, request: pb.ScoreBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreBatchResponse:
        response = pb.ScoreBatchResponse()
        for item in request.requests:
            if item.account_id:
                response.results.add(response=await self._answer(item.account_id))
            else:
                response.results.add(error=pb.ItemError(code=3, message="account_id: is required"))
        return response

    async def check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        account = _header(request, "x-ringfence-account").strip()
        if not account:
            return envoy.check_response(Verdict(200, metadata={"skipped": "no_account"}))
        key = f"account:{account}"
        status = await charge(self.counter, key, self.budget, 1, time.time())
        metadata = {
            "limit_key": key,
            "remaining": status.remaining,
            "over_limit": status.over_limit,
        }
        if status.over_limit:
            retry = str(max(1, round(status.reset_in_s)))
            return envoy.check_response(
                Verdict(
                    429,
                    headers=(("retry-after", retry), (ACTION, "throttle")),
                    body='{"error": "rate_limited"}',
                    metadata=metadata,
                )
            )
        return envoy.check_response(
            Verdict(200, headers=((ACTION, "allow"), (LIMIT_KEY, key)), metadata=metadata)
        )


class StallMonitor:
    """Event-loop stalls: how long (heartbeat lateness) and where (stack samples)."""

    def __init__(self, tick: float = 0.005, threshold: float = 0.02) -> None:
        self.tick = tick
        self.threshold = threshold
        self.beat = time.monotonic()
        self.stalls: list[float] = []
        self.where: Counter[str] = Counter()  # stack signature → seconds seen stalled
        # (monotonic time, seconds) of each stall and (time, signature, seconds) of each look
        # while late, the latest MAX_KEPT: the parent picks out a phase's window (the monotonic
        # clock is the same in every process).
        self.timed_stalls: deque[tuple[float, float]] = deque(maxlen=MAX_KEPT)
        self.timed_where: deque[tuple[float, str, float]] = deque(maxlen=MAX_KEPT)
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
                self.timed_stalls.append((before, late))

    def watch(self) -> None:
        previous = time.monotonic()
        while not self._done.wait(self.tick):
            now = time.monotonic()
            if now - self.beat > self.threshold + self.tick:
                frame = sys._current_frames().get(self._main)
                if frame is not None:
                    # Weighted by the time since the last look: this thread itself waits
                    # for the GIL while the loop thread holds it.
                    where = _signature(frame)
                    self.where[where] += now - previous
                    self.timed_where.append((now, where, now - previous))
            previous = now

    def stop(self) -> None:
        self._done.set()

    def report(self) -> dict[str, Any]:
        stalls = sorted(self.stalls)
        return {
            "stalls": len(stalls),
            "stalled_s": round(sum(stalls), 3),
            "stall_max_ms": round(stalls[-1] * 1e3, 1) if stalls else 0.0,
            "stall_p50_ms": round(stalls[len(stalls) // 2] * 1e3, 1) if stalls else 0.0,
            "stall_samples": [
                (where, round(seconds * 1e3)) for where, seconds in self.where.most_common(8)
            ],
            "timed_stalls": list(self.timed_stalls),
            "timed_samples": list(self.timed_where),
        }


def stalls_between(stats: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """The stall figures of ``StallMonitor.report`` for one window of monotonic time."""
    stalls = sorted(late for t, late in stats.get("timed_stalls", ()) if start <= t < end)
    where: Counter[str] = Counter()
    for t, signature, seconds in stats.get("timed_samples", ()):
        if start <= t < end:
            where[signature] += seconds
    return {
        "stalls": len(stalls),
        "stalled_s": round(sum(stalls), 3),
        "stall_max_ms": round(stalls[-1] * 1e3, 1) if stalls else 0.0,
        "stall_samples": [(w, round(sec * 1e3)) for w, sec in where.most_common(6)],
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
        return f"{innermost.f_code.co_filename.rsplit('/', 1)[-1]}:{innermost.f_code.co_name}"
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


def _handlers(score: Any, score_batch: Any, check: Any) -> tuple[grpc.GenericRpcHandler, ...]:
    def unary(method: Any, request: Any, response: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            method,
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )

    return (
        grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Score": unary(score, pb.ScoreRequest, pb.ScoreResponse),
                "ScoreBatch": unary(score_batch, pb.ScoreBatchRequest, pb.ScoreBatchResponse),
            },
        ),
        grpc.method_handlers_generic_handler(
            envoy.AUTHORIZATION_SERVICE,
            {
                "Check": unary(
                    check, external_auth_pb2.CheckRequest, external_auth_pb2.CheckResponse
                ),
            },
        ),
    )


def _noop_handlers() -> tuple[grpc.GenericRpcHandler, ...]:
    response = constant_response()
    check_response = constant_check_response()
    batches: dict[int, pb.ScoreBatchResponse] = {}

    async def score(
        request: pb.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreResponse:
        return response

    async def score_batch(
        request: pb.ScoreBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreBatchResponse:
        n = len(request.requests)
        if n not in batches:
            batches[n] = pb.ScoreBatchResponse(
                results=[pb.ScoreBatchResult(response=response) for _ in range(n)]
            )
        return batches[n]

    async def check(
        request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        return check_response

    return _handlers(score, score_batch, check)


async def _serve_plain(
    kind: str,
    settings: Settings,
    events: Queue,
    stop: Event,
    parent: int,
    max_lifetime_s: float,
    monitor: bool,
) -> None:
    if kind == "noop":
        handlers = _noop_handlers()
    else:
        limiter = FixedWindowLimiter()
        handlers = _handlers(limiter.score, limiter.score_batch, limiter.check)
    server = grpc.aio.server(options=server_options(settings))
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port(f"{settings.host}:0")
    await server.start()
    stats: dict[str, Any] = {}
    try:
        events.put(("ready", port, {}))
        async with _monitored(monitor, stats):
            await _until_stopped(stop, parent, time.monotonic() + max_lifetime_s)
    finally:
        await server.stop(0.5)
    events.put(("stopped", stats))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def settled_rss() -> int:
    """RSS after a full collection and after glibc has returned its free pages, so transient
    buffers (a checkpoint's serialized rows) do not count as held."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_bytes()


async def prefill(app: App, n: int) -> dict[str, Any]:
    """Feed ``n`` synthetic tracked accounts (workload.prefill_requests: one request each,
    own device id and /24) through the running App's real request path minus gRPC:
    ``to_observation`` then ``engine.score``. The loop yields every 256 requests so the App's
    own background jobs (event-log hand-off, checkpoint slices) run as they would under
    traffic. Then everything is checkpointed and flushed, the garbage collected and free heap
    pages returned (``settled_rss``), so the RSS difference is what the tracked accounts
    hold."""
    assert app.engine is not None and app.store is not None
    s = app.settings
    limits = Limits(max_clock_skew_s=s.max_clock_skew_s, max_event_age_s=s.max_event_age_s)
    rss0 = settled_rss()
    t0, cpu0 = time.monotonic(), time.process_time()
    engine, clock = app.engine, app.clock
    for i, request in enumerate(prefill_requests(n)):
        engine.score(to_observation(request, now=clock.now(), limits=limits))
        if i % 256 == 255:
            await asyncio.sleep(0)
    fed = time.monotonic() - t0
    # On the loop thread, blocking it: nothing is served yet, and the App's own checkpoint
    # and event hand-off tasks touch the same dirty sets and pending rows.
    flush = getattr(app.store, "flush", None)
    if flush is not None:
        # Checkpoint everything and wait for the commit. The writer's own flush gives up
        # after a fixed time (30 s); at 1M accounts ~3M rows are queued, so wait again while
        # it keeps draining (bounded: 40 tries).
        for attempt in range(40):
            try:
                flush()
                break
            except TimeoutError:
                if attempt == 39:
                    raise
    else:
        app.store.checkpoint()
    if app.events is not None:
        app.events.flush()
    await asyncio.sleep(1.0)  # the writer threads finish with what they were handed
    rss1 = settled_rss()
    return {
        "prefill_accounts": n,
        "prefill_s": round(time.monotonic() - t0, 2),
        "prefill_feed_s": round(fed, 2),
        "prefill_us_per_account": round(fed / max(1, n) * 1e6, 1),
        "prefill_cpu_s": round(time.process_time() - cpu0, 2),
        "rss_before_prefill": rss0,
        "rss_after_prefill": rss1,
        "bytes_per_account": (rss1 - rss0) / max(1, n),
        "accounts_in_memory": len(app.store.accounts.cache)
        if hasattr(app.store, "accounts")
        else None,
    }


async def _serve_score(
    settings: Settings,
    events: Queue,
    stop: Event,
    parent: int,
    max_lifetime_s: float,
    monitor: bool,
    prefill_accounts: int,
) -> None:
    app = App(settings)
    port = await app.start()
    stats: dict[str, Any] = {}
    try:
        ready = await prefill(app, prefill_accounts) if prefill_accounts else {}
        ready["rss_ready"] = rss_bytes()
        events.put(("ready", port, ready))
        async with _monitored(monitor, stats):
            await _until_stopped(stop, parent, time.monotonic() + max_lifetime_s)
    finally:
        if app.store is not None and hasattr(app.store, "accounts"):
            stats["accounts"] = len(app.store.accounts.cache)
            stats["devices"] = len(app.store.devices.cache)
            stats["prefixes"] = len(app.store.prefixes.cache)
        stats["events_dropped"] = getattr(app.events, "dropped", 0)
        await app.stop(0.5)
    events_db = settings.data_dir / "events.db"
    if settings.persist and events_db.exists():
        with contextlib.closing(sqlite3.connect(events_db)) as conn:
            stats["events_logged"] = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    events.put(("stopped", stats))


def serve(
    kind: str,
    settings: Settings,
    events: Queue,
    stop: Event,
    parent: int,
    max_lifetime_s: float,
    cpus: set[int] | None,
    monitor: bool,
    prefill_accounts: int = 0,
) -> None:
    """Process entry point: ``kind`` is one of KINDS."""
    pin_to(cpus)
    try:
        if kind == "score":
            asyncio.run(
                _serve_score(
                    settings, events, stop, parent, max_lifetime_s, monitor, prefill_accounts
                )
            )
        elif kind in KINDS:
            asyncio.run(_serve_plain(kind, settings, events, stop, parent, max_lifetime_s, monitor))
        else:
            raise ValueError(f"unknown server kind {kind!r}")
    except BaseException as exc:
        events.put(("failed", f"{type(exc).__name__}: {exc}"))
        raise
