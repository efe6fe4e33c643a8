"""The decision feed: the decisions enforcement points may cache, held until they expire and
fanned out to subscribers (StreamDecisions is its gRPC face, api/decision_stream.py).

What is held: one `ActiveDecision` per limit key, for decisions stricter than ALLOW with a TTL.
What is published (dedupe, so a busy key is not one event per request):

- ACCOUNT scope: the account's latest decision is its verdict. A new key, a changed action or
  an expiry pushed out by at least ``refresh_fraction`` of the TTL publishes an UPSERT; an
  ALLOW (or uncacheable, TTL 0) decision for a held key lifts it with a DELETE.
- CLUSTER scope: every member's request speaks for the one cluster key, with its own score.
  The strictest action wins while it lasts: a stricter member decision publishes an UPSERT,
  an equal one only extends (published as above), a milder one (ALLOW included) is ignored.
  So a cluster is published once per change, not once per member request; it ends by expiry,
  or with a DELETE when an analyst labels it benign (`note_label`).

Slow subscribers: each has a bounded queue. A subscriber whose queue is full is cut off at
once (its queue dropped, `FellBehind` raised to it on its next `drain`) so that publishing
never waits and memory stays bounded; it reconnects and resyncs from a fresh snapshot.

Bounded size: at most ``max_entries`` keys; a new key over the bound evicts the key that
expires first. Eviction is not published: subscribers keep their copy until it expires.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from ringfence.service.core.errors import FellBehind, NotReady, Overloaded
from ringfence.service.core.model import (
    Action,
    Decision,
    Label,
    LabelTarget,
    LabelValue,
    Limit,
    LimitScope,
)
from ringfence.service.core.ports import Clock

ALL_SCOPES = frozenset(LimitScope)
_SCOPE_PREFIX = {LimitScope.ACCOUNT: "account:", LimitScope.CLUSTER: "cluster:"}


@dataclass(frozen=True, slots=True)
class ActiveDecision:
    """A decision an enforcement point may apply by itself until ``expires_at``."""

    scope: LimitScope
    limit_key: str  # "account:<id>" or "cluster:<id>", as in Decision.limit_key
    subject_id: str  # the account or cluster id alone
    action: Action
    risk_score: float
    suggested_limit: Limit
    decided_at: float
    expires_at: float
    reason_codes: tuple[str, ...]
    model_version: str
    policy_version: str

    @classmethod
    def of(cls, decision: Decision) -> ActiveDecision:
        if decision.limit_scope is LimitScope.CLUSTER and decision.cluster is not None:
            subject = decision.cluster.cluster_id
        else:
            subject = decision.limit_key.removeprefix(_SCOPE_PREFIX[decision.limit_scope])
        return cls(
            scope=decision.limit_scope,
            limit_key=decision.limit_key,
            subject_id=subject,
            action=decision.action,
            risk_score=decision.risk_score,
            suggested_limit=decision.suggested_limit,
            decided_at=decision.decided_at,
            expires_at=decision.decided_at + decision.ttl_seconds,
            reason_codes=tuple(r.code for r in decision.reasons),
            model_version=decision.model_version,
            policy_version=decision.policy_version,
        )


class FeedEventKind(enum.Enum):
    """What a subscriber should do with an event's decision."""

    UPSERT = "upsert"  # cache it under its limit key (replacing what is there)
    DELETE = "delete"  # drop what is cached under its limit key


@dataclass(frozen=True, slots=True)
class FeedEvent:
    kind: FeedEventKind
    decision: ActiveDecision


@dataclass(frozen=True, slots=True)
class DecisionFilter:
    """Which decisions a subscriber wants."""

    min_action: Action = Action.THROTTLE
    scopes: frozenset[LimitScope] = ALL_SCOPES

    def matches(self, decision: ActiveDecision) -> bool:
        return decision.action >= self.min_action and decision.scope in self.scopes


