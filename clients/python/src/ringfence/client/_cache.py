"""`DecisionCache` and `AsyncDecisionCache`: a local copy of the service's active decisions, kept
warm by `StreamDecisions`, so an enforcement point can act on a known abuser without a call.

Both follow one stream: the snapshot of the decisions active now replaces the cache in one go
when it is complete, then each UPSERT or DELETE is applied as it comes. Entries expire by their
TTL on this process's monotonic clock (server clock skew does not matter). When the stream
ends or goes silent for `DEAD_AFTER_HEARTBEATS` heartbeat intervals, the cache reconnects with
a jittered exponential backoff and resyncs from a fresh snapshot; meanwhile it keeps answering
from what it has until each entry's TTL runs out.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import grpc

from ringfence.client import _convert
from ringfence.client.types import Action, ActiveDecision, LimitScope
from ringfence.v1 import risk_pb2

if TYPE_CHECKING:
    from ringfence.client._async import AsyncClient
    from ringfence.client._sync import Client

_log = logging.getLogger("ringfence.client")

DEAD_AFTER_HEARTBEATS = 3
"""A stream silent for this many heartbeat intervals is treated as dead and reopened."""
_DEFAULT_HEARTBEAT_S = 15.0  # until the service says its own (on SNAPSHOT_END)
_Event = risk_pb2.DecisionEvent


class _Outcome(enum.Enum):
    SYNCED = "synced"  # a snapshot was applied
    APPLIED = "applied"  # a live event was applied


class _Table:
    """Active decisions by limit key, expiring on a monotonic clock; bounded; thread-safe."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[ActiveDecision, float]] = {}
        self._expiries: list[tuple[float, int, str]] = []  # heap; stale items skipped lazily
        self._seq = itertools.count()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    def replace(self, decisions: Iterable[ActiveDecision]) -> None:
        """Swap in a complete snapshot at once: lock-free readers see the old entries or the
        new ones, never an empty cache in between."""
        fresh = _Table(self._max_entries, self._clock)
        now = self._clock()
        for decision in decisions:
            fresh._put(decision, now)
        with self._lock:
            self._entries, self._expiries = fresh._entries, fresh._expiries

    def upsert(self, decision: ActiveDecision) -> None:
        with self._lock:
            self._put(decision, self._clock())

    def delete(self, limit_key: str) -> None:
        with self._lock:
            self._entries.pop(limit_key, None)

    def get(self, limit_key: str) -> ActiveDecision | None:
        entry = self._entries.get(limit_key)  # lock-free read: one dict lookup
        if entry is None:
            return None
        decision, expires = entry
        if expires <= self._clock():
            with self._lock:
                if self._entries.get(limit_key) is entry:
                    del self._entries[limit_key]
            return None
        return decision

    def values(self) -> list[ActiveDecision]:
        with self._lock:
            self._expire(self._clock())
            return [decision for decision, _ in self._entries.values()]

    def _put(self, decision: ActiveDecision, now: float) -> None:
        ttl = decision.ttl.total_seconds()
        if ttl <= 0:
            self._entries.pop(decision.limit_key, None)
            return
        if decision.limit_key not in self._entries:
            self._expire(now)
            while len(self._entries) >= self._max_entries:  # evict the soonest to expire
                expires, _, key = heapq.heappop(self._expiries)
                entry = self._entries.get(key)
                if entry is not None and entry[1] == expires:
                    del self._entries[key]
        expires = now + ttl
        self._entries[decision.limit_key] = (decision, expires)
        heapq.heappush(self._expiries, (expires, next(self._seq), decision.limit_key))
        if len(self._expiries) > 2 * len(self._entries) + 64:
            self._expiries = [(e, next(self._seq), k) for k, (_, e) in self._entries.items()]
            heapq.heapify(self._expiries)

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            expires, _, key = heapq.heappop(self._expiries)
            entry = self._entries.get(key)
            if entry is not None and entry[1] == expires:
                del self._entries[key]


