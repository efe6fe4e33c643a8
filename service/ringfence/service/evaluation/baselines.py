"""Baselines computed on the same events as ringfence: fixed-window request limits keyed by
account (what failed in the incident) or by client IP, as a plain rate limiter does them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ringfence.service.evaluation.events import LabelledEvent


@dataclass(slots=True)
class FixedWindowLimit:
    """``limit`` requests per key per window aligned to the epoch (UTC days, hours); requests
    beyond it are throttled. Counts live only for the current window, so memory is bounded
    by the keys seen in one window. An event older than the current window (a log slightly
    out of order) is counted in the current one."""

    name: str
    limit: int
    window_s: float
    key: Callable[[LabelledEvent], str]
    _window: int = -1
    _counts: dict[str, int] = field(default_factory=dict)

    def throttles(self, event: LabelledEvent) -> bool:
        window = int(event.event_time // self.window_s)
        if window > self._window:
            self._window = window
            self._counts.clear()
        k = self.key(event)
        n = self._counts.get(k, 0) + 1
        self._counts[k] = n
        return n > self.limit


def by_account(event: LabelledEvent) -> str:
    return event.request.account_id


def by_ip(event: LabelledEvent) -> str:
    return event.request.client_ip


def default_baselines(account_per_day: int = 100, ip_per_hour: int = 300,
                      ) -> list[FixedWindowLimit]:
    """The two baselines of the report; their names carry their limits."""
    return [
        FixedWindowLimit(f"account_{account_per_day}_per_day", account_per_day, 86400.0,
                         by_account),
        FixedWindowLimit(f"ip_{ip_per_hour}_per_hour", ip_per_hour, 3600.0, by_ip),
    ]
