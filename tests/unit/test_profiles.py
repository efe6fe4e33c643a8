import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from ringfence.service.core.profiles import (
    AccountEvent,
    AccountProfile,
    RecentKeys,
    SharedProfile,
    WindowCounter,
    linkage,
    minute_of,
)

T0 = 1_790_000_000.0 - 1_790_000_000.0 % 3600  # on an hour boundary


def test_window_counter_windows_slide():
    c = WindowCounter()
    for i in range(120):  # one request a minute for two hours
        c.add(T0 + 60 * i)
    now = T0 + 60 * 119
    counts = c.count(now)
    assert 4 <= counts.last_5m <= 5
    assert 55 <= counts.last_1h <= 60
    assert counts.last_24h == 120
    later = c.count(now + 25 * 3600)
    assert (later.last_5m, later.last_1h, later.last_24h) == (0, 0, 0)


def test_window_counter_ignores_events_older_than_its_ring_but_keeps_recent_past():
    c = WindowCounter()
    c.add(T0 + 3 * 86400)
    c.add(T0)  # two days earlier: outside every window
    c.add(T0 + 3 * 86400 - 600)  # ten minutes earlier: inside 1 h and 24 h
    counts = c.count(T0 + 3 * 86400)
    assert counts.last_24h == 2
    assert counts.last_1h == 2
    assert counts.last_5m == 1


@given(st.lists(st.floats(min_value=0, max_value=3 * 86400), min_size=1, max_size=200))
def test_window_counts_are_nested(offsets):
    c = WindowCounter()
    for o in sorted(offsets):
        c.add(T0 + o)
    counts = c.count(T0 + max(offsets))
    assert counts.last_5m <= counts.last_1h <= counts.last_24h <= len(offsets)


def test_recent_keys_evicts_oldest_and_saturates():
    k = RecentKeys(3)
    assert k.add(1, 10) and k.add(2, 11) and k.add(3, 12)
    assert not k.add(1, 13)  # refresh: 2 is now the oldest
    assert k.add(4, 14)
    assert sorted(k.keys) == [1, 3, 4]
    assert k.saturated
    assert k.count_since(13) == 2


def _event(t, account=1, ip=2, device=3, asn=64500):
    return AccountEvent(t=t, account_token=account, ip_token=ip, prefix_token=ip >> 8, asn=asn,
                        country_token=9, device_token=device, stack_token=5,
                        content_signature=None, anonymized=False, task=2,
                        input_tokens=100, output_tokens=50)


def test_account_profile_round_trips_through_bytes():
    p = AccountProfile(T0)
    for i in range(40):
        p.record(_event(T0 + 30 * i, ip=1000 + i, asn=64500 + i % 3), created_at=T0 - 5)
    q = AccountProfile.from_bytes(p.to_bytes())
    assert q.to_bytes() == p.to_bytes()
    assert (q.total, q.input_tokens, q.created_at) == (40, 4000, T0 - 5)
    assert q.ips.count_since(0) == 32  # capacity: the set saturated
    assert q.asns.count_since(0) == 3
    assert q.windows.count(T0 + 1200) == p.windows.count(T0 + 1200)


def test_profile_size_is_bounded_when_every_set_saturates():
    p = AccountProfile(T0)
    for i in range(1000):
        e = _event(T0 + 30 * i, ip=i << 8, device=i, asn=i + 1)
        p.record(dataclasses.replace(e, country_token=i + 1, stack_token=i,
                                     content_signature=i), created_at=None)
    assert all(k.saturated for k in p._key_sets())
    assert len(p.to_bytes()) < 2048


def test_linkage_counts_accounts_on_a_shared_device():
    device = SharedProfile(T0)
    prefix = SharedProfile(T0)
    account = AccountProfile(T0)
    for a in range(50):
        device.record(T0 + a, a)
        prefix.record(T0 + a, a)
    account.record(_event(T0 + 50), None)
    link = linkage(account, device, prefix, T0 + 50)
    assert link.device_accounts == 50
    assert link.prefix_accounts == 50
    # a day later nobody is in the 24 h window any more
    assert linkage(account, device, prefix, T0 + 2 * 86400).device_accounts == 0
    assert minute_of(T0 + 59) == minute_of(T0)