class _Stream:
    """What a cache does with the messages of one stream."""

    def __init__(self, table: _Table) -> None:
        self._table = table
        self._snapshot: list[ActiveDecision] | None = []
        self.heartbeat_s = _DEFAULT_HEARTBEAT_S

    def apply(self, message: risk_pb2.DecisionEvent) -> _Outcome | None:
        kind = message.kind
        if kind == _Event.KIND_SNAPSHOT and self._snapshot is not None:
            self._snapshot.append(_convert.active_decision_from_proto(message.decision))
        elif kind == _Event.KIND_SNAPSHOT_END:
            self._note_heartbeat(message)
            self._table.replace(self._snapshot or ())
            self._snapshot = None
            return _Outcome.SYNCED
        elif kind == _Event.KIND_UPSERT:
            self._table.upsert(_convert.active_decision_from_proto(message.decision))
            return _Outcome.APPLIED
        elif kind == _Event.KIND_DELETE:
            self._table.delete(message.decision.limit_key)
            return _Outcome.APPLIED
        elif kind == _Event.KIND_HEARTBEAT:
            self._note_heartbeat(message)
        return None  # also a kind this client does not know yet (a newer service)

    def _note_heartbeat(self, message: risk_pb2.DecisionEvent) -> None:
        if message.HasField("heartbeat_interval"):
            seconds = message.heartbeat_interval.ToTimedelta().total_seconds()
            if seconds > 0:
                self.heartbeat_s = seconds


class _Settings:
    """The options both caches take, checked once."""

    def __init__(
        self,
        min_action: Action,
        scopes: Iterable[LimitScope],
        max_entries: int,
        reconnect_backoff: tuple[float, float],
        clock: Callable[[], float],
        rng: random.Random | None,
    ) -> None:
        if min_action not in (Action.THROTTLE, Action.CHALLENGE, Action.BLOCK):
            raise ValueError(
                f"min_action: must be THROTTLE, CHALLENGE or BLOCK, got {min_action!r}"
            )
        self.scopes = tuple(scopes)
        for scope in self.scopes:
            if scope not in (LimitScope.ACCOUNT, LimitScope.CLUSTER):
                raise ValueError(f"scopes: must hold ACCOUNT or CLUSTER, got {scope!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries: must be >= 1, got {max_entries}")
        initial, most = reconnect_backoff
        if not 0 < initial <= most:
            raise ValueError(
                f"reconnect_backoff: must be (initial, max) with 0 < initial <= max, "
                f"got {reconnect_backoff!r}"
            )
        self.min_action = min_action
        self.max_entries = max_entries
        self.backoff = (initial, most)
        self.clock = clock
        self.rng = rng or random.Random()
        self.request = _convert.stream_request_to_proto(min_action, self.scopes, snapshot=True)

    def pause(self, failures: int) -> float:
        """Seconds before reconnect attempt `failures` (1, 2, ...): equal jitter."""
        initial, most = self.backoff
        cap = min(most, initial * 2 ** min(failures - 1, 30))
        return self.rng.uniform(cap / 2, cap)


def _lookup(
    table: _Table, account_id: str | None, cluster_id: str | None, limit_key: str | None
) -> ActiveDecision | None:
    keys = [
        *([f"account:{account_id}"] if account_id else []),
        *([f"cluster:{cluster_id}"] if cluster_id else []),
        *([limit_key] if limit_key else []),
    ]
    if not keys:
        raise TypeError("lookup: pass account_id, cluster_id or limit_key")
    found = [d for d in (table.get(key) for key in keys) if d is not None]
    # An account in a blocked cluster is blocked: the strictest decision wins.
    return max(found, key=lambda d: d.action, default=None)


