"""The decision feed: what it holds, what it publishes (dedupe), expiry, bounds, fan-out."""

from __future__ import annotations

import dataclasses

import pytest

from ringfence.service.core.decision_feed import (
    DecisionFeed,
    DecisionFilter,
    FeedEventKind,
    FeedLimits,
)
from ringfence.service.core.errors import FellBehind, NotReady, Overloaded
from ringfence.service.core.model import (
    Action,
    ClusterRef,
    Decision,
    Label,
    LabelTarget,
    LabelValue,
    Limit,
    LimitScope,
    LimitUnit,
    Reason,
)

T0 = 1_790_000_000.0  # the shared `clock` fixture's start (tests/conftest.py)
TTL = {Action.ALLOW: 30.0, Action.THROTTLE: 300.0, Action.CHALLENGE: 300.0, Action.BLOCK: 3600.0}


def decision(
    account: str = "alice",
    action: Action = Action.THROTTLE,
    *,
    at: float = T0,
    cluster: str | None = None,
    score: float = 0.6,
    ttl: float | None = None,
) -> Decision:
    scope = LimitScope.CLUSTER if cluster else LimitScope.ACCOUNT
    return Decision(
        risk_score=score,
        action=action,
        policy_action=action,
        shadow=False,
        route_to_fallback=False,
        limit_key=f"cluster:{cluster}" if cluster else f"account:{account}",
        limit_scope=scope,
        suggested_limit=Limit(10, LimitUnit.MINUTE),
        ttl_seconds=TTL[action] if ttl is None else ttl,
        reasons=(
            Reason("DEVICE_SHARED_BY_ACCOUNTS", 0.5, "shared"),
            Reason("NEW_ACCOUNT", 0.1, "new"),
        ),
        policy_version="p-1",
        decided_at=at,
        model_version="m-1",
        cluster=ClusterRef(cluster, 12) if cluster else None,
    )


class Recorder:
    """A subscriber that counts its wake-ups."""

    def __init__(self) -> None:
        self.wakeups = 0

    def __call__(self) -> None:
        self.wakeups += 1


@pytest.fixture
def feed(clock) -> DecisionFeed:
    return DecisionFeed(clock)


def kinds(events) -> list[tuple[FeedEventKind, str, Action]]:
    return [(e.kind, e.decision.limit_key, e.decision.action) for e in events]


def test_an_active_decision_carries_what_an_enforcement_point_needs(feed, clock):
    feed.publish(decision("alice", Action.BLOCK))
    [held] = feed.active()
    assert (held.scope, held.limit_key, held.subject_id) == (
        LimitScope.ACCOUNT,
        "account:alice",
        "alice",
    )
    assert held.action is Action.BLOCK
    assert held.expires_at == T0 + 3600
    assert held.reason_codes == ("DEVICE_SHARED_BY_ACCOUNTS", "NEW_ACCOUNT")
    assert (held.model_version, held.policy_version) == ("m-1", "p-1")
    assert held.suggested_limit == Limit(10, LimitUnit.MINUTE)


def test_allowed_and_uncacheable_decisions_are_not_held(feed):
    feed.publish(decision("a", Action.ALLOW))
    feed.publish(decision("b", Action.BLOCK, ttl=0))
    assert feed.active() == []


def test_decisions_expire_by_the_injected_clock(feed, clock):
    feed.publish(decision("a", Action.THROTTLE))  # 300 s
    feed.publish(decision("b", Action.BLOCK))  # 3600 s
    clock.advance(299)
    assert [d.limit_key for d in feed.active()] == ["account:a", "account:b"]
    clock.advance(1)
    assert feed.expire_now() == 1
    assert [d.limit_key for d in feed.active()] == ["account:b"]
    clock.advance(3300)
    assert feed.active() == []


def test_subscribers_get_the_snapshot_then_live_events(feed):
    feed.publish(decision("a", Action.BLOCK))
    wake = Recorder()
    with feed.subscribe(DecisionFilter(), wake) as sub:
        assert [d.limit_key for d in sub.snapshot] == ["account:a"]
        assert sub.drain() == []
        feed.publish(decision("b", Action.THROTTLE))
        feed.publish(decision("c", Action.CHALLENGE))
        assert wake.wakeups == 1  # woken when the queue stopped being empty, not per event
        assert kinds(sub.drain()) == [
            (FeedEventKind.UPSERT, "account:b", Action.THROTTLE),
            (FeedEventKind.UPSERT, "account:c", Action.CHALLENGE),
        ]
    assert feed.subscribers == 0


