"""DecisionCache and AsyncDecisionCache against FakeRiskServer: warm from the snapshot, live
updates, expiry, reconnect and resync, filters; and FakeRiskServer's decision stream itself."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest

from ringfence.client import (
    Action,
    ActiveDecision,
    AsyncClient,
    AsyncDecisionCache,
    Client,
    DecisionCache,
    Limit,
    LimitScope,
    LimitUnit,
)
from ringfence.client.testing import FakeRiskServer
from ringfence.v1 import risk_pb2, risk_pb2_grpc

WAIT = 5.0  # bound of every wait; the hooks return as soon as the condition holds
FAST_RECONNECT = (0.01, 0.05)


class FakeClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def block(key: str, minutes: float = 5, **fields: object) -> ActiveDecision:
    return ActiveDecision(
        limit_key=key, action=Action.BLOCK, ttl=timedelta(minutes=minutes), **fields
    )


@pytest.fixture
def client(fake: FakeRiskServer) -> Iterator[Client]:
    with Client(fake.target, timeout=WAIT) as client:
        yield client


def cache_for(client: Client, **options: object) -> DecisionCache:
    options.setdefault("reconnect_backoff", FAST_RECONNECT)
    options.setdefault("rng", random.Random(7))
    return DecisionCache(client, **options)  # type: ignore[arg-type]


def test_warms_from_the_snapshot_then_applies_live_updates(fake, client) -> None:
    fake.push_decision(block("account:mallory", risk_score=0.97, reason_codes=("NEW_ACCOUNT",)))
    fake.push_decision(
        ActiveDecision(
            limit_key="cluster:c-7",
            action=Action.THROTTLE,
            suggested_limit=Limit(10, LimitUnit.MINUTE),
            ttl=timedelta(minutes=5),
        )
    )
    with cache_for(client) as cache:
        assert cache.wait_synced(WAIT)
        assert cache.connected and len(cache) == 2
        mallory = cache.lookup(account_id="mallory")
        assert mallory is not None
        assert (mallory.action, mallory.scope, mallory.subject_id) == (
            Action.BLOCK,
            LimitScope.ACCOUNT,
            "mallory",
        )
        assert (mallory.risk_score, mallory.reason_codes) == (0.97, ("NEW_ACCOUNT",))
        assert cache.lookup(cluster_id="c-7").suggested_limit == Limit(10, LimitUnit.MINUTE)
        assert cache.lookup(account_id="alice") is None

        fake.push_decision(block("account:trudy"))
        fake.lift_decision("account:mallory")
        assert cache.wait_for_events(2, WAIT)
        assert cache.lookup(account_id="trudy").action is Action.BLOCK
        assert cache.lookup(account_id="mallory") is None
    assert fake.calls == ["StreamDecisions"]


def test_the_strictest_of_account_and_cluster_wins(fake, client) -> None:
    fake.push_decision(ActiveDecision("account:bob", Action.THROTTLE, ttl=timedelta(minutes=1)))
    fake.push_decision(block("cluster:c-1"))
    with cache_for(client) as cache:
        assert cache.wait_synced(WAIT)
        assert cache.lookup(account_id="bob").action is Action.THROTTLE
        assert cache.lookup(account_id="bob", cluster_id="c-1").action is Action.BLOCK
        assert cache.lookup(limit_key="cluster:c-1").subject_id == "c-1"
        with pytest.raises(TypeError):
            cache.lookup()


def test_entries_expire_by_their_ttl_on_the_local_clock(fake, client) -> None:
    clock = FakeClock()
    fake.push_decision(block("account:short", minutes=1))
    fake.push_decision(block("account:long", minutes=60))
    with cache_for(client, clock=clock) as cache:
        assert cache.wait_synced(WAIT)
        clock.advance(59)
        assert cache.lookup(account_id="short") is not None
        clock.advance(2)
        assert cache.lookup(account_id="short") is None
        assert [d.limit_key for d in cache.decisions()] == ["account:long"]
        clock.advance(3600)
        assert len(cache) == 0


def test_reconnects_after_a_server_restart_and_resyncs_from_the_snapshot(fake, client) -> None:
    fake.push_decision(block("account:lifted-while-down"))
    fake.push_decision(block("account:kept"))
    with cache_for(client) as cache:
        assert cache.wait_synced(WAIT)
        fake.stop()
        # While the service is away the cache keeps answering from what it has.
        assert cache.lookup(account_id="lifted-while-down") is not None
        fake.lift_decision("account:lifted-while-down")
        fake.push_decision(block("account:new-while-down"))
        fake.start()  # the same port
        assert cache.wait_synced(WAIT, syncs=2)
        assert {d.limit_key for d in cache.decisions()} == {
            "account:kept",
            "account:new-while-down",
        }
        fake.push_decision(block("account:after"))
        assert cache.wait_for_events(1, WAIT)
        assert cache.lookup(account_id="after") is not None


def test_a_stream_ended_with_an_error_is_reopened(fake, client) -> None:
    with cache_for(client) as cache:
        assert cache.wait_synced(WAIT)
        fake.end_streams(grpc.StatusCode.ABORTED)  # what a reader that fell behind gets
        assert cache.wait_synced(WAIT, syncs=2)
        assert cache.last_error is not None
        assert cache.last_error.code() is grpc.StatusCode.ABORTED
    assert fake.calls == ["StreamDecisions", "StreamDecisions"]


def test_a_silent_stream_is_treated_as_dead(fake, client) -> None:
    with cache_for(client) as cache:
        assert cache.wait_synced(WAIT)
        assert cache._check_liveness() is True
        # Nothing heard for more than three heartbeat intervals (5 s at the fake): reopen.
        assert cache._check_liveness(now=time.monotonic() + 16) is False
        assert cache.wait_synced(WAIT, syncs=2)


def test_asks_for_its_filter_and_sends_the_clients_metadata(fake) -> None:
    fake.push_decision(ActiveDecision("account:t", Action.THROTTLE, ttl=timedelta(minutes=1)))
    fake.push_decision(block("cluster:c"))
    fake.push_decision(block("account:b"))
    with (
        Client(fake.target, metadata=[("authorization", "Bearer t0k3n")]) as client,
        cache_for(client, min_action=Action.BLOCK, scopes=[LimitScope.ACCOUNT]) as cache,
    ):
        assert cache.wait_synced(WAIT)
        assert [d.limit_key for d in cache.decisions()] == ["account:b"]
    assert fake.metadata[0]["authorization"] == "Bearer t0k3n"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_action": Action.ALLOW}, "min_action"),
        ({"scopes": [LimitScope.UNSPECIFIED]}, "scopes"),
        ({"max_entries": 0}, "max_entries"),
        ({"reconnect_backoff": (1.0, 0.5)}, "reconnect_backoff"),
    ],
)
def test_bad_options_are_refused_naming_the_option(client, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        DecisionCache(client, **options)


def test_the_cache_is_bounded(fake, client) -> None:
    for i in range(5):
        fake.push_decision(block(f"account:a{i}", minutes=10 + i))
    with cache_for(client, max_entries=3) as cache:
        assert cache.wait_synced(WAIT)
        assert len(cache) == 3


async def test_the_async_cache_follows_the_same_stream(fake) -> None:
    fake.push_decision(block("account:mallory"))
    async with (
        AsyncClient(fake.target, timeout=WAIT) as client,
        AsyncDecisionCache(client, reconnect_backoff=FAST_RECONNECT) as cache,
    ):
        assert await cache.wait_synced(WAIT)
        assert cache.lookup(account_id="mallory").action is Action.BLOCK
        fake.lift_decision("account:mallory")
        assert await cache.wait_for_events(1, WAIT)
        assert cache.lookup(account_id="mallory") is None
        fake.end_streams()
        assert await cache.wait_synced(WAIT, syncs=2)
        assert cache.connected


async def test_async_wait_times_out_with_false(fake) -> None:
    async with (
        AsyncClient(fake.target, timeout=WAIT) as client,
        AsyncDecisionCache(client) as cache,
    ):
        assert await cache.wait_synced(WAIT)
        assert await cache.wait_for_events(1, timeout=0.01) is False


# --- FakeRiskServer's decision stream ----------------------------------------------------------


def test_fake_stream_sends_snapshot_end_heartbeats_and_events() -> None:
    with FakeRiskServer(heartbeat_interval=0.05) as fake:
        fake.push_decision(block("account:m"))
        with grpc.insecure_channel(fake.target) as channel:
            call = risk_pb2_grpc.RiskServiceStub(channel).StreamDecisions(
                risk_pb2.StreamDecisionsRequest(), timeout=WAIT
            )
            kinds = [next(call).kind for _ in range(3)]
            assert kinds == [
                risk_pb2.DecisionEvent.KIND_SNAPSHOT,
                risk_pb2.DecisionEvent.KIND_SNAPSHOT_END,
                risk_pb2.DecisionEvent.KIND_HEARTBEAT,
            ]
            assert fake.wait_for_subscribers(1, WAIT)
            call.cancel()


def test_fake_stream_refuses_a_bad_filter_like_the_service(fake) -> None:
    with grpc.insecure_channel(fake.target) as channel:
        call = risk_pb2_grpc.RiskServiceStub(channel).StreamDecisions(
            risk_pb2.StreamDecisionsRequest(min_action=risk_pb2.ACTION_ALLOW), timeout=WAIT
        )
        with pytest.raises(grpc.RpcError) as err:
            next(call)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "min_action" in err.value.details()


def test_push_needs_a_positive_ttl(fake) -> None:
    with pytest.raises(ValueError, match="ttl"):
        fake.push_decision(ActiveDecision("account:x", Action.BLOCK))
