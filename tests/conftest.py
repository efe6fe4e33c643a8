"""Shared test helpers: deterministic clocks, keys and request builders."""

from __future__ import annotations

import pytest

from ringfence.service.adapters.clock import ManualClock
from ringfence.service.core.identity import Hasher

T0 = 1_790_000_000.0  # a fixed "now" (2026-09-21) so tests never depend on the wall clock
KEY = bytes(range(32))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def hasher() -> Hasher:
    return Hasher(KEY)