def test_skipping_the_snapshot(feed):
    feed.publish(decision("a", Action.BLOCK))
    with feed.subscribe(DecisionFilter(), Recorder(), snapshot=False) as sub:
        assert sub.snapshot == ()


def test_an_account_is_published_once_per_change_not_per_request(feed, clock):
    with feed.subscribe(DecisionFilter(), Recorder()) as sub:
        feed.publish(decision("a", Action.THROTTLE))
        for _ in range(50):  # the same verdict again and again, a second apart
            clock.advance(1)
            feed.publish(decision("a", Action.THROTTLE, at=clock.now()))
        assert len(sub.drain()) == 1
        feed.publish(decision("a", Action.BLOCK, at=clock.now()))  # the action changed
        assert kinds(sub.drain()) == [(FeedEventKind.UPSERT, "account:a", Action.BLOCK)]


def test_an_extension_is_published_once_it_is_meaningful(feed, clock):
    with feed.subscribe(DecisionFilter(), Recorder()) as sub:
        feed.publish(decision("a", Action.THROTTLE))
        clock.advance(149)  # pushes the expiry out by less than half the TTL
        feed.publish(decision("a", Action.THROTTLE, at=clock.now()))
        clock.advance(1)  # now by half of it
        feed.publish(decision("a", Action.THROTTLE, at=clock.now()))
        events = sub.drain()
    assert [e.decision.expires_at for e in events] == [T0 + 300, T0 + 450]


def test_an_allowed_account_is_lifted_with_a_delete(feed):
    feed.publish(decision("a", Action.BLOCK))
    with feed.subscribe(DecisionFilter(), Recorder()) as sub:
        feed.publish(decision("a", Action.ALLOW))
        feed.publish(decision("a", Action.ALLOW))  # nothing held any more: no second event
        assert kinds(sub.drain()) == [(FeedEventKind.DELETE, "account:a", Action.BLOCK)]
    assert feed.active() == []


def test_a_cluster_is_published_once_not_per_member_request(feed, clock):
    with feed.subscribe(DecisionFilter(), Recorder()) as sub:
        for i in range(40):  # members with their own scores and actions, one key
            action = (Action.THROTTLE, Action.CHALLENGE, Action.ALLOW)[i % 3]
            feed.publish(decision(f"m{i}", action, cluster="c-7", at=clock.now()))
            clock.advance(0.5)
        events = sub.drain()
    # THROTTLE first, then the stricter CHALLENGE; milder members never downgrade it.
    assert kinds(events) == [
        (FeedEventKind.UPSERT, "cluster:c-7", Action.THROTTLE),
        (FeedEventKind.UPSERT, "cluster:c-7", Action.CHALLENGE),
    ]
    [held] = feed.active()
    assert (held.subject_id, held.action) == ("c-7", Action.CHALLENGE)


def test_a_cluster_held_at_block_restarts_milder_once_it_expires(feed, clock):
    feed.publish(decision("m1", Action.BLOCK, cluster="c-1"))
    feed.publish(decision("m2", Action.THROTTLE, cluster="c-1"))
    assert feed.active()[0].action is Action.BLOCK
    clock.advance(3600)
    feed.publish(decision("m2", Action.THROTTLE, cluster="c-1", at=clock.now()))
    assert feed.active()[0].action is Action.THROTTLE


def test_filters_by_action_and_scope_and_deletes_what_stops_matching(feed):
    blocks = feed.subscribe(DecisionFilter(min_action=Action.BLOCK), Recorder())
    clusters = feed.subscribe(DecisionFilter(scopes=frozenset({LimitScope.CLUSTER})), Recorder())
    feed.publish(decision("a", Action.THROTTLE))
    feed.publish(decision("a", Action.BLOCK))
    feed.publish(decision("a", Action.CHALLENGE))  # an account's verdict may soften
    feed.publish(decision("m", Action.THROTTLE, cluster="c"))
    assert kinds(blocks.drain()) == [
        (FeedEventKind.UPSERT, "account:a", Action.BLOCK),
        (FeedEventKind.DELETE, "account:a", Action.BLOCK),
    ]
    assert kinds(clusters.drain()) == [(FeedEventKind.UPSERT, "cluster:c", Action.THROTTLE)]