class DecisionCache:
    """The active decisions of a ringfence service, kept warm in a background thread.

    Use it as a context manager (or call `start()` and `close()`)::

        with Client(target) as client, DecisionCache(client) as cache:
            cache.wait_synced(timeout=5)
            decision = cache.lookup(account_id="mallory", cluster_id=known_cluster)
            if decision is not None and decision.action is Action.BLOCK:
                reject()

    `lookup` never blocks on the network: it reads what the stream has delivered. Thread-safe.
    `clock` (monotonic seconds) times entry expiry; inject one in tests.
    """

    def __init__(
        self,
        client: Client,
        *,
        min_action: Action = Action.THROTTLE,
        scopes: Iterable[LimitScope] = (),
        max_entries: int = 100_000,
        reconnect_backoff: tuple[float, float] = (0.2, 10.0),
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = _Settings(min_action, scopes, max_entries, reconnect_backoff, clock, rng)
        self._client = client
        self._table = _Table(max_entries, clock)
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._call: Any = None
        self._stream: _Stream | None = None
        self._last_message = 0.0
        self._syncs = 0
        self._events = 0
        self._connected = False
        self.last_error: grpc.RpcError | None = None
        """Why the last stream ended, if it failed (e.g. PERMISSION_DENIED); None otherwise."""

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start following the stream (in daemon threads). Returns at once."""
        if self._threads:
            raise RuntimeError("DecisionCache is already started")
        for target, name in ((self._run, "stream"), (self._watch, "watchdog")):
            thread = threading.Thread(target=target, name=f"ringfence-cache-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop following the stream; the entries stay readable until they expire."""
        self._closed.set()
        with self._cond:
            call = self._call
            self._cond.notify_all()
        if call is not None:
            call.cancel()
        for thread in self._threads:
            thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- reading ---------------------------------------------------------------------------------

    def lookup(
        self,
        *,
        account_id: str | None = None,
        cluster_id: str | None = None,
        limit_key: str | None = None,
    ) -> ActiveDecision | None:
        """The active decision for the account, its cluster or a limit key (the strictest when
        several are active), or None. The cluster id comes from `Decision.cluster`."""
        return _lookup(self._table, account_id, cluster_id, limit_key)

    def decisions(self) -> list[ActiveDecision]:
        """Every decision active now (a copy)."""
        return self._table.values()

    def __len__(self) -> int:
        return len(self._table)

    @property
    def connected(self) -> bool:
        """True while a stream is open and its snapshot has been applied."""
        return self._connected

    @property
    def syncs(self) -> int:
        """How many snapshots have been applied (1 after the first connect, +1 per resync)."""
        return self._syncs

    @property
    def events_applied(self) -> int:
        """How many live UPSERT/DELETE events have been applied."""
        return self._events

    def wait_synced(self, timeout: float | None = None, *, syncs: int = 1) -> bool:
        """Block until `syncs` snapshots have been applied; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._syncs >= syncs, timeout)

    def wait_for_events(self, count: int, timeout: float | None = None) -> bool:
        """Block until `events_applied` reaches `count`; False on timeout (a test hook)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._events >= count, timeout)

    # --- the stream ------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._closed.is_set():
            stream = _Stream(self._table)
            call = self._client._stub.StreamDecisions(
                self._settings.request,
                metadata=self._client._policy.metadata,
                wait_for_ready=True,  # while the service is down, wait for it to come back
            )
            with self._cond:
                self._call, self._stream = call, stream
                self._last_message = time.monotonic()
            if self._closed.is_set():
                call.cancel()
                break
            try:
                for message in call:
                    self._last_message = time.monotonic()
                    outcome = stream.apply(message)
                    if outcome is not None:
                        self._count(outcome)
                        if outcome is _Outcome.SYNCED:
                            failures = 0
                self.last_error = None
            except grpc.RpcError as exc:
                if not self._closed.is_set():
                    self.last_error = exc
                    _log.warning("decision stream ended (%s); reconnecting", _code_name(exc))
            finally:
                with self._cond:
                    self._call, self._stream, self._connected = None, None, False
            failures += 1
            self._closed.wait(self._settings.pause(failures))

    def _count(self, outcome: _Outcome) -> None:
        with self._cond:
            if outcome is _Outcome.SYNCED:
                self._syncs += 1
                self._connected = True
            else:
                self._events += 1
            self._cond.notify_all()

    def _watch(self) -> None:
        while not self._closed.wait(self._watch_interval()):
            self._check_liveness()

    def _watch_interval(self) -> float:
        stream = self._stream
        return (stream.heartbeat_s if stream else _DEFAULT_HEARTBEAT_S) / 2

    def _check_liveness(self, now: float | None = None) -> bool:
        """Cancel the stream if it has been silent too long (the run loop then reconnects);
        returns whether it is alive. Called by the watchdog thread; a hook for tests."""
        with self._cond:
            call, stream, last = self._call, self._stream, self._last_message
        if call is None or stream is None:
            return True
        now = time.monotonic() if now is None else now
        if now - last <= DEAD_AFTER_HEARTBEATS * stream.heartbeat_s:
            return True
        _log.warning("decision stream silent for %.0f s; reconnecting", now - last)
        call.cancel()
        return False