@dataclass(frozen=True, slots=True)
class FeedLimits:
    max_entries: int = 100_000  # keys held; the one expiring first is evicted over this
    queue_size: int = 10_000  # events waiting per subscriber before it is cut off
    max_subscribers: int = 1_000
    # An extension is published once it pushes the expiry out by this share of the TTL.
    refresh_fraction: float = 0.5


class Subscription:
    """One subscriber: the snapshot taken when it joined, then the events since, in order.

    ``notify`` is called (from the publishing thread, so it must not block) when the queue
    stops being empty, when the subscriber is cut off and when the feed closes; the consumer
    then calls `drain`.
    """

    def __init__(
        self,
        feed: DecisionFeed,
        wanted: DecisionFilter,
        snapshot: tuple[ActiveDecision, ...],
        notify: Callable[[], None],
    ) -> None:
        self.filter = wanted
        self.snapshot = snapshot
        self._feed = feed
        self._notify = notify
        self._queue: deque[FeedEvent] = deque()
        self._error: Exception | None = None

    def drain(self) -> list[FeedEvent]:
        """The events queued since the last call (oldest first). Raises `FellBehind` once the
        subscriber has been cut off and `NotReady` once the feed has closed."""
        with self._feed._lock:
            if self._error is not None:
                raise self._error
            events = list(self._queue)
            self._queue.clear()
            return events

    def close(self) -> None:
        self._feed._unsubscribe(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class DecisionFeed:
    """Active decisions by limit key, with expiry by the injected clock and fan-out.

    Thread-safe; `publish` never blocks on a subscriber. See the module docstring for what is
    held and published.
    """

    def __init__(self, clock: Clock, limits: FeedLimits | None = None) -> None:
        self._clock = clock
        self.limits = limits or FeedLimits()
        self._lock = threading.Lock()
        self._entries: dict[str, ActiveDecision] = {}
        self._expiries: list[tuple[float, int, str]] = []  # heap; stale items skipped lazily
        self._seq = itertools.count()
        self._subscribers: set[Subscription] = set()
        self._closed = False
        self.cut_off = 0  # subscribers dropped for falling behind
        self.evicted = 0  # keys evicted to stay within max_entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, decision: Decision) -> None:
        """Take one decision (the servicers' `on_decision` observer)."""
        holdable = decision.action is not Action.ALLOW and decision.ttl_seconds > 0
        # The common case, an allowed account with nothing held, costs one dict lookup.
        if not holdable and decision.limit_key not in self._entries:
            return
        with self._lock:
            if self._closed:
                return
            now = self._clock.now()
            self._expire(now)
            held = self._entries.get(decision.limit_key)
            if not holdable:
                if held is not None and decision.limit_scope is LimitScope.ACCOUNT:
                    del self._entries[decision.limit_key]
                    self._fan_out(held, None)
                return
            expires_at = decision.decided_at + decision.ttl_seconds
            if expires_at <= now:
                return
            if held is None:
                self._make_room()
            elif not self._worth_publishing(held, decision, expires_at):
                return  # the common case for a busy key: decided without building anything
            new = ActiveDecision.of(decision)
            self._entries[new.limit_key] = new
            heapq.heappush(self._expiries, (new.expires_at, next(self._seq), new.limit_key))
            self._compact()
            self._fan_out(held, new)

    def lift(self, limit_key: str) -> bool:
        """Drop a held decision before it expires (e.g. its cluster was labelled benign) and
        tell subscribers; returns whether one was held."""
        with self._lock:
            held = self._entries.pop(limit_key, None)
            if held is not None and not self._closed:
                self._fan_out(held, None)
            return held is not None

    def note_label(self, label: Label) -> bool:
        """A benign label lifts what is held for its account or cluster at once (its next
        decisions are milder anyway); returns whether something was lifted."""
        if label.value is not LabelValue.BENIGN:
            return False
        scope = LimitScope.CLUSTER if label.target is LabelTarget.CLUSTER else LimitScope.ACCOUNT
        return self.lift(_SCOPE_PREFIX[scope] + label.target_id)

    def active(self) -> list[ActiveDecision]:
        """The decisions held now, soonest to expire first."""
        with self._lock:
            self._expire(self._clock.now())
            return sorted(self._entries.values(), key=lambda d: (d.expires_at, d.limit_key))

    def expire_now(self) -> int:
        """Drop the decisions that have expired by the clock; returns how many (a hook: expiry
        otherwise happens lazily on each publish and snapshot)."""
        with self._lock:
            return self._expire(self._clock.now())

    def subscribe(
        self, wanted: DecisionFilter, notify: Callable[[], None], *, snapshot: bool = True
    ) -> Subscription:
        """Join: the snapshot and the registration happen under one lock, so no event falls
        between them. Raises `NotReady` once closed, `Overloaded` at ``max_subscribers``."""
        with self._lock:
            if self._closed:
                raise NotReady("the server is shutting down; reconnect to another replica")
            if len(self._subscribers) >= self.limits.max_subscribers:
                raise Overloaded(
                    f"{self.limits.max_subscribers} decision streams are open "
                    "already; try again later"
                )
            held: Iterable[ActiveDecision] = ()
            if snapshot:
                self._expire(self._clock.now())
                held = (d for d in self._entries.values() if wanted.matches(d))
            subscription = Subscription(self, wanted, tuple(held), notify)
            self._subscribers.add(subscription)
            return subscription

    def close(self) -> None:
        """End every subscription (they raise `NotReady`); later publishes are ignored."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscribers, self._subscribers = self._subscribers, set()
            for subscription in subscribers:
                subscription._queue.clear()
                subscription._error = NotReady(
                    "the server is shutting down; reconnect to another replica"
                )
        for subscription in subscribers:
            subscription._notify()

    # --- under the lock ------------------------------------------------------------------

    def _worth_publishing(
        self, held: ActiveDecision, decision: Decision, expires_at: float
    ) -> bool:
        if decision.action is held.action:
            extension = expires_at - held.expires_at
            return extension >= self.limits.refresh_fraction * decision.ttl_seconds
        if decision.limit_scope is LimitScope.CLUSTER:
            return decision.action > held.action  # the strictest member decision wins
        return True

    def _make_room(self) -> None:
        while len(self._entries) >= self.limits.max_entries and self._expiries:
            expires_at, _, key = heapq.heappop(self._expiries)
            held = self._entries.get(key)
            if held is not None and held.expires_at == expires_at:
                del self._entries[key]
                self.evicted += 1

    def _expire(self, now: float) -> int:
        expired = 0
        while self._expiries and self._expiries[0][0] <= now:
            expires_at, _, key = heapq.heappop(self._expiries)
            held = self._entries.get(key)
            if held is not None and held.expires_at == expires_at:
                del self._entries[key]
                expired += 1
        return expired

    def _compact(self) -> None:
        # Extensions leave stale heap items behind; rebuild before they outnumber the keys.
        if len(self._expiries) > 2 * len(self._entries) + 64:
            self._expiries = [(d.expires_at, next(self._seq), k) for k, d in self._entries.items()]
            heapq.heapify(self._expiries)

    def _fan_out(self, old: ActiveDecision | None, new: ActiveDecision | None) -> None:
        for subscription in list(self._subscribers):
            wanted = subscription.filter
            if new is not None and wanted.matches(new):
                event = FeedEvent(FeedEventKind.UPSERT, new)
            elif old is not None and wanted.matches(old):
                # Lifted, or changed into something this subscriber does not want.
                event = FeedEvent(FeedEventKind.DELETE, old)
            else:
                continue
            queue = subscription._queue
            if len(queue) >= self.limits.queue_size:
                self._cut_off(subscription)
                continue
            queue.append(event)
            if len(queue) == 1:
                subscription._notify()

    def _cut_off(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        subscription._queue.clear()
        subscription._error = FellBehind(
            f"more than {self.limits.queue_size} decision events were waiting for this "
            "stream; reconnect and resync from a new snapshot"
        )
        self.cut_off += 1
        subscription._notify()

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)
