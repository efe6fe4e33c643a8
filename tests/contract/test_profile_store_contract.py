"""The ProfileStore contract (core/ports.py), run against every backend: embedded in memory,
embedded on SQLite, Redis, and Redis behind the resilient fallback."""

from __future__ import annotations

import random
import threading

import pytest

from ringfence.service.adapters.embedded_store import EmbeddedProfileStore
from ringfence.service.adapters.redis_store import StoreConflict
from ringfence.service.core.model import (
    Action,
    Decision,
    Limit,
    LimitScope,
    LimitUnit,
    Reason,
)
from ringfence.service.core.profiles import AccountEvent

T0 = 1_790_000_000.0
DAY = 86400.0


def event(t: float, account_token: int, *, device: int = 11, ip: int = 1,
          asn: int = 64500) -> AccountEvent:
    return AccountEvent(t=t, account_token=account_token, ip_token=ip, prefix_token=7, asn=asn,
                        country_token=3, device_token=device, stack_token=5,
                        content_signature=7, anonymized=False, task=1, input_tokens=10,
                        output_tokens=5)


def decision(score: float = 0.5) -> Decision:
    return Decision(risk_score=score, action=Action.THROTTLE, policy_action=Action.THROTTLE,
                    shadow=False, route_to_fallback=False, limit_key="account:a",
                    limit_scope=LimitScope.ACCOUNT, suggested_limit=Limit(10, LimitUnit.MINUTE),
                    ttl_seconds=300, reasons=(Reason("X", 0.5, "why"),), policy_version="p",
                    decided_at=T0)


def test_linkage_matches_the_reference_store_step_by_step(profile_backend):
    """Every backend answers exactly what the in-memory reference answers, request by
    request, over two days of mixed traffic (so 24 h windows roll over)."""
    store = profile_backend.open()
    reference = EmbeddedProfileStore(None)
    rng = random.Random(7)
    t = T0
    for _ in range(300):
        t += rng.expovariate(1 / 600)  # ~10 min apart: 300 requests span ~2 days
        account = rng.randrange(12)
        args = (f"acct-{account}", f"dev-{rng.randrange(3)}", f"pfx-{rng.randrange(2)}",
                event(t, 1000 + account, device=rng.randrange(4), ip=rng.randrange(20),
                      asn=rng.choice([0, 64500, 64501])),
                T0 - 3600 if account == 0 else None)
        assert store.record(*args) == reference.record(*args)
    for account in range(12):
        assert store.account_summary(f"acct-{account}", t) == \
            reference.account_summary(f"acct-{account}", t)
        assert store.account_profile(f"acct-{account}").to_bytes() == \
            reference.account_profile(f"acct-{account}").to_bytes()


def test_accounts_sharing_a_device_and_prefix_are_linked(profile_backend):
    store = profile_backend.open()
    for i in range(30):
        link = store.record(f"acct-{i}", "dev", "pfx", event(T0 + i, i), None)
    assert link.device_accounts == 30 and link.prefix_accounts == 30
    assert link.device_first_seen == T0
    assert not link.degraded
    other = store.record("loner", "dev-2", "pfx-2", event(T0 + 31, 99), None)
    assert other.device_accounts == 1 and other.prefix_accounts == 1


def test_identity_changed_only_when_an_identifier_is_new(profile_backend):
    store = profile_backend.open()
    assert store.record("a", "d", "p", event(T0, 1), None).identity_changed
    assert not store.record("a", "d", "p", event(T0 + 1, 1), None).identity_changed
    assert store.record("a", "d", "p", event(T0 + 2, 1, device=12), None).identity_changed


def test_unknown_account_has_no_summary_profile_or_decision(profile_backend):
    store = profile_backend.open()
    assert store.account_summary("nobody", T0) is None
    assert store.account_profile("nobody") is None
    assert store.last_decision("nobody") is None


def test_summary_counts_requests_and_distinct_identifiers(profile_backend):
    store = profile_backend.open()
    for i in range(5):
        store.record("a", "d", "p", event(T0 + i * 60, 1, ip=i, device=10 + i % 2), T0 - DAY)
    summary = store.account_summary("a", T0 + 300)
    assert summary.total_requests == 5
    assert summary.distinct_ips == 5 and summary.distinct_devices == 2
    assert summary.requests.last_24h == 5
    assert summary.first_seen == T0 and summary.last_seen == T0 + 240


def test_last_decision_round_trips(profile_backend):
    store = profile_backend.open()
    store.record("a", "d", "p", event(T0, 1), None)
    assert store.last_decision("a") is None
    store.save_decision("a", decision(0.25))
    store.save_decision("a", decision(0.75))
    assert store.last_decision("a") == decision(0.75)


