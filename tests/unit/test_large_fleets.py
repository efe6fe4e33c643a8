"""A large, uniform fleet is found as one cluster (docs/recluster.md, fleet recovery by scale).

HDBSCAN's leaf selection keeps a few small leaves of a tight fleet of thousands and leaves the
rest as noise; the refit's repair (merge_fragments, absorb_by_identifiers) must then claim the
unclustered holders of the fleet's device ids and templates, without absorbing the hundreds
of honest users behind one carrier's CGNAT /24."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from ringfence.service.core.clustering import (
    NOISE,
    ClusterModel,
    ClusterParams,
    Snapshot,
    absorb_by_identifiers,
    assemble_snapshot,
    fit_model,
    merge_fragments,
)
from ringfence.service.core.features import KINDS, Rarity

MASK = (1 << 64) - 1
FLEET = 1500
CGNAT = 400
OTHERS = 1600
DEVICE_POOL = FLEET // 40  # ~40 accounts per device id, as in bench/recluster.py
PREFIX_POOL = 3000  # residential /24s the fleet's proxies exit from
JITTER = 0.04
N_PREFIX = 3
N_DEVICE = 8  # a fleet account rotates through its pool's device ids
CGNAT_PREFIX = 3_000_000


def _tok(kind: int, values: list[int]) -> npt.NDArray[np.uint64]:
    salt = KINDS[kind][1]
    return np.array(sorted({(v ^ salt) & MASK for v in values}), dtype=np.uint64)


def population(seed: int = 5) -> tuple[Snapshot, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """A fleet of FLEET accounts (shared device pool, residential /24 pool, one client stack,
    3 templates on 60% of accounts, one clock), CGNAT honest users behind one /24 and OTHERS
    varied honest users. Returns the snapshot and the fleet and CGNAT masks."""
    rng = np.random.default_rng(seed)
    tokens: list[list[npt.NDArray[np.uint64]]] = []
    rows, hours = [], []
    n = FLEET + CGNAT + OTHERS
    for i in range(n):
        if i < FLEET:
            device = [1_000 + int(d) for d in rng.integers(0, DEVICE_POOL, size=N_DEVICE)]
            stack = [77]
            prefixes = [5_000 + int(p) for p in rng.integers(0, PREFIX_POOL, size=N_PREFIX)]
            if rng.random() < 0.05:  # a proxy exit behind the carrier's CGNAT
                prefixes.append(CGNAT_PREFIX)
            ips = [p * 256 + int(rng.integers(1, 255)) for p in prefixes]
            asn = [int(rng.integers(10, 14))]
            signature = [900 + int(rng.integers(3))] if rng.random() < 0.6 else []
            behaviour = np.array([0.62, 0.3, 0.9, 0.85, 0.7, 0.0, 0.35]) + rng.normal(0, JITTER, 7)
            hour = np.full(24, 20.0)
        else:
            device = [10_000_000 + i]  # each honest user's own device id
            stack = [int(rng.integers(100, 120))]  # one of 20 browser builds
            if i < FLEET + CGNAT:  # one carrier's CGNAT /24 shared by hundreds of users
                prefixes = [CGNAT_PREFIX]
                ips = [CGNAT_PREFIX * 256 + int(rng.integers(1, 255))]
                asn = [20]
            else:
                # half of them on the residential lines the fleet's proxies exit from
                prefixes = [5_000 + int(rng.integers(PREFIX_POOL))] if i % 2 else [4_000_000 + i]
                ips = [prefixes[0] * 256 + int(rng.integers(1, 255))]
                asn = [int(rng.integers(21, 40))]
            signature = []
            behaviour = rng.uniform(0, 1, 7)
            behaviour[5] = 0.0
            hour = rng.poisson(2.0, 24).astype(float)
            hour[int(rng.integers(8, 23))] += 10
        tokens.append(
            [
                _tok(0, device),
                _tok(1, stack),
                _tok(2, ips),
                _tok(3, prefixes),
                _tok(4, asn),
                _tok(5, signature),
            ]
        )
        rows.append(np.clip(behaviour, 0, 1))
        hours.append(hour)
    ids = [f"a{i}" for i in range(n)]
    snapshot = assemble_snapshot(
        1.8e9, ClusterParams(), ids, tokens, np.array(rows), np.array(hours), [None] * n
    )
    fleet = np.arange(n) < FLEET
    cgnat = (np.arange(n) >= FLEET) & (np.arange(n) < FLEET + CGNAT)
    return snapshot, fleet, cgnat


@pytest.fixture(scope="module")
def scenario() -> tuple[Snapshot, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    return population()


def _largest(model: ClusterModel, mask: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """The cluster holding most of the masked accounts, and how many it holds."""
    labels = model.labels[mask]
    labels = labels[labels != NOISE]
    if not len(labels):
        return NOISE, 0
    values, counts = np.unique(labels, return_counts=True)
    return int(values[np.argmax(counts)]), int(counts.max())


def test_a_large_uniform_fleet_is_one_cluster_and_the_cgnat_users_stay_out(scenario) -> None:
    """End to end: HDBSCAN clusters this fleet itself, but 5% of it exits through the CGNAT
    /24 where HDBSCAN also finds clusters of honest users; merging pieces by that address
    would put hundreds of them into the fleet's cluster (addresses do not merge)."""
    snapshot, fleet, cgnat = scenario
    model = fit_model(snapshot)
    label, held = _largest(model, fleet)
    assert held >= 0.9 * FLEET
    assert not (model.labels[~fleet] == label).any()  # no honest account in the fleet's cluster
    # no CGNAT user joins a cluster through the repair (only HDBSCAN's own clusters hold any)
    raw = np.asarray(model.clusterer.labels_)
    assert ((model.labels != NOISE) == (raw != NOISE))[cgnat].all()


