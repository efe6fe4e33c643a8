"""The global guard from the incident's lessons: when the day's total volume nears the
historical daily peak, recommend serving from the fallback model."""

from __future__ import annotations

import json

from ringfence.service.core.policy import FallbackPolicy

_DAY = 86400


class VolumeGuard:
    """Counts requests per UTC day; O(1) per request."""

    def __init__(self, policy: FallbackPolicy) -> None:
        self.policy = policy
        self.day = -1
        self.today = 0
        self.history: dict[int, int] = {}  # day number -> requests, complete days only

    def observe(self, t: float) -> None:
        day = int(t // _DAY)
        if day > self.day:
            if self.day >= 0:
                self.history[self.day] = self.today
                cutoff = day - self.policy.history_days
                for old in [d for d in self.history if d < cutoff]:
                    del self.history[old]
            self.day, self.today = day, 0
        if day == self.day:
            self.today += 1

    @property
    def peak(self) -> int:
        return max(self.history.values(), default=0)

    def near_peak(self) -> bool:
        if len(self.history) < self.policy.min_history_days:
            return False
        return self.today >= self.policy.peak_fraction * self.peak > 0

    def to_json(self) -> str:
        return json.dumps({"day": self.day, "today": self.today,
                           "history": {str(k): v for k, v in self.history.items()}})

    def restore(self, text: str) -> None:
        data = json.loads(text)
        self.day, self.today = int(data["day"]), int(data["today"])
        self.history = {int(k): int(v) for k, v in data["history"].items()}