def test_lift_drops_a_held_decision_and_tells_subscribers(feed):
    feed.publish(decision("m", Action.BLOCK, cluster="c"))
    with feed.subscribe(DecisionFilter(), Recorder()) as sub:
        assert feed.lift("cluster:c") is True
        assert feed.lift("cluster:c") is False
        assert kinds(sub.drain()) == [(FeedEventKind.DELETE, "cluster:c", Action.BLOCK)]


def test_size_is_bounded_by_evicting_the_decision_expiring_first(clock):
    feed = DecisionFeed(clock, FeedLimits(max_entries=3))
    feed.publish(decision("block", Action.BLOCK))  # expires last
    feed.publish(decision("throttle-1", Action.THROTTLE))  # expires first
    clock.advance(10)
    feed.publish(decision("throttle-2", Action.THROTTLE, at=clock.now()))
    feed.publish(decision("new", Action.CHALLENGE, at=clock.now()))
    assert {d.limit_key for d in feed.active()} == {
        "account:block",
        "account:throttle-2",
        "account:new",
    }
    assert len(feed) == 3 and feed.evicted == 1


def test_extensions_do_not_grow_the_expiry_heap_without_bound(feed, clock):
    for _ in range(1000):
        clock.advance(200)
        feed.publish(decision("a", Action.THROTTLE, at=clock.now()))
    assert len(feed._expiries) <= 2 * len(feed) + 65


def test_a_slow_subscriber_is_cut_off_without_slowing_the_others(clock):
    feed = DecisionFeed(clock, FeedLimits(queue_size=5))
    slow_wake, fast_wake = Recorder(), Recorder()
    slow = feed.subscribe(DecisionFilter(), slow_wake)
    fast = feed.subscribe(DecisionFilter(), fast_wake)
    for i in range(12):
        feed.publish(decision(f"a{i}", Action.BLOCK))
        if i % 4 == 3:
            assert len(fast.drain()) == 4  # this one keeps up
    assert feed.cut_off == 1 and feed.subscribers == 1
    assert slow_wake.wakeups == 2  # once for its first event, once when cut off
    with pytest.raises(FellBehind, match="resync"):
        slow.drain()
    assert len(slow._queue) == 0  # its backlog was dropped with it


def test_subscribers_are_bounded(clock):
    feed = DecisionFeed(clock, FeedLimits(max_subscribers=1))
    first = feed.subscribe(DecisionFilter(), Recorder())
    with pytest.raises(Overloaded):
        feed.subscribe(DecisionFilter(), Recorder())
    first.close()
    feed.subscribe(DecisionFilter(), Recorder())


def test_close_ends_every_subscription_and_refuses_new_ones(feed):
    wake = Recorder()
    sub = feed.subscribe(DecisionFilter(), wake)
    feed.publish(decision("a", Action.BLOCK))
    feed.close()
    assert wake.wakeups == 2
    with pytest.raises(NotReady, match="shutting down"):
        sub.drain()
    with pytest.raises(NotReady):
        feed.subscribe(DecisionFilter(), Recorder())
    feed.publish(decision("b", Action.BLOCK))  # ignored, no error
    feed.close()  # idempotent


def test_subject_id_is_the_key_without_its_scope(feed):
    feed.publish(decision("m", Action.BLOCK, cluster="c-9"))
    feed.publish(dataclasses.replace(decision("acct:with:colons", Action.BLOCK)))
    assert {d.subject_id for d in feed.active()} == {"c-9", "acct:with:colons"}


def test_a_benign_label_lifts_the_account_or_cluster(feed):
    feed.publish(decision("m", Action.BLOCK, cluster="c"))
    feed.publish(decision("a", Action.BLOCK))
    with feed.subscribe(DecisionFilter(), Recorder()) as sub:
        assert not feed.note_label(Label(LabelTarget.CLUSTER, "c", LabelValue.ABUSIVE, T0))
        assert feed.note_label(Label(LabelTarget.CLUSTER, "c", LabelValue.BENIGN, T0))
        assert feed.note_label(Label(LabelTarget.ACCOUNT, "a", LabelValue.BENIGN, T0))
        assert kinds(sub.drain()) == [
            (FeedEventKind.DELETE, "cluster:c", Action.BLOCK),
            (FeedEventKind.DELETE, "account:a", Action.BLOCK),
        ]
