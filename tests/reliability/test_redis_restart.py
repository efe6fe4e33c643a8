"""Redis restarted under concurrent Score traffic (store=redis): a throwaway redis-server is
SIGKILLed while eight callers have calls in flight, then started again on the same port.

No call fails: answers during the outage come from the local fallback, flagged degraded, and
every caller is back on Redis (not degraded) by itself once it returns. The phases move on
answer counts, not on time. The shared Redis on 6379 is never touched.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from live_services import RedisServer

from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc

CALLERS = 8
MAX_CALLS = 20_000  # per caller: a bound, never reached when recovery works


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_redis_killed_and_restarted_under_concurrent_load(start_app, redis_server):
    app = await start_app(
        store="redis",
        redis_url=redis_server.url,
        redis_prefix="restart",
        redis_probe_interval_s=0.1,
        clustering=False,
    )
    answers = {"up": 0, "down": 0, "back": 0}
    degraded = {"up": 0, "down": 0, "back": 0}
    phase = "up"
    recovered: set[int] = set()
    moved = asyncio.Event()

    async def caller(stub, n: int) -> None:
        for i in range(MAX_CALLS):
            seen = phase
            reply = await stub.Score(
                pb.ScoreRequest(
                    account_id=f"r{n}-{i % 50}",
                    client_ip=f"192.0.2.{n}",
                    fingerprint=pb.DeviceFingerprint(device_id="shared-device"),
                ),
                timeout=5,
            )
            answers[seen] += 1
            degraded[seen] += reply.degraded
            if seen == "back" and not reply.degraded:
                recovered.add(n)
                return
            if answers[seen] % 200 == 0:
                moved.set()

    async def conductor() -> None:
        nonlocal phase
        for target, action in (("up", redis_server.kill), ("down", redis_server.start)):
            while answers[target] < 400:
                moved.clear()
                await moved.wait()
            action()  # SIGKILL mid-traffic / start again on the same port (empty)
            phase = "down" if target == "up" else "back"

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        await asyncio.gather(conductor(), *(caller(stub, n) for n in range(CALLERS)))
    print(f"answers {answers}, degraded {degraded}")
    assert degraded["up"] <= CALLERS  # only calls already in flight when Redis died
    assert degraded["down"] > 0  # the outage was seen, and answered from local state
    assert recovered == set(range(CALLERS))  # every caller back on Redis, no call failed
    assert app.store.breaker.opened >= 1 and not app.store.breaker.is_open