def leaves(
    fleet: npt.NDArray[np.bool_], cgnat: npt.NDArray[np.bool_], seed: int = 1
) -> npt.NDArray[np.intp]:
    """HDBSCAN labels as leaf selection leaves a large fleet (docs/recluster.md): four small
    leaves hold 6% of it, the rest is noise; honest users form clusters of their own (some of
    the CGNAT users among them), most of them noise."""
    rng = np.random.default_rng(seed)
    labels = np.full(len(fleet), NOISE, dtype=np.intp)
    picked = rng.choice(np.flatnonzero(fleet), size=4 * 23, replace=False)
    labels[picked] = np.repeat(np.arange(4), 23)
    honest = rng.permutation(np.flatnonzero(~fleet & ~cgnat))[:400]
    labels[honest] = 4 + np.arange(len(honest)) // 20  # 20 clusters of 20
    labels[np.flatnonzero(cgnat)[:60]] = 24 + np.arange(60) // 20  # 3 clusters of 20
    return labels


def repair(raw: npt.NDArray[np.intp], snapshot: Snapshot) -> npt.NDArray[np.intp]:
    """What ``fit_model`` does after HDBSCAN: merge its fragments, then absorb noise."""
    groups = merge_fragments(raw, snapshot)
    merged = np.where(raw != NOISE, groups[np.maximum(raw, 0)], NOISE)
    return absorb_by_identifiers(merged, snapshot)


def test_leaf_fragments_of_a_fleet_claim_its_noise_but_not_the_cgnat_users(scenario) -> None:
    snapshot, fleet, cgnat = scenario
    raw = leaves(fleet, cgnat)
    labels = repair(raw, snapshot)
    fleet_labels = labels[fleet]
    assert (fleet_labels != NOISE).mean() >= 0.9
    assert len(np.unique(fleet_labels[fleet_labels != NOISE])) == 1  # one cluster
    assert not np.isin(labels[~fleet], np.unique(fleet_labels)).any()
    # honest clusters keep exactly their members; no honest noise (CGNAT or not) is absorbed
    assert (labels[~fleet] != NOISE).sum() == (raw[~fleet] != NOISE).sum()
    assert ((labels != NOISE) == (raw != NOISE))[cgnat].all()


def test_with_every_kind_held_to_beacon_min_share_the_fleet_stays_in_pieces(scenario) -> None:
    """The scenario reproduces the problem: with device ids and templates held, like
    addresses, to ``beacon_min_share`` of all their holders, the leaves (6% of the fleet)
    can neither merge nor claim the fleet's noise."""
    snapshot, fleet, cgnat = scenario
    strict = replace(snapshot.params, beacon_min_share_strong=snapshot.params.beacon_min_share)
    labels = repair(leaves(fleet, cgnat), replace(snapshot, params=strict))
    assert (labels[fleet] != NOISE).mean() < 0.2


def test_a_public_template_the_fleet_also_uses_does_not_pull_in_its_honest_users() -> None:
    """A device id or template passing only on the relaxed share may be popular outside the
    fleet: 600 honest accounts send the same public prompt template as a fleet whose leaves
    hold it. One such token alone does not join an account (two of one cluster's do)."""
    snapshot, fleet, cgnat = population(seed=9)
    public = (900 ^ KINDS[5][1]) & MASK  # the fleet's first template
    honest = np.flatnonzero(~fleet & ~cgnat)[:600]
    sigs = list(snapshot.signature_tokens)
    beacons = list(snapshot.beacon_tokens)
    for i in honest:
        sigs[i] = np.union1d(sigs[i], [public]).astype(np.uint64)
        beacons[i] = np.union1d(beacons[i], [public]).astype(np.uint64)
    df = snapshot.rarity.df(np.array([public], dtype=np.uint64))
    snapshot = replace(snapshot, signature_tokens=sigs, beacon_tokens=beacons)
    snapshot = replace(snapshot, rarity=_with_extra_holders(snapshot, public, len(honest)))
    assert snapshot.rarity.df(np.array([public], dtype=np.uint64))[0] >= df[0] + len(honest)
    raw = leaves(fleet, cgnat)
    labels = repair(raw, snapshot)
    assert (labels[fleet] != NOISE).mean() >= 0.9  # the fleet is still claimed (devices)
    fleet_label = np.unique(labels[fleet][labels[fleet] != NOISE])
    assert len(fleet_label) == 1
    assert not np.isin(labels[honest], fleet_label).any()  # no honest cluster merged in
    assert ((labels != NOISE) == (raw != NOISE))[honest].all()  # no honest user absorbed


def _with_extra_holders(snapshot: Snapshot, token: int, extra: int) -> Rarity:
    """The snapshot's rarity with ``extra`` more accounts holding ``token``."""
    rarity = snapshot.rarity
    at = int(np.searchsorted(rarity.tokens, np.uint64(token)))
    assert rarity.tokens[at] == token
    counts = rarity.counts.copy()
    counts[at] += extra
    return replace(rarity, counts=counts)
