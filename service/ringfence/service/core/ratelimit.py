"""Fixed-window request budgets for the rate limit service: charge hits against a limit key.

The counting itself sits behind ``HitCounter`` so an in-process counter (adapters/
memory_counter.py) can later be replaced by a shared one (e.g. Redis INCRBY + EXPIRE) without
touching the callers. Windows are aligned to multiples of their length since the epoch, the
way envoyproxy/ratelimit aligns them, so every replica agrees on where a window starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Budget:
    """``requests`` allowed per window of ``window_s`` seconds (0 requests: always over)."""

    requests: int
    window_s: int


@dataclass(frozen=True, slots=True)
class WindowCount:
    """Hits counted in the current window (after this call's hits) and when it ends."""

    hits: int
    window_end: float


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """The outcome of charging one request against one budget."""

    over_limit: bool
    budget: Budget
    remaining: int
    reset_in_s: float


class HitCounter(Protocol):
    """Counts hits per key in fixed windows. Implementations must be safe to call from the
    event loop (an in-process dict, or an async client of a shared store)."""

    async def add(self, key: str, hits: int, window_s: int, now: float) -> WindowCount:
        """Add ``hits`` to ``key``'s count in the window containing ``now``."""
        ...


def window_bounds(window_s: int, now: float) -> tuple[float, float]:
    """Start and end of the epoch-aligned window of ``window_s`` seconds containing ``now``."""
    start = (int(now) // window_s) * window_s
    return float(start), float(start + window_s)


async def charge(counter: HitCounter, key: str, budget: Budget, hits: int,
                 now: float) -> LimitStatus:
    """Count ``hits`` for ``key`` and say whether the window's budget is exceeded.

    A budget of 0 requests is over at once (the block tier's budget) and counts nothing.
    """
    if budget.requests <= 0:
        _, end = window_bounds(budget.window_s, now)
        return LimitStatus(True, budget, 0, max(0.0, end - now))
    count = await counter.add(key, max(1, hits), budget.window_s, now)
    return LimitStatus(over_limit=count.hits > budget.requests, budget=budget,
                       remaining=max(0, budget.requests - count.hits),
                       reset_in_s=max(0.0, count.window_end - now))
