"""An in-process fixed-window HitCounter with bounded memory (one replica's view only).

At most ``max_keys`` windows are kept; the least recently used one is dropped first, which
forgets (resets) that key's count: under memory pressure the limiter errs towards allowing.
"""

from __future__ import annotations

from collections import OrderedDict

from ringfence.service.core.ratelimit import WindowCount, window_bounds


class MemoryHitCounter:
    def __init__(self, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._max_keys = max_keys
        # (key, window length) -> (window start, hits in that window)
        self._windows: OrderedDict[tuple[str, int], tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    async def add(self, key: str, hits: int, window_s: int, now: float) -> WindowCount:
        start, end = window_bounds(window_s, now)
        slot = (key, window_s)
        current = self._windows.get(slot)
        count = hits if current is None or current[0] != start else current[1] + hits
        self._windows[slot] = (start, count)
        self._windows.move_to_end(slot)
        while len(self._windows) > self._max_keys:
            self._windows.popitem(last=False)
        return WindowCount(hits=count, window_end=end)
