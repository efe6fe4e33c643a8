"""Redis failing under a running service: answers keep coming within the deadline from local
state, flagged degraded, and the service goes back to shared state by itself.

The machine's shared Redis is never touched: each test runs its own throwaway redis-server
(no persistence) and kills it with SIGKILL, or freezes it with SIGSTOP (a hung server: the
kernel still accepts connections, nothing answers)."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from pathlib import Path

import pytest
from live_services import RedisServer

from ringfence.client import AsyncClient, Fingerprint, ScoreRequest
from ringfence.service.adapters.embedded_store import EmbeddedProfileStore
from ringfence.service.adapters.redis_store import RedisProfileStore, connect
from ringfence.service.adapters.resilient import CircuitBreaker, ResilientProfileStore
from ringfence.service.core.profiles import AccountEvent

T0 = 1_790_000_000.0
TIMEOUT_S = 0.05  # the service default (redis_timeout_s)


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)  # in case a test left it stopped
        server.kill()


def event(t: float, account_token: int) -> AccountEvent:
    return AccountEvent(t=t, account_token=account_token, ip_token=1, prefix_token=7,
                        asn=64500, country_token=3, device_token=11, stack_token=5,
                        content_signature=None, anonymized=False, task=1, input_tokens=1,
                        output_tokens=1)


def device_reason(decision) -> str:
    return next(r.message for r in decision.reasons if r.code == "DEVICE_SHARED_BY_ACCOUNTS")


def request(account: str, device: str = "planted-device") -> ScoreRequest:
    return ScoreRequest(account_id=account, client_ip="203.0.113.9",
                        fingerprint=Fingerprint(device_id=device, user_agent="curl/8.0"))


async def test_killed_redis_degrades_without_errors_and_recovers(start_app, redis_server):
    app = await start_app(store="redis", redis_url=redis_server.url, redis_prefix="faults",
                          redis_probe_interval_s=0.2, clustering=False)
    latencies: dict[str, list[float]] = {"up": [], "down": [], "back": []}

    async def score(client: AsyncClient, phase: str, account: str):
        start = time.perf_counter()
        decision = await client.score(request(account))
        latencies[phase].append(time.perf_counter() - start)
        return decision

    async with AsyncClient(f"127.0.0.1:{app.port}", timeout=2) as client:
        for i in range(20):
            before = await score(client, "up", f"fleet-{i}")
        assert not before.degraded
        assert "used by 20 accounts" in device_reason(before)

        redis_server.kill()  # SIGKILL mid-traffic; the server had no persistence
        down_since = time.monotonic()
        during = [await score(client, "down", f"fleet-{20 + i}") for i in range(50)]
        down_for = time.monotonic() - down_since
        assert all(d.degraded for d in during)
        # The local fallback mirrored what this process saw, so the fleet stays visible.
        assert "used by 70 accounts" in device_reason(during[-1])
        assert app.store.breaker.opened == 1
        # One fast failure per probe interval, not one per request.
        assert app.store.breaker.failures <= 2 + down_for / 0.2

        redis_server.start()  # same port, empty (no persistence)
        deadline = time.monotonic() + 10
        while True:
            after = await score(client, "back", "fleet-late")
            if not after.degraded:
                break
            assert time.monotonic() < deadline, "did not go back to Redis"
            await asyncio.sleep(0.05)
    assert app.store.breaker.is_open is False
    for phase, values in latencies.items():
        print(f"{phase}: n={len(values)} median={statistics.median(values) * 1000:.2f} ms "
              f"max={max(values) * 1000:.2f} ms")
    assert max(latencies["down"]) < 0.5  # never near the caller's deadline
    assert statistics.median(latencies["down"]) < 0.05


async def test_service_starts_and_answers_while_redis_is_down(start_app, tmp_path):
    server = RedisServer(tmp_path / "never-started")  # a free port nothing listens on
    app = await start_app(store="redis", redis_url=server.url, clustering=False)
    async with AsyncClient(f"127.0.0.1:{app.port}", timeout=2) as client:
        decisions = [await client.score(request(f"a{i}")) for i in range(5)]
    assert all(d.degraded for d in decisions)
    assert app.store.breaker.failures == 1  # later calls did not even try


def test_hung_redis_costs_one_timeout_per_probe_interval(redis_server):
    now = [0.0]  # the breaker's clock, moved by hand: no sleeping for probe intervals
    breaker = CircuitBreaker(probe_interval_s=1.0, clock=lambda: now[0])
    store = ResilientProfileStore(
        RedisProfileStore(connect(redis_server.url, timeout_s=TIMEOUT_S), prefix="hung"),
        EmbeddedProfileStore(None), breaker=breaker, slow_s=TIMEOUT_S)
    try:
        for i in range(10):
            assert not store.record(f"a{i}", "dev", "pfx", event(T0 + i, i), None).degraded

        os.kill(redis_server.proc.pid, signal.SIGSTOP)  # hung: accepts, never answers
        timings = []
        for i in range(10, 110):
            start = time.perf_counter()
            link = store.record(f"a{i}", "dev", "pfx", event(T0 + i, i), None)
            timings.append(time.perf_counter() - start)
            assert link.degraded and link.device_accounts == i + 1
        assert breaker.failures == 1
        rest = timings[1:]
        print(f"hung: first {timings[0] * 1000:.1f} ms, then median "
              f"{statistics.median(rest) * 1000:.2f} ms, max {max(rest) * 1000:.2f} ms")
        assert timings[0] < 4 * TIMEOUT_S  # the one request that found out, bounded
        assert max(timings[1:]) < 0.02  # everyone after it: local, no network wait

        now[0] += 1.0  # one probe interval later: exactly one more try
        store.record("probe", "dev", "pfx", event(T0 + 200, 200), None)
        store.record("next", "dev", "pfx", event(T0 + 201, 201), None)
        assert breaker.failures == 2

        os.kill(redis_server.proc.pid, signal.SIGCONT)
        now[0] += 1.0
        # The first call after a hang may read the reply to a command that timed out: the
        # client drops such a connection, so allow one more interval for a clean probe.
        for _ in range(3):
            link = store.record("back", "dev", "pfx", event(T0 + 300, 300), None)
            if not link.degraded:
                break
            now[0] += 1.0
        assert not link.degraded and not breaker.is_open
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        store.close()


def test_consistently_slow_redis_is_treated_as_down(redis_server):
    ticks = iter(i * 0.06 for i in range(10_000))  # every call looks 60 ms long
    clock = lambda: next(ticks)  # noqa: E731
    store = ResilientProfileStore(
        RedisProfileStore(connect(redis_server.url, timeout_s=1.0), prefix="slow"),
        EmbeddedProfileStore(None), breaker=CircuitBreaker(1000.0, clock=clock),
        slow_s=TIMEOUT_S, slow_calls=3, clock=clock)
    try:
        answers = [store.record(f"a{i}", "d", "p", event(T0 + i, i), None) for i in range(5)]
        # Slow answers are still used; the third slow one in a row opens the breaker.
        assert [a.degraded for a in answers] == [False, False, False, True, True]
        assert store.breaker.failures == 1
    finally:
        store.close()
