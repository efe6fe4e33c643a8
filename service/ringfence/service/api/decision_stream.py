"""StreamDecisions at the edge: the request's filter checked and converted, the feed's decisions
as DecisionEvent messages, and the asyncio loop that follows one subscription with heartbeats."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from ringfence.service.core.decision_feed import (
    ALL_SCOPES,
    ActiveDecision,
    DecisionFeed,
    DecisionFilter,
    FeedEventKind,
)
from ringfence.service.core.errors import FieldViolation, InvalidInput
from ringfence.service.core.model import Action, LimitScope
from ringfence.service.core.ports import Clock
from ringfence.v1 import risk_pb2 as pb

_KINDS = {
    FeedEventKind.UPSERT: pb.DecisionEvent.KIND_UPSERT,
    FeedEventKind.DELETE: pb.DecisionEvent.KIND_DELETE,
}
_ACTIONS = ", ".join(f"ACTION_{a.name}" for a in Action if a is not Action.ALLOW)
_SCOPES = ", ".join(f"LIMIT_SCOPE_{s.name}" for s in LimitScope)


def to_decision_filter(request: pb.StreamDecisionsRequest) -> DecisionFilter:
    """The subscription's filter; raises InvalidInput naming every bad field."""
    violations: list[FieldViolation] = []
    min_action = Action.THROTTLE
    if request.min_action == pb.ACTION_ALLOW:
        violations.append(
            FieldViolation(
                "min_action",
                f"is ACTION_ALLOW; the stream carries only decisions that restrict ({_ACTIONS})",
            )
        )
    elif request.min_action != pb.ACTION_UNSPECIFIED:
        try:
            min_action = Action(request.min_action)
        except ValueError:
            violations.append(
                FieldViolation("min_action", f"is {request.min_action}, not an action ({_ACTIONS})")
            )
    scopes: set[LimitScope] = set()
    for i, number in enumerate(request.scopes):
        try:
            scopes.add(LimitScope(number))
        except ValueError:
            violations.append(
                FieldViolation(f"scopes[{i}]", f"is {number}, not a scope ({_SCOPES})")
            )
    if violations:
        raise InvalidInput(violations)
    return DecisionFilter(min_action=min_action, scopes=frozenset(scopes) if scopes else ALL_SCOPES)


def _timestamp(t: float) -> Timestamp:
    stamp = Timestamp()
    seconds = math.floor(t)
    stamp.seconds = seconds
    stamp.nanos = min(999_999_999, round((t - seconds) * 1e9))
    return stamp


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(max(0, round(seconds * 1e9)))
    return duration


def to_active_decision(d: ActiveDecision, now: float) -> pb.ActiveDecision:
    return pb.ActiveDecision(
        scope=int(d.scope),
        limit_key=d.limit_key,
        subject_id=d.subject_id,
        action=int(d.action),
        risk_score=d.risk_score,
        suggested_limit=pb.Limit(
            requests_per_unit=d.suggested_limit.requests_per_unit, unit=int(d.suggested_limit.unit)
        ),
        ttl=_duration(d.expires_at - now),
        expires_at=_timestamp(d.expires_at),
        decided_at=_timestamp(d.decided_at),
        reason_codes=d.reason_codes,
        model_version=d.model_version,
        policy_version=d.policy_version,
    )


async def follow(
    feed: DecisionFeed, wanted: DecisionFilter, *, snapshot: bool, heartbeat_s: float, clock: Clock
) -> AsyncIterator[pb.DecisionEvent]:
    """The events of one subscription: snapshot, SNAPSHOT_END, then live events, with a
    HEARTBEAT after each ``heartbeat_s`` of silence. Ends by raising what the subscription
    raises (FellBehind, NotReady at shutdown); unsubscribes however it ends."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def notify() -> None:  # called by whichever thread published
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            ready.set()
        else:
            loop.call_soon_threadsafe(ready.set)

    interval = _duration(heartbeat_s)
    with feed.subscribe(wanted, notify, snapshot=snapshot) as subscription:
        for decision in subscription.snapshot:
            now = clock.now()
            if decision.expires_at > now:  # a long snapshot outlives some of its items
                yield pb.DecisionEvent(
                    kind=pb.DecisionEvent.KIND_SNAPSHOT,
                    decision=to_active_decision(decision, now),
                    sent_at=_timestamp(now),
                )
        yield pb.DecisionEvent(
            kind=pb.DecisionEvent.KIND_SNAPSHOT_END,
            sent_at=_timestamp(clock.now()),
            heartbeat_interval=interval,
        )
        while True:
            try:
                async with asyncio.timeout(heartbeat_s):
                    await ready.wait()
            except TimeoutError:
                yield pb.DecisionEvent(
                    kind=pb.DecisionEvent.KIND_HEARTBEAT,
                    sent_at=_timestamp(clock.now()),
                    heartbeat_interval=interval,
                )
                continue
            ready.clear()
            for event in subscription.drain():
                now = clock.now()
                if event.kind is FeedEventKind.UPSERT and event.decision.expires_at <= now:
                    continue  # expired while queued: caches would drop it at once anyway
                yield pb.DecisionEvent(
                    kind=_KINDS[event.kind],
                    decision=to_active_decision(event.decision, now),
                    sent_at=_timestamp(now),
                )
