"""A shared profile store that never makes a request wait for a sick Redis.

Every call goes to the shared store unless its circuit breaker is open; when Redis fails (an
error, a socket timeout, or ``slow_calls`` answers in a row slower than ``slow_s``) the breaker
opens and calls are answered from an in-process embedded store instead, with ``degraded=True``
on the linkage (the engine copies it onto the decision). While open, one call per
``probe_interval_s`` tries Redis again, so a down Redis costs one fast failure per interval,
not a timeout per request; the first probe that succeeds closes the breaker and the service is
back on shared state by itself.

The local store also mirrors every successful shared ``record`` (bounded LRU), so a degraded
answer still knows what this process saw recently instead of starting from nothing. What was
recorded only locally during an outage is not copied back to Redis afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import redis

from ringfence.service.adapters.embedded_store import EmbeddedProfileStore
from ringfence.service.adapters.redis_store import RedisProfileStore, StoreConflict
from ringfence.service.core.model import AccountSummary, Decision, Linkage
from ringfence.service.core.profiles import AccountEvent, AccountProfile

log = logging.getLogger(__name__)

T = TypeVar("T")


class CircuitBreaker:
    """Closed: calls pass. Open: calls are refused, except one probe per ``probe_interval_s``.

    ``clock`` is monotonic seconds, injectable so tests need no sleeps."""

    def __init__(self, probe_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe_interval_s = probe_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open = False
        self._next_probe = 0.0
        self.failures = 0  # failures seen since start (each opens or re-opens the breaker)
        self.opened = 0  # times it went from closed to open

    @property
    def is_open(self) -> bool:
        return self._open

    def allow(self) -> bool:
        with self._lock:
            if not self._open:
                return True
            now = self._clock()
            if now < self._next_probe:
                return False
            self._next_probe = now + self.probe_interval_s  # this caller is the probe
            return True

    def success(self) -> None:
        with self._lock:
            was_open, self._open = self._open, False
        if was_open:
            log.warning("shared profile store is back: serving from shared state again")

    def failure(self, cause: object) -> None:
        with self._lock:
            self.failures += 1
            was_open, self._open = self._open, True
            self._next_probe = self._clock() + self.probe_interval_s
            if not was_open:
                self.opened += 1
        if not was_open:
            log.error("shared profile store failed; answering from local state (degraded) "
                      "and probing every %.1f s", self.probe_interval_s,
                      extra={"cause": repr(cause)})


class ResilientProfileStore:
    """ProfileStore over Redis with a local embedded fallback and a circuit breaker."""

    def __init__(self, shared: RedisProfileStore, local: EmbeddedProfileStore, *,
                 breaker: CircuitBreaker | None = None, slow_s: float = 0.05,
                 slow_calls: int = 3, mirror: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.shared = shared
        self.local = local
        self.breaker = breaker or CircuitBreaker(clock=clock)
        self._slow_s = slow_s
        self._slow_calls = slow_calls
        self._slow_streak = 0
        self._mirror = mirror
        self._clock = clock
        self.degraded_answers = 0  # records answered from local state

    def _call(self, shared: Callable[[], T], local: Callable[[], T]) -> tuple[T, bool]:
        """``shared()`` if the breaker lets it through and it works, else ``local()``;
        the flag says whether the answer came from the shared store."""
        if self.breaker.allow():
            start = self._clock()
            try:
                result = shared()
            except StoreConflict:
                pass  # contention on one account, Redis itself is fine: answer locally
            except redis.RedisError as exc:  # includes connection errors and timeouts
                self.breaker.failure(exc)
            else:
                elapsed = self._clock() - start
                if elapsed <= self._slow_s:
                    self._slow_streak = 0
                    self.breaker.success()
                else:
                    # Answered, but slowly. One slow call may be this process (GC, a busy
                    # core); several in a row mean Redis is slow: stop asking for a while.
                    self._slow_streak += 1
                    if self._slow_streak >= self._slow_calls:
                        self._slow_streak = 0
                        self.breaker.failure(f"slow shared store: {self._slow_calls} calls in "
                                             f"a row over {self._slow_s * 1000:.0f} ms")
                return result, True
        return local(), False

    def record(self, account_id: str, device_key: str, prefix_key: str, event: AccountEvent,
               created_at: float | None) -> Linkage:
        args = (account_id, device_key, prefix_key, event, created_at)
        link, shared = self._call(lambda: self.shared.record(*args),
                                  lambda: self.local.record(*args))
        if shared:
            if self._mirror:
                self.local.record(*args)
            return link
        self.degraded_answers += 1
        return dataclasses.replace(link, degraded=True)

    def account_summary(self, account_id: str, now: float) -> AccountSummary | None:
        return self._call(lambda: self.shared.account_summary(account_id, now),
                          lambda: self.local.account_summary(account_id, now))[0]

    def save_decision(self, account_id: str, decision: Decision) -> None:
        self.local.save_decision(account_id, decision)  # a dict write: always, for fallbacks
        self._call(lambda: self.shared.save_decision(account_id, decision), lambda: None)

    def last_decision(self, account_id: str) -> Decision | None:
        return self._call(lambda: self.shared.last_decision(account_id),
                          lambda: self.local.last_decision(account_id))[0]

    def account_profile(self, account_id: str) -> AccountProfile | None:
        return self._call(lambda: self.shared.account_profile(account_id),
                          lambda: self.local.account_profile(account_id))[0]

    def active_accounts(self) -> Iterator[tuple[str, AccountProfile]]:
        # Lists page by page from Redis; if Redis fails before the first page the local
        # accounts are listed instead (a failure later ends the listing with the error).
        def first_page() -> tuple[Iterator[tuple[str, AccountProfile]],
                                  tuple[str, AccountProfile] | None]:
            it = self.shared.active_accounts()
            return it, next(it, None)

        (it, head), _ = self._call(first_page, lambda: (self.local.active_accounts(), None))
        if head is not None:
            yield head
        yield from it

    def save_meta(self, key: str, value: str) -> None:
        self.local.save_meta(key, value)
        self._call(lambda: self.shared.save_meta(key, value), lambda: None)

    def load_meta(self, key: str) -> str | None:
        return self._call(lambda: self.shared.load_meta(key),
                          lambda: self.local.load_meta(key))[0]

    def purge(self, before: float) -> int:
        n = self.local.purge(before)
        shared, ok = self._call(lambda: self.shared.purge(before), lambda: 0)
        return shared if ok else n

    def begin_checkpoint(self) -> int:
        return self.local.begin_checkpoint()

    def checkpoint(self, limit: int | None = None) -> int:
        return self.local.checkpoint(limit)

    def flush(self) -> None:
        self.local.flush()

    def close(self) -> None:
        self.shared.close()
        self.local.close()
