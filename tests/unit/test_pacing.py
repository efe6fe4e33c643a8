"""Background work on the serving loop is paced to a share of the loop's time (pacing.py)."""

from __future__ import annotations

import asyncio

import pytest

from ringfence.service.pacing import Pacer
from ringfence.service.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_pause_keeps_the_work_to_its_share_of_the_time() -> None:
    clock = FakeClock()
    pacer = Pacer(0.25, clock)
    clock.t += 0.002  # a 2 ms slice of work
    # 2 ms of work must be 25 % of the time: 6 ms of the loop left to requests
    assert pacer.pause_for() == pytest.approx(0.006)
    assert Pacer(1.0, clock).pause_for() == 0.0  # share 1: a loop turn only


async def test_pause_sleeps_then_counts_the_next_slice_from_its_end() -> None:
    pacer = Pacer(0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    work_until = started + 0.02
    while loop.time() < work_until:  # a 20 ms slice holding the loop
        pass
    await pacer.pause()
    assert loop.time() - started >= 0.039  # ~20 ms of work, then ≥ ~20 ms for the others
    assert pacer.pause_for() < 0.005  # the next slice starts from here, not from the first


async def test_requests_get_the_loop_between_paced_slices() -> None:
    """While paced background work runs, a 1 ms heartbeat (standing in for calls) is never
    late by more than about one slice; unpaced (one turn between slices) it would get one
    turn per slice instead of running on time."""
    loop = asyncio.get_running_loop()
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.001)
            beats += 1

    beating = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.005)
    pacer = Pacer(0.25)
    before, started = beats, loop.time()
    for _ in range(10):  # ten 2 ms slices
        until = loop.time() + 0.002
        while loop.time() < until:
            pass
        await pacer.pause()
    elapsed = loop.time() - started
    beating.cancel()
    assert elapsed >= 0.075  # 20 ms of work at 25 %: ≥ 80 ms (timer rounding aside)
    assert beats - before >= 30  # the loop was free for ≥ 60 ms of 1 ms beats


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_a_share_outside_0_to_1_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="share"):
        Pacer(share)
    with pytest.raises(ValueError, match="background_loop_share"):
        Settings(background_loop_share=share)
