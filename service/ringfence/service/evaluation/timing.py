"""When simulated accounts send requests: human sessions on a diurnal and weekly rhythm, steady
machine traffic, and a fleet's synchronized waves. Each model draws the next request time
after ``t`` from the shared RNG, so the simulator needs only one pending time per account."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

DAY = 86400.0
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Rhythm:
    """Relative activity by local hour and weekday, both normalised to mean 1."""

    hourly: tuple[float, ...]
    weekend: float  # weekend activity relative to a weekday
    utc_offset_h: float = 0.0

    @staticmethod
    def of(hourly: Sequence[float], weekend: float, utc_offset_h: float) -> Rhythm:
        mean = sum(hourly) / len(hourly)
        # Normalise the week so a rhythm never changes an account's mean daily volume.
        week_mean = (5 + 2 * weekend) / 7
        return Rhythm(tuple(h / mean for h in hourly), weekend / week_mean if week_mean else 1,
                      utc_offset_h)

    @property
    def weekday(self) -> float:
        return (7 - 2 * self.weekend) / 5

    @property
    def peak(self) -> float:
        return max(self.hourly) * max(self.weekday, self.weekend)

    def factor(self, t: float) -> float:
        local = t + self.utc_offset_h * HOUR
        hour = int(local // HOUR) % 24
        # 1970-01-01 was a Thursday: day 0 -> weekday index 3 (Monday = 0).
        weekday = (int(local // DAY) + 3) % 7
        return self.hourly[hour] * (self.weekend if weekday >= 5 else self.weekday)


FLAT = Rhythm((1.0,) * 24, 1.0)


class Timing(Protocol):
    def next_time(self, t: float, rng: random.Random) -> tuple[float, bool]:
        """The next request after ``t``, and whether it opens a new session."""
        ...


def _thinned(t: float, rate_per_s: float, rhythm: Rhythm, rng: random.Random) -> float:
    """Next arrival of a Poisson process with rate ``rate_per_s × rhythm(t)`` (thinning)."""
    peak = rate_per_s * rhythm.peak
    while True:
        t += rng.expovariate(peak)
        if rng.random() * rhythm.peak < rhythm.factor(t):
            return t


def geometric(rng: random.Random, mean: float) -> int:
    """A count >= 1 with the given mean."""
    if mean <= 1:
        return 1
    return 1 + int(math.log(1.0 - rng.random()) / math.log(1 - 1 / mean))


class Sessions:
    """People: sessions arrive on the rhythm; a session is a burst of requests."""

    __slots__ = ("gap_s", "left", "mean_size", "rate_per_s", "rhythm")

    def __init__(self, sessions_per_day: float, mean_size: float, gap_s: float,
                 rhythm: Rhythm) -> None:
        self.rate_per_s = sessions_per_day / DAY
        self.mean_size = mean_size
        self.gap_s = gap_s
        self.rhythm = rhythm
        self.left = 0

    def next_time(self, t: float, rng: random.Random) -> tuple[float, bool]:
        if self.left > 0:
            self.left -= 1
            return t + rng.expovariate(1 / self.gap_s), False
        self.left = geometric(rng, self.mean_size) - 1
        return _thinned(t, self.rate_per_s, self.rhythm, rng), True


class Steady:
    """Machines: a Poisson stream, optionally shaped by the customers' rhythm."""

    __slots__ = ("rate_per_s", "rhythm")

    def __init__(self, per_day: float, rhythm: Rhythm = FLAT) -> None:
        self.rate_per_s = per_day / DAY
        self.rhythm = rhythm

    def next_time(self, t: float, rng: random.Random) -> tuple[float, bool]:
        return _thinned(t, self.rate_per_s, self.rhythm, rng), False


class Waves:
    """A fleet scheduler: every ``period_s`` a wave fires and each account joins it with the
    probability that gives ``per_day`` requests a day, sending within ``jitter_s`` of the
    wave. All accounts of a campaign share the wave grid, which is what synchronizes them."""

    __slots__ = ("jitter_s", "p", "period_s", "phase_s", "rhythm")

    def __init__(self, per_day: float, period_s: float, jitter_s: float, phase_s: float,
                 rhythm: Rhythm = FLAT) -> None:
        # Waves outside the rhythm are skipped (see next_time), so join the others more often.
        self.p = min(1.0, per_day * period_s / DAY * rhythm.peak)
        self.period_s = period_s
        self.jitter_s = jitter_s
        self.phase_s = phase_s
        self.rhythm = rhythm

    def next_time(self, t: float, rng: random.Random) -> tuple[float, bool]:
        wave = math.floor((t - self.phase_s) / self.period_s) + 1
        peak = self.rhythm.peak
        while True:
            if self.p < 1:
                wave += geometric(rng, 1 / self.p) - 1
            start = self.phase_s + wave * self.period_s
            # A camouflaged fleet skips waves in its fake night.
            if rng.random() * peak < self.rhythm.factor(start):
                return start + rng.random() * self.jitter_s, False
            wave += 1
