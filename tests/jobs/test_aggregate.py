"""The partitioned aggregation is the core's snapshot: profiles rebuilt from the log equal
profiles built event by event, and the assembled snapshot equals ``build_snapshot``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import KEY_HEX, T_END, make_events, write_log

from ringfence.service.core.clustering import Assignment, ClusterParams, build_snapshot
from ringfence.service.core.identity import Hasher
from ringfence.service.core.profiles import AccountProfile, event_from_log
from ringfence.service.jobs.aggregate import aggregate_partition
from ringfence.service.jobs.recluster import make_tasks, plan
from ringfence.service.jobs.snapshot import assemble
from ringfence.service.jobs.sources import SqliteSource
from ringfence.service.jobs.window import Window

KEY = bytes.fromhex(KEY_HEX)
SINCE = T_END - 3 * 86400 - 60


def _reference(events):
    """Profiles as the engine builds them: one record per event, in event-time order."""
    hasher = Hasher(KEY)
    profiles: dict[str, AccountProfile] = {}
    for e in sorted(events, key=lambda e: e.event_time):
        p = profiles.setdefault(e.account_id, AccountProfile(e.event_time))
        country = hasher.token("country", e.country) if e.country else 0
        p.record(event_from_log(e, hasher.token("account", e.account_id), country),
                 e.account_created_at)
    return profiles


def _tasks(source, partitions, window_days):
    stats = source.account_stats(SINCE, T_END)
    return make_tasks(source, Window(SINCE, T_END), window_days, plan(stats, partitions), KEY)


@pytest.mark.parametrize("partitions", [1, 3])
def test_assembled_snapshot_equals_build_snapshot(tmp_path, partitions):
    events = make_events(seed=5, days=2, fleet=30, users=60)
    # the gateway sends the fleet's creation times (sign-up batches), not the users'
    events = [dataclasses.replace(e, account_created_at=T_END - 86400 - int(e.account_id[6:]))
              if e.account_id.startswith("fleet-") else e for e in events]
    source = SqliteSource(write_log(tmp_path / "events.db", events))
    params = ClusterParams(window_days=1.0)  # a window that leaves some accounts out
    previous = {"fleet-1": Assignment("c-old", 0.9), "user-3": Assignment("c-x", 0.5)}
    results = [aggregate_partition(t) for t in _tasks(source, partitions, params.window_days)]
    assert sum(r.events for r in results) == len(events)
    got, population = assemble(results, T_END, SINCE, params, previous)

    reference = _reference(events)
    *_, want = build_snapshot(sorted(reference.items()), T_END, params, previous)
    assert want is not None
    assert got.account_ids == want.account_ids
    assert 0 < len(got.account_ids) < len(reference)
    np.testing.assert_array_equal(got.features, want.features)
    np.testing.assert_array_equal(got.rarity.tokens, want.rarity.tokens)
    np.testing.assert_array_equal(got.rarity.counts, want.rarity.counts)
    assert got.rarity.n_accounts == want.rarity.n_accounts
    for name in ("hours", "daily_volume", "anonymized", "age_days", "regularity"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    for name in ("device_tokens", "stack_only", "signature_tokens"):
        for a, b in zip(getattr(got, name), getattr(want, name), strict=True):
            np.testing.assert_array_equal(a, b)
    assert got.previous == want.previous
    assert want.created_known is not None and want.created_known.any()
    np.testing.assert_array_equal(got.created_known, want.created_known)
    assert population.account_ids == sorted(reference)
    assert population.daily.sum() == len(events)
    assert list(population.totals) == [reference[a].total for a in population.account_ids]


def test_rebuilt_profiles_are_byte_identical(tmp_path):
    from ringfence.service.jobs.aggregate import rebuild_profiles

    events = make_events(seed=8, days=1, fleet=12, users=20)
    source = SqliteSource(write_log(tmp_path / "events.db", events))
    reference = _reference(events)
    rebuilt = {}
    for task in _tasks(source, 2, 45.0):
        for account, profile, _days in rebuild_profiles(task):
            rebuilt[account] = profile.to_bytes()
    assert rebuilt == {a: p.to_bytes() for a, p in reference.items()}