def test_active_accounts_lists_every_recorded_account(profile_backend):
    store = profile_backend.open()
    for i in range(40):
        store.record(f"acct-{i}", "d", "p", event(T0 + i, i), None)
    listed = dict(store.active_accounts())
    assert set(listed) == {f"acct-{i}" for i in range(40)}
    assert all(p.total == 1 for p in listed.values())


def test_meta_round_trips(profile_backend):
    store = profile_backend.open()
    assert store.load_meta("volume_guard") is None
    store.save_meta("volume_guard", '{"peak": 3}')
    store.save_meta("volume_guard", '{"peak": 4}')
    assert store.load_meta("volume_guard") == '{"peak": 4}'


def test_purge_forgets_idle_profiles_only(profile_backend):
    store = profile_backend.open()
    store.record("old", "d-old", "p-old", event(T0, 1), None)
    store.save_decision("old", decision())
    store.record("new", "d-new", "p-new", event(T0 + 40 * DAY, 2), None)
    assert store.purge(T0 + 30 * DAY) == 3  # the old account, its device and its prefix
    assert store.account_summary("old", T0) is None
    assert store.last_decision("old") is None
    assert store.account_summary("new", T0 + 40 * DAY) is not None
    assert store.record("x", "d-old", "p-old", event(T0 + 40 * DAY, 3), None) \
        .device_accounts == 1


def test_state_survives_a_restart(profile_backend):
    if not profile_backend.durable:
        pytest.skip("memory only, by design")
    store = profile_backend.open()
    for i in range(3):
        store.record(f"acct-{i}", "dev", "pfx", event(T0 + i, i), None)
    store.save_decision("acct-2", decision())
    store.save_meta("k", "v")
    store.close()
    again = profile_backend.open()
    assert again.last_decision("acct-2") == decision()
    assert again.load_meta("k") == "v"
    assert again.record("acct-3", "dev", "pfx", event(T0 + 4, 3), None).device_accounts == 4


def test_two_processes_see_one_state(profile_backend):
    """Shared backends: what one instance records, another instance answers with."""
    if not profile_backend.shared:
        pytest.skip("one process's state, by design")
    first, second = profile_backend.open(), profile_backend.open()
    for i in range(20):
        (first if i % 2 else second).record(f"acct-{i}", "dev", "pfx", event(T0 + i, i), None)
    first.save_decision("acct-3", decision(0.9))
    assert second.last_decision("acct-3") == decision(0.9)
    assert second.record("acct-20", "dev", "pfx", event(T0 + 20, 20), None) \
        .device_accounts == 21
    assert first.account_summary("acct-20", T0 + 21).total_requests == 1


def test_concurrent_records_of_one_account_lose_no_update(profile_backend):
    """Shared backends: record() is atomic across processes. Four clients hammer one account
    back to back (far beyond any real account's rate): every record that returned is counted
    exactly once; one that could not get through raised StoreConflict and counted nothing."""
    if not profile_backend.shared:
        pytest.skip("single-threaded by design (one event loop owns it)")
    stores = [profile_backend.open() for _ in range(4)]
    per_thread = 40
    done = [0] * 4

    def hammer(n: int) -> None:
        for i in range(per_thread):
            try:
                link = stores[n].record("busy", f"dev-{n}", "pfx", event(T0 + i, 1, device=n),
                                        None)
            except StoreConflict:
                continue
            if not link.degraded:  # a degraded answer was recorded locally only
                done[n] += 1

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = stores[0].account_summary("busy", T0 + per_thread)
    assert summary.total_requests == sum(done)
    assert sum(done) >= 2 * per_thread  # most get through even at this rate
    assert summary.distinct_devices == 4


def test_concurrent_records_of_many_accounts_on_one_device_are_all_counted(profile_backend):
    """Shared backends: the device's and prefix's account sets take every writer's update."""
    if not profile_backend.shared:
        pytest.skip("single-threaded by design (one event loop owns it)")
    stores = [profile_backend.open() for _ in range(4)]

    def fleet(n: int) -> None:
        for i in range(25):
            stores[n].record(f"acct-{n}-{i}", "dev", "pfx", event(T0 + i, n * 100 + i), None)

    threads = [threading.Thread(target=fleet, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    link = stores[0].record("last", "dev", "pfx", event(T0 + 30, 999), None)
    assert link.device_accounts == 101 and link.prefix_accounts == 101
    assert len(dict(stores[1].active_accounts())) == 101
