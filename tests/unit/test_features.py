import numpy as np
import pytest

from ringfence.service.core.clustering import _match_ids
from ringfence.service.core.features import (
    BEHAVIOUR_NAMES,
    FEATURE_NAMES,
    IDENTITY_DIMS,
    Rarity,
    account_tokens,
    behaviour,
    feature_rows,
    identity_matrix,
    stack_only_devices,
)
from ringfence.service.core.policy import FallbackPolicy
from ringfence.service.core.profiles import AccountEvent, AccountProfile
from ringfence.service.core.volume import VolumeGuard

T0 = 1_790_000_000.0 - 1_790_000_000.0 % 86400


def _profile(device: int, ips, stack: int | None = None, signature=None, n=5, gap=3600.0):
    p = AccountProfile(T0)
    for i in range(n):
        p.record(AccountEvent(t=T0 + i * gap, account_token=1, ip_token=ips[i % len(ips)],
                              prefix_token=ips[i % len(ips)] >> 8, asn=64500, country_token=1,
                              device_token=device,
                              stack_token=device if stack is None else stack,
                              content_signature=signature, anonymized=False, task=2,
                              input_tokens=1, output_tokens=1), None)
    return p


def test_fleet_accounts_drawing_from_one_pool_land_close_without_sharing_one_identifier():
    # Each fleet account uses 2 of a pool of 12 devices and 3 of 30 templates, so most pairs
    # share nothing directly; the projection puts the pool on common components.
    rng = np.random.default_rng(5)
    fleet = [_profile(device=int(d), ips=[10_000 + 7 * i], signature=int(s))
             for i in range(60)
             for d, s in [(rng.integers(100, 112), rng.integers(1000, 1030))]]
    others = [_profile(device=5000 + i // 3, ips=[20_000 + i], signature=9000 + i // 3)
              for i in range(60)]  # small benign groups of three
    tokens = [account_tokens(p, 0) for p in fleet + others]
    rows = identity_matrix(tokens, Rarity.fit(tokens))
    assert rows.shape == (120, IDENTITY_DIMS)
    # every fleet account's nearest neighbours are fleet accounts, and no benign account's
    distances = np.linalg.norm(rows[:, None] - rows[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1)[:, :5]
    assert (nearest[:60] < 60).all()
    assert (nearest[60:, 0] >= 60).all()
    again = identity_matrix(tokens, Rarity.fit(tokens))
    np.testing.assert_allclose(again, rows)  # deterministic (seeded SVD)


def test_rarity_gives_unshared_tokens_no_weight_and_popular_ones_little():
    a = [np.array([1, 2], np.uint64)] * 1
    accounts = [[np.array([1, 10 + i], np.uint64)] for i in range(100)] + \
        [[np.array([7], np.uint64)], [np.array([7], np.uint64)]] + [a]
    r = Rarity.fit(accounts)
    w = r.weights(np.array([1, 7, 11, 999], np.uint64))
    assert w[2] == 0 and w[3] == 0  # on one account / never seen: links nothing
    assert w[1] > w[0] > 0  # shared by two beats shared by a hundred
    assert list(r.df(np.array([1, 7, 999], np.uint64))) == [101, 2, 0]


def test_accounts_sharing_rare_identifiers_are_close_and_others_are_not():
    fleet = [_profile(device=42, ips=[1000 + i, 2000 + i], signature=99) for i in range(5)]
    loners = [_profile(device=500 + i, ips=[(3000 + i) << 8]) for i in range(5)]
    since = 0
    tokens = [account_tokens(p, since) for p in fleet + loners]
    rows = identity_matrix(tokens, Rarity.fit(tokens))
    fleet_spread = np.linalg.norm(rows[:5] - rows[0], axis=1).max()
    assert fleet_spread < 1e-6
    assert np.linalg.norm(rows[0]) > 0.5
    assert np.allclose(rows[5:], 0)  # nothing shared: no identity pull at all


def test_stack_only_devices_are_recognised():
    with_id = account_tokens(_profile(device=1, stack=2, ips=[5]), 0)
    stack_only = account_tokens(_profile(device=3, ips=[5]), 0)
    assert not stack_only_devices(with_id).any()
    assert stack_only_devices(stack_only).all()


def test_behaviour_features_are_bounded_and_named():
    p = _profile(device=1, ips=[1], n=50, gap=3600.0)
    b = behaviour(p, T0 + 50 * 3600)
    assert len(b) == len(BEHAVIOUR_NAMES)
    assert all(-1.0 <= x <= 1.0 for x in b)
    regular = dict(zip(BEHAVIOUR_NAMES, b, strict=True))["timing_regularity"]
    irregular = dict(zip(BEHAVIOUR_NAMES, behaviour(
        _mixed_gaps(), T0 + 86400), strict=True))["timing_regularity"]
    assert regular > irregular
    rows = feature_rows([p], T0 + 50 * 3600, Rarity.fit([account_tokens(p, 0)]), 7)
    assert rows.shape == (1, len(FEATURE_NAMES))


def _mixed_gaps():
    p = AccountProfile(T0)
    t = T0
    for gap in (5, 4000, 30, 9000, 2, 600, 20000, 15):
        t += gap
        p.record(AccountEvent(t=t, account_token=1, ip_token=1, prefix_token=1, asn=1,
                              country_token=1, device_token=1, stack_token=1,
                              content_signature=None, anonymized=False, task=1, input_tokens=0,
                              output_tokens=0), None)
    return p


def test_cluster_ids_follow_their_members():
    previous = ["c-a"] * 10 + ["c-b"] * 10 + [None] * 10
    labels = np.array([1] * 10 + [0] * 10 + [2] * 10)
    ids, lineage = _match_ids(labels, previous, 3)
    assert ids[1] == "c-a" and ids[0] == "c-b"
    assert ids[2] not in ("c-a", "c-b") and ids[2].startswith("c-")
    assert lineage["c-a"] == ("c-a",)
    # a merge keeps the larger parent's id and records both
    merged, lineage = _match_ids(np.array([0] * 20 + [-1] * 10), previous, 1)
    assert merged[0] in ("c-a", "c-b") and lineage[merged[0]] == ("c-a", "c-b")


@pytest.mark.parametrize("fraction", [0.79, 0.8])
def test_volume_guard_recommends_fallback_near_the_peak(fraction):
    guard = VolumeGuard(FallbackPolicy(peak_fraction=0.8, min_history_days=3))
    for day, n in enumerate((100, 1000, 300)):
        for _ in range(n):
            guard.observe(T0 + day * 86400 + 10)
    assert not guard.near_peak()  # only two complete days so far
    for _ in range(int(fraction * 1000)):
        guard.observe(T0 + 3 * 86400 + 10)
    assert guard.peak == 1000
    assert guard.near_peak() is (fraction >= 0.8)
    restored = VolumeGuard(FallbackPolicy())
    restored.restore(guard.to_json())
    assert (restored.today, restored.peak) == (guard.today, guard.peak)