class AsyncDecisionCache:
    """`DecisionCache` for asyncio: follows the stream in a task of the running loop.

    Use it as an async context manager (or await `start()` and `close()`); `lookup` is a plain
    method (it never waits). Share one per event loop.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        min_action: Action = Action.THROTTLE,
        scopes: Iterable[LimitScope] = (),
        max_entries: int = 100_000,
        reconnect_backoff: tuple[float, float] = (0.2, 10.0),
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = _Settings(min_action, scopes, max_entries, reconnect_backoff, clock, rng)
        self._client = client
        self._table = _Table(max_entries, clock)
        self._task: asyncio.Task[None] | None = None
        self._changed: asyncio.Condition | None = None
        self._syncs = 0
        self._events = 0
        self._connected = False
        self.last_error: grpc.RpcError | None = None
        """Why the last stream ended, if it failed (e.g. PERMISSION_DENIED); None otherwise."""

    async def start(self) -> Self:
        """Start following the stream in a task. Returns at once."""
        if self._task is not None:
            raise RuntimeError("AsyncDecisionCache is already started")
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(), name="ringfence-decision-cache")
        return self

    async def close(self) -> None:
        """Stop following the stream; the entries stay readable until they expire."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # unlike `await task`, keeps its CancelledError inside

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def lookup(
        self,
        *,
        account_id: str | None = None,
        cluster_id: str | None = None,
        limit_key: str | None = None,
    ) -> ActiveDecision | None:
        """The active decision for the account, its cluster or a limit key (the strictest when
        several are active), or None. The cluster id comes from `Decision.cluster`."""
        return _lookup(self._table, account_id, cluster_id, limit_key)

    def decisions(self) -> list[ActiveDecision]:
        """Every decision active now (a copy)."""
        return self._table.values()

    def __len__(self) -> int:
        return len(self._table)

    @property
    def connected(self) -> bool:
        """True while a stream is open and its snapshot has been applied."""
        return self._connected

    @property
    def syncs(self) -> int:
        """How many snapshots have been applied (1 after the first connect, +1 per resync)."""
        return self._syncs

    @property
    def events_applied(self) -> int:
        """How many live UPSERT/DELETE events have been applied."""
        return self._events

    async def wait_synced(self, timeout: float | None = None, *, syncs: int = 1) -> bool:
        """Wait until `syncs` snapshots have been applied; False on timeout."""
        return await self._wait(lambda: self._syncs >= syncs, timeout)

    async def wait_for_events(self, count: int, timeout: float | None = None) -> bool:
        """Wait until `events_applied` reaches `count`; False on timeout (a test hook)."""
        return await self._wait(lambda: self._events >= count, timeout)

    async def _wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        if self._changed is None:
            raise RuntimeError("AsyncDecisionCache has not been started")
        changed = self._changed
        try:
            async with asyncio.timeout(timeout):
                async with changed:
                    await changed.wait_for(predicate)
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        failures = 0
        while True:
            stream = _Stream(self._table)
            call = self._client._stub.StreamDecisions(
                self._settings.request,
                metadata=self._client._policy.metadata,
                wait_for_ready=True,
            )
            try:
                while True:
                    silence = DEAD_AFTER_HEARTBEATS * stream.heartbeat_s
                    message = await asyncio.wait_for(call.read(), silence)
                    if message is grpc.aio.EOF:
                        break
                    outcome = stream.apply(message)
                    if outcome is _Outcome.SYNCED:
                        failures = 0
                    if outcome is not None:
                        await self._count(outcome)
                self.last_error = None
            except TimeoutError:
                _log.warning("decision stream silent for %.0f s; reconnecting", silence)
            except grpc.RpcError as exc:
                self.last_error = exc
                _log.warning("decision stream ended (%s); reconnecting", _code_name(exc))
            finally:
                call.cancel()
                self._connected = False
            failures += 1
            await asyncio.sleep(self._settings.pause(failures))

    async def _count(self, outcome: _Outcome) -> None:
        if outcome is _Outcome.SYNCED:
            self._syncs += 1
            self._connected = True
        else:
            self._events += 1
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()


def _code_name(exc: grpc.RpcError) -> str:
    code = getattr(exc, "code", None)
    return code().name if callable(code) else type(exc).__name__
