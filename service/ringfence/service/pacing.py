"""Background work that shares the event loop with requests, kept to a share of its time.

The profile checkpoint, cluster placement and the refit snapshot run on the serving loop
because they read live profiles that only the loop mutates. They already ran in slices with
``asyncio.sleep(0)`` between them, but one loop turn is not enough for a call: it needs
several turns (request in, handler, response out), and each of those turns came after another
slice. At half of the server's capacity that made a placement round or a checkpoint add tens of
milliseconds to the calls that overlapped it (docs/benchmarks.md, "The open-loop tail").
A ``Pacer`` instead sleeps after each slice for as long as it takes to keep the work to
``share`` of the wall time, so requests get whole stretches of the loop between slices.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Pacer:
    """``await pause()`` between slices of background work: it sleeps so that the work
    since the last pause takes at most ``share`` (0 < share ≤ 1) of the elapsed time;
    ``share`` 1 only yields one loop turn, as ``asyncio.sleep(0)`` does."""

    def __init__(self, share: float, clock: Callable[[], float] = time.perf_counter) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share: expected 0 < share <= 1, got {share}")
        self.share = share
        self._clock = clock
        self._mark = clock()

    def pause_for(self) -> float:
        """How long ``pause`` would sleep now."""
        spent = self._clock() - self._mark
        return max(0.0, spent * (1.0 - self.share) / self.share)

    async def pause(self) -> None:
        await asyncio.sleep(self.pause_for())
        self._mark = self._clock()
