"""HDBSCAN clusters of accounts: fit on the active window, place new accounts between fits
with ``approximate_predict``, and keep cluster ids stable across refits.

``build_snapshot`` runs where the profiles live (cheap, incremental); ``fit_model`` is the CPU-
heavy part and runs in a worker process in the server (in-process in replays and tests); the
result is an immutable ``ClusterModel`` that ``ClusterState`` swaps in with one assignment.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import hdbscan
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ringfence.service.core.cluster_profiles import (
    CREATED_TOGETHER_MAX_DAYS,
    CREATED_TOGETHER_S,
    ClusterProfile,
    profile_cluster,
)
from ringfence.service.core.features import (
    BEACON_KINDS,
    BEHAVIOUR_NAMES,
    FEATURE_SCHEMA_VERSION,
    IDENTITY_DIMS,
    KINDS,
    Rarity,
    account_tokens,
    behaviour,
    feature_rows,
    identity_matrix,
    stack_only_devices,
)
from ringfence.service.core.fitting import fit_clusterer
from ringfence.service.core.profiles import DAY_MINUTES, AccountProfile, minute_of

F64Array = npt.NDArray[np.float64]
NOISE = -1


@dataclass(frozen=True, slots=True)
class ClusterParams:
    min_cluster_size: int = 10
    min_samples: int = 5
    window_days: float = 7.0  # accounts active in this window are clustered
    identity_scale: float = 4.0  # identity vs behaviour in the distance
    # "leaf" keeps fleets apart where "eom" tends to merge them with their neighbours into
    # one large cluster (measured on the evaluation scenarios, docs/clustering.md)
    selection: str = "leaf"
    core_dist_n_jobs: int = 1  # hdbscan's default 4 oversubscribes small machines
    stack_only_factor: float = 0.3  # a shared stack-only device key counts this much
    # A token becomes a beacon of risky clusters when at least this many accounts, and this
    # share of the clustered accounts that have it, are in risky clusters (BeaconTable).
    beacon_min_accounts: int = 3
    beacon_exclusivity: float = 0.9
    # ... and at least this share of *all* accounts with the token, clustered or not (HDBSCAN
    # leaves part of a fleet as noise; a carrier's CGNAT /24 is mostly unclustered users)
    beacon_min_share: float = 0.3
    # membership given to an account HDBSCAN left as noise that carries an identifier its
    # cluster has to itself (absorb_by_identifiers)
    absorbed_probability: float = 0.5
    # A member is tied to its cluster's operator when it shares a device id or a prompt
    # template (one the cluster has to itself) with other members, or was registered within
    # minutes of another member (a sign-up batch; only where the gateway sends creation
    # times), the ties chaining into a group of at least this many accounts (a company's few
    # backends share their own templates; a fleet's devices, templates and batches tie
    # dozens). Members placed by behaviour alone get ``untied_factor`` of their membership
    # probability, which keeps them below the default policy's ``min_probability`` (0.5):
    # a fleet's cluster does not enforce on its honest neighbours.
    tie_group_min: int = 5
    untied_factor: float = 0.4
    # how the HDBSCAN hierarchy is fitted (core/fitting.py): "hdbscan" (exact), "knn" (an
    # approximate k-NN graph, fast-hdbscan; hdbscan if that is not installed) or "auto" ("knn"
    # from ``knn_min_accounts`` accounts, where the exact fit gets slow; docs/benchmarks-
    # clustering.md compares them)
    backend: str = "auto"
    knn_min_accounts: int = 20_000
    knn_neighbors: int = 0  # neighbours per account in the k-NN graph; 0: max(3·min_samples, 15)
    seed: int = 0  # the k-NN graph's random seed (fits are repeatable)
    # ``beacon_min_share``, but when a refit repairs HDBSCAN's cut (merge_fragments,
    # absorb_by_identifiers), a device id or prompt template (not an address) needs only this
    # share of all its holders in the clusters: leaf selection keeps a few small leaves of a
    # large uniform fleet and leaves most of it as noise, so the leaves hold a few % of their
    # pool's device ids (docs/recluster.md, fleet recovery by scale). The unclustered holders
    # of a device id or template that no other cluster has are the cluster's to claim; an
    # address (a CGNAT /24 that hundreds of unclustered users share) keeps
    # ``beacon_min_share``. Last field: saved models pickle their params by field position,
    # and only refits read it.
    beacon_min_share_strong: float = 0.02


@dataclass(frozen=True, slots=True)
class Assignment:
    cluster_id: str
    probability: float


@dataclass
class Snapshot:
    """Everything a fit needs, as plain arrays (picklable to a worker process)."""

    now: float
    params: ClusterParams
    account_ids: list[str]
    features: F64Array
    rarity: Rarity
    device_tokens: list[npt.NDArray[np.uint64]]
    stack_only: list[npt.NDArray[np.bool_]]
    signature_tokens: list[npt.NDArray[np.uint64]]
    # the account's tokens of BEACON_KINDS (devices that are only a client stack left out)
    beacon_tokens: list[npt.NDArray[np.uint64]]
    hours: F64Array
    daily_volume: F64Array
    anonymized: F64Array
    age_days: F64Array
    regularity: F64Array
    previous: list[str | None]  # each account's cluster id in the previous model
    # whether the gateway sent each account's creation time (``age_days`` is otherwise the
    # time since its first request); None: unknown for all (sign-up batches are not used)
    created_known: npt.NDArray[np.bool_] | None = None


SNAPSHOT_SLICE = 25  # accounts read between two yields of build_snapshot


def build_snapshot(accounts: Iterable[tuple[str, AccountProfile]], now: float,
                   params: ClusterParams, previous: dict[str, Assignment],
                   ) -> Iterator[Snapshot | None]:
    """Yields None every ``SNAPSHOT_SLICE`` accounts (so a caller can give its event loop a
    turn; ~1 ms of work each), then the snapshot."""
    since = minute_of(now) - int(params.window_days * DAY_MINUTES)
    ids: list[str] = []
    tokens: list[list[npt.NDArray[np.uint64]]] = []
    rows: list[list[float]] = []
    hours: list[list[int]] = []
    prev: list[str | None] = []
    known: list[bool] = []
    for n, (account_id, p) in enumerate(accounts, 1):
        if minute_of(p.last_seen) < since:
            continue
        ids.append(account_id)
        account = account_tokens(p, since)
        tokens.append(account)
        rows.append(behaviour(p, now))
        hours.append(list(p.hours))
        a = previous.get(account_id)
        prev.append(a.cluster_id if a else None)
        known.append(p.created_at is not None)
        if n % SNAPSHOT_SLICE == 0:
            yield None
    yield None  # the vectorised tail below takes ~1 s per 100k accounts
    yield assemble_snapshot(now, params, ids, tokens,
                            np.array(rows, dtype=np.float64), np.array(hours, dtype=np.float64),
                            prev, created_known=np.array(known, dtype=bool))


_KIND_NAMES = [k for k, *_ in KINDS]
_BEACON_INDEX = [_KIND_NAMES.index(k) for k in BEACON_KINDS]
_DEVICE_KIND = _KIND_NAMES.index("device")
_SIGNATURE_KIND = _KIND_NAMES.index("signature")


def assemble_snapshot(now: float, params: ClusterParams, ids: list[str],
                      tokens: list[list[npt.NDArray[np.uint64]]], behaviour_rows: F64Array,
                      hours: F64Array, previous: list[str | None], *,
                      created_known: npt.NDArray[np.bool_] | None = None) -> Snapshot:
    """The part of a snapshot that needs every account at once (identifier rarity and the
    identity rows weighted by it), from per-account tokens (per kind, as ``account_tokens``
    gives them), behaviour rows and hour-of-day counts. The batch job calls this too, so the
    service and the job hand HDBSCAN the same matrix for the same accounts."""
    rarity = Rarity.fit(tokens)
    ident = identity_matrix(tokens, rarity)
    beh = behaviour_rows.reshape(-1, len(BEHAVIOUR_NAMES))
    device_kind = _KIND_NAMES.index("device")
    signature_kind = _KIND_NAMES.index("signature")
    return Snapshot(
        now=now, params=params, account_ids=ids,
        features=np.hstack([ident, beh]), rarity=rarity,
        device_tokens=[t[device_kind] for t in tokens],
        stack_only=[stack_only_devices(t) for t in tokens],
        signature_tokens=[t[signature_kind] for t in tokens],
        beacon_tokens=[np.concatenate([t[k][~stack_only_devices(t)] if k == device_kind
                                       else t[k] for k in _BEACON_INDEX]) for t in tokens],
        hours=hours.reshape(-1, 24),
        daily_volume=np.expm1(beh[:, 0] * np.log1p(1000)) if len(beh) else np.zeros(0),
        anonymized=beh[:, 5] if len(beh) else np.zeros(0),
        age_days=np.expm1(beh[:, 6] * np.log1p(90)) if len(beh) else np.zeros(0),
        regularity=beh[:, 3] if len(beh) else np.zeros(0),
        previous=previous,
        created_known=created_known,
    )


def scaled(features: F64Array, params: ClusterParams) -> F64Array:
    """The space HDBSCAN sees: identity dims weighted against behaviour dims."""
    out = features.copy()
    out[:, :IDENTITY_DIMS] *= params.identity_scale
    return out


@dataclass(frozen=True, slots=True)
class Beacon:
    """An identifier token that links to a cluster on sight."""

    cluster_id: str
    address: bool  # an IP or a /24 rather than a device id or a prompt template


def linked_by_beacons(beacons: dict[int, Beacon], tokens: Iterable[int]) -> str | None:
    """The cluster an account's (or one request's) tokens link to, if any.

    One device id or prompt template that a cluster has to itself is one operator's. One
    address is not: a residential proxy exit is some honest subscriber's line, and the /24
    around it holds their neighbours, so an address links only together with a second
    address of the same cluster (its IP and its /24, or two of its /24s). The cluster with
    the most strong tokens wins, then the one with the most addresses."""
    hits = [b for t in tokens if (b := beacons.get(t)) is not None]
    if not hits:  # the common case on the per-request path: no Counter built
        return None
    strong = Counter(b.cluster_id for b in hits if not b.address)
    if strong:
        return strong.most_common(1)[0][0]
    cluster_id, n = Counter(b.cluster_id for b in hits).most_common(1)[0]
    return cluster_id if n >= 2 else None


@dataclass(frozen=True)
class BeaconTable:
    """For identifier tokens shared inside clusters: how many members of each cluster have
    them. Which tokens become beacons depends on which clusters are risky, which the serving
    side decides with its policy (``beacons_for``)."""

    tokens: npt.NDArray[np.uint64]  # sorted; a token repeats once per cluster that has it
    clusters: npt.NDArray[np.intp]  # index into the model's label_ids
    counts: npt.NDArray[np.int64]  # members of that cluster with the token
    df: npt.NDArray[np.int64]  # accounts with the token at refit, clustered or not
    # True for an address token (an IP or a /24), False for a device id or a prompt template;
    # None in models saved before it was kept (every token then counts as an address)
    address: npt.NDArray[np.bool_] | None = None

    @classmethod
    def empty(cls) -> BeaconTable:
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.intp), np.zeros(0, np.int64),
                   np.zeros(0, np.int64), np.zeros(0, np.bool_))

    def beacons_for(self, risky: npt.NDArray[np.bool_], cluster_ids: tuple[str, ...],
                    params: ClusterParams, strong_min_share: float | None = None
                    ) -> dict[int, Beacon]:
        """Tokens that risky clusters have (nearly) to themselves: at least
        ``beacon_exclusivity`` of the clustered accounts with the token, and at least
        ``beacon_min_share`` of all accounts with it, are in risky clusters; each links to the
        risky cluster holding most of them (a fleet split into clusters links through all).
        ``strong_min_share``, if given, replaces ``beacon_min_share`` for device ids and
        templates (the refit's repair, ``absorb_by_identifiers``; serving leaves it out).
        See ``linked_by_beacons`` for how a request's tokens use them."""
        if not len(self.tokens) or not risky.any():
            return {}
        starts = np.flatnonzero(np.r_[True, self.tokens[1:] != self.tokens[:-1]])
        clustered = np.add.reduceat(self.counts, starts)
        risky_counts = np.where(risky[self.clusters], self.counts, 0)
        in_risky = np.add.reduceat(risky_counts, starts)
        address = self.address if self.address is not None else np.ones(len(self.tokens), bool)
        min_share = np.where(address[starts], params.beacon_min_share,
                             params.beacon_min_share if strong_min_share is None
                             else strong_min_share)
        out: dict[int, Beacon] = {}
        for g, start in enumerate(starts):
            if (in_risky[g] < params.beacon_min_accounts
                    or in_risky[g] < params.beacon_exclusivity * clustered[g]
                    or in_risky[g] < min_share[g] * self.df[start]):
                continue
            stop = starts[g + 1] if g + 1 < len(starts) else len(self.tokens)
            best = start + int(np.argmax(risky_counts[start:stop]))
            out[int(self.tokens[start])] = Beacon(cluster_ids[self.clusters[best]],
                                                  bool(address[start]))
        return out


@dataclass(frozen=True)
class ClusterModel:
    """One fitted clustering, immutable once built."""

    version: str
    fitted_at: float
    fit_seconds: float
    params: ClusterParams
    rarity: Rarity
    clusterer: hdbscan.HDBSCAN | None  # None when there were too few accounts to fit
    label_ids: tuple[str, ...]  # cluster index -> stable cluster id
    clusters: dict[str, ClusterProfile]
    members: dict[str, Assignment]  # every account in the fit that landed in a cluster
    account_ids: tuple[str, ...]  # the fitted accounts, in training-row order
    labels: npt.NDArray[np.intp]  # each fitted account's cluster index (-1: noise)
    noise_accounts: int
    schema_version: int = FEATURE_SCHEMA_VERSION
    lineage: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # which clusters share which identifier tokens (namespaced, see features.request_tokens);
    # the serving side turns it into beacons once it knows which clusters are risky
    beacons: BeaconTable = field(default_factory=BeaconTable.empty)
    # HDBSCAN label -> cluster index (fragments of one fleet are merged, see merge_fragments)
    label_groups: tuple[int, ...] = ()
    # device ids and templates that tie a cluster's members together (token -> cluster id):
    # an account placed between refits is tied if it has one of its cluster's (tied_members)
    tying_tokens: dict[int, str] = field(default_factory=dict)
    # ... or was registered within CREATED_TOGETHER_S of a tied member (cluster id -> sorted
    # registration times of its tied members)
    tied_created: dict[str, F64Array] = field(default_factory=dict)

    def members_of(self, cluster_id: str) -> list[str]:
        """The accounts fitted into a cluster, in training order."""
        if cluster_id not in self.label_ids:
            return []
        label = self.label_ids.index(cluster_id)
        return [self.account_ids[i] for i in np.flatnonzero(self.labels == label)]

    def nearest_members(self, cluster_id: str, row: F64Array, k: int
                        ) -> list[tuple[str, float]]:
        """The ``k`` fitted members of a cluster closest to a feature row (scaled space)."""
        if self.clusterer is None or cluster_id not in self.label_ids:
            return []
        label = self.label_ids.index(cluster_id)
        idx = np.flatnonzero(self.labels == label)
        train = np.asarray(self.clusterer._raw_data)[idx]  # already in the scaled space
        point = scaled(row.reshape(1, -1), self.params)[0]
        distances = np.linalg.norm(train - point, axis=1)
        order = np.argsort(distances, kind="stable")[:k]
        return [(self.account_ids[idx[i]], float(distances[i])) for i in order]


def _match_ids(labels: npt.NDArray[np.intp], previous: list[str | None], n_labels: int
               ) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """Stable ids: a new cluster keeps the id of the old cluster it shares most members with
    (if they overlap by at least half of either), largest overlaps first; others get new ids.
    Lineage lists every old cluster that gave a new one at least 10% of its members."""
    old_sizes = Counter(p for p in previous if p is not None)
    overlaps: list[tuple[int, int, str]] = []
    parents: dict[int, tuple[str, ...]] = {}
    for label in range(n_labels):
        idx = np.flatnonzero(labels == label)
        counts = Counter(previous[i] for i in idx if previous[i] is not None)
        parents[label] = tuple(sorted(o for o, c in counts.items() if c >= 0.1 * len(idx)))
        for old, c in counts.items():
            if c >= 0.5 * len(idx) or c >= 0.5 * old_sizes[old]:
                overlaps.append((c, label, old))
    ids: list[str | None] = [None] * n_labels
    taken: set[str] = set()
    for _, label, old in sorted(overlaps, key=lambda x: (-x[0], x[1], x[2])):
        if ids[label] is None and old not in taken:
            ids[label] = old
            taken.add(old)
    final = [i if i is not None else f"c-{uuid.uuid4().hex[:12]}" for i in ids]
    return final, {final[label]: parents[label] for label in range(n_labels)}


def beacon_table(labels: npt.NDArray[np.intp], snapshot: Snapshot) -> BeaconTable:
    """Count, per (token, cluster), the members that have the token (tokens on fewer than
    ``beacon_min_accounts`` accounts are left out: they could never be beacons)."""
    clustered = np.flatnonzero(labels != NOISE)
    arrays = [snapshot.beacon_tokens[i] for i in clustered]
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, np.uint64)
    if not len(tokens):
        return BeaconTable.empty()
    owner = np.repeat(labels[clustered], [len(a) for a in arrays])
    # an account's tokens are distinct (sets, kinds salted apart): count accounts per pair
    order = np.lexsort((owner, tokens))
    tokens, owner = tokens[order], owner[order]
    starts = np.flatnonzero(np.r_[True, (tokens[1:] != tokens[:-1]) | (owner[1:] != owner[:-1])])
    counts = np.diff(np.r_[starts, len(tokens)])
    tokens, owner = tokens[starts], owner[starts]
    df = snapshot.rarity.df(tokens)
    keep = df >= snapshot.params.beacon_min_accounts
    tokens = tokens[keep]
    # kinds are salted apart, so a token that is some account's device id or template is one
    strong = [d[~so] for d, so in zip(snapshot.device_tokens, snapshot.stack_only, strict=True)]
    strong += snapshot.signature_tokens
    strong_tokens = np.concatenate(strong) if strong else np.zeros(0, np.uint64)
    return BeaconTable(tokens, owner[keep].astype(np.intp), counts[keep].astype(np.int64),
                       df[keep].astype(np.int64), ~np.isin(tokens, strong_tokens))


# a token held by more clusters than this is popular, not one fleet's pieces
MAX_MERGE_PIECES = 32


def merge_fragments(labels: npt.NDArray[np.intp], snapshot: Snapshot) -> npt.NDArray[np.intp]:
    """HDBSCAN label -> cluster index, merging clusters that are pieces of one fleet.

    Leaf selection keeps fleets apart from their neighbours but may cut one homogeneous fleet
    into pieces. Pieces that hold (nearly) all the clustered accounts with a device id or a
    prompt template, each at least ``beacon_min_accounts`` of them, and together at least
    ``beacon_min_share_strong`` of all its holders (the rest is HDBSCAN's noise), link; two
    pieces linked by at least two such tokens are one operator's and become one cluster.
    Addresses do not merge: a CGNAT /24 or a residential proxy's exit is shared by honest
    clusters and fleets alike."""
    n_labels = int(labels.max()) + 1 if len(labels) else 0
    parent = list(range(n_labels))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    table = beacon_table(labels, snapshot)
    params = snapshot.params
    # clusters joined by a qualifying token, per pair: one token alone may be a public prompt
    # template that honest clusters send too; two distinct ones (a fleet's pieces share its
    # device pool and templates) make the pair one operator's
    links: Counter[tuple[int, int]] = Counter()
    if len(table.tokens):
        starts = np.flatnonzero(np.r_[True, table.tokens[1:] != table.tokens[:-1]])
        ends = np.r_[starts[1:], len(table.tokens)]
        for start, stop in zip(starts, ends, strict=True):
            if stop - start < 2:
                continue
            counts = table.counts[start:stop]
            big = counts >= params.beacon_min_accounts
            if table.address is None or table.address[start]:
                continue  # a CGNAT /24 is many operators' (honest clusters and a fleet's)
            held = counts[big].sum()
            if (2 <= big.sum() <= MAX_MERGE_PIECES
                    and held >= params.beacon_exclusivity * counts.sum()
                    and held >= params.beacon_min_share_strong * table.df[start]):
                pieces = sorted(int(c) for c in table.clusters[start:stop][big])
                links.update(itertools.combinations(pieces, 2))
    for (a, b), n in links.items():
        if n >= 2:
            parent[find(b)] = find(a)
    roots = [find(x) for x in range(n_labels)]
    index = {r: i for i, r in enumerate(dict.fromkeys(roots))}
    return np.array([index[r] for r in roots], dtype=np.intp)


def absorb_by_identifiers(labels: npt.NDArray[np.intp], snapshot: Snapshot
                          ) -> npt.NDArray[np.intp]:
    """Labels with noise accounts joined to the cluster that has one of their identifiers
    (beacon kinds) to itself, as ``BeaconTable.beacons_for`` would link their requests:
    HDBSCAN leaves part of a tight fleet as noise, but one device id or template is one
    operator's. A device id or template needs ``beacon_min_share_strong`` of its holders in
    the cluster (leaf selection may leave 90% of a large fleet as noise), an address
    ``beacon_min_share``; either way the cluster must hold ``beacon_exclusivity`` of its
    clustered holders."""
    table = beacon_table(labels, snapshot)
    if not len(table.tokens):
        return labels
    n_clusters = int(labels.max()) + 1
    owners = table.beacons_for(np.ones(n_clusters, dtype=bool),
                               tuple(str(i) for i in range(n_clusters)), snapshot.params,
                               strong_min_share=snapshot.params.beacon_min_share_strong)
    # every cluster counts as risky here, so a token spread over many clusters (a CGNAT /24
    # with honest clusters on it) would pass as the largest one's: the owner must hold it
    # (nearly) alone
    starts = np.flatnonzero(np.r_[True, table.tokens[1:] != table.tokens[:-1]])
    top = np.maximum.reduceat(table.counts, starts)
    alone = top >= snapshot.params.beacon_exclusivity * np.add.reduceat(table.counts, starts)
    owned = set(table.tokens[starts[alone]].tolist())
    owners = {t: b for t, b in owners.items() if t in owned}
    if not owners:
        return labels
    # A token that passes only on the relaxed share may be popular outside the cluster (a
    # public prompt template, a placeholder device id held by thousands of noise accounts):
    # one such token alone does not join an account, two of one cluster's do (a fleet
    # account holds several of its pool's devices, or a device and a template).
    strict = table.beacons_for(np.ones(n_clusters, dtype=bool),
                               tuple(str(i) for i in range(n_clusters)), snapshot.params)
    firm = {t: b for t, b in owners.items() if t in strict}
    relaxed = {t: b for t, b in owners.items() if t not in strict}
    out = labels.copy()
    for i in np.flatnonzero(labels == NOISE):
        tokens = snapshot.beacon_tokens[i].tolist()
        owner = linked_by_beacons(firm, tokens)
        if owner is None and relaxed:
            votes = Counter(b.cluster_id for t in tokens if (b := relaxed.get(t)) is not None)
            if votes:
                best, n = votes.most_common(1)[0]
                owner = best if n >= 2 else None
        if owner is not None:
            out[i] = int(owner)
    return out


def _strong_tokens(snapshot: Snapshot, i: int) -> npt.NDArray[np.uint64]:
    """An account's device ids (not stack-only keys) and prompt templates."""
    return np.concatenate([snapshot.device_tokens[i][~snapshot.stack_only[i]],
                           snapshot.signature_tokens[i]])


def created_times(snapshot: Snapshot) -> F64Array:
    """Each account's registration time (epoch seconds), NaN where it is not known or the
    account is older than ``CREATED_TOGETHER_MAX_DAYS`` (its encoded age is coarse)."""
    created = snapshot.now - snapshot.age_days * 86400.0
    known = snapshot.created_known
    usable = snapshot.age_days < CREATED_TOGETHER_MAX_DAYS
    if known is None:
        usable = np.zeros(len(created), dtype=bool)
    else:
        usable &= known
    return np.where(usable, created, np.nan)


def _batch_edges(labels: npt.NDArray[np.intp], snapshot: Snapshot
                 ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Pairs of members of one cluster registered within ``CREATED_TOGETHER_S`` of each
    other (consecutive in registration order: a batch chains)."""
    created = created_times(snapshot)
    members = np.flatnonzero((labels != NOISE) & ~np.isnan(created))
    if len(members) < 2:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    order = members[np.lexsort((created[members], labels[members]))]
    same = labels[order[1:]] == labels[order[:-1]]
    close = np.diff(created[order]) <= CREATED_TOGETHER_S
    pick = np.flatnonzero(same & close)
    return order[pick].astype(np.intp), order[pick + 1].astype(np.intp)


def tied_members(labels: npt.NDArray[np.intp], snapshot: Snapshot
                 ) -> tuple[npt.NDArray[np.bool_], dict[int, int]]:
    """Which clustered accounts are tied to their cluster's operator (see
    ``ClusterParams.tie_group_min``), and the tying tokens of those groups (token -> cluster
    index), with which accounts placed between refits are checked."""
    n = len(labels)
    tied = np.zeros(n, dtype=bool)
    clustered = np.flatnonzero(labels != NOISE)
    arrays = [_strong_tokens(snapshot, int(i)) for i in clustered]
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, np.uint64)
    batch_a, batch_b = _batch_edges(labels, snapshot)
    if not len(tokens) and not len(batch_a):
        return tied, {}
    owner = np.repeat(clustered, [len(a) for a in arrays]).astype(np.intp)
    label = labels[owner]
    order = np.lexsort((owner, label, tokens))
    tokens, owner, label = tokens[order], owner[order], label[order]
    starts = np.flatnonzero(np.r_[True, (tokens[1:] != tokens[:-1])
                                  | (label[1:] != label[:-1])])
    counts = np.diff(np.r_[starts, len(tokens)])
    df = snapshot.rarity.df(tokens[starts])
    tying = (counts >= 2) & (counts >= 0.5 * df)
    group = np.repeat(np.arange(len(starts)), counts)
    keep = tying[group] if len(tokens) else np.zeros(0, dtype=bool)
    if not keep.any() and not len(batch_a):
        return tied, {}
    # an edge from every holder of a tying token to its first holder in the cluster, and
    # between members registered in one batch
    first = owner[starts][group] if len(tokens) else owner
    rows = np.r_[owner[keep], batch_a]
    cols = np.r_[first[keep], batch_b]
    graph = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component[clustered], minlength=n)
    holders = np.unique(rows)
    tied[holders] = sizes[component[holders]] >= snapshot.params.tie_group_min
    tying_tokens = {int(tokens[starts[g]]): int(label[starts[g]])
                    for g in np.flatnonzero(tying) if tied[owner[starts[g]]]}
    return tied, tying_tokens


def _tied_created(labels: npt.NDArray[np.intp], tied: npt.NDArray[np.bool_],
                  snapshot: Snapshot, ids: list[str]) -> dict[str, F64Array]:
    created = created_times(snapshot)
    use = tied & ~np.isnan(created)
    return {ids[c]: np.sort(created[use & (labels == c)]) for c in np.unique(labels[use])}


def _registered_with(times: F64Array | None, created: float | None) -> bool:
    if times is None or not len(times) or created is None:
        return False
    i = int(np.searchsorted(times, created))
    near = [times[j] for j in (i - 1, i) if 0 <= j < len(times)]
    return any(abs(t - created) <= CREATED_TOGETHER_S for t in near)


def fit_model(snapshot: Snapshot) -> ClusterModel:
    """Fit HDBSCAN on a snapshot and profile its clusters (CPU-heavy: run off the loop)."""
    started = time.perf_counter()
    params = snapshot.params
    n = len(snapshot.account_ids)
    version = f"m-{int(snapshot.now)}-{uuid.uuid4().hex[:6]}"
    if n < max(params.min_cluster_size * 2, params.min_samples + 1):
        return ClusterModel(version=version, fitted_at=snapshot.now, fit_seconds=0.0,
                            params=params, rarity=snapshot.rarity, clusterer=None, label_ids=(),
                            clusters={}, members={}, account_ids=tuple(snapshot.account_ids),
                            labels=np.full(n, NOISE, dtype=np.intp), noise_accounts=n)
    clusterer = fit_clusterer(scaled(snapshot.features, params), params)
    raw = np.asarray(clusterer.labels_, dtype=np.intp)
    groups = merge_fragments(raw, snapshot)
    merged = np.where(raw != NOISE, groups[np.maximum(raw, 0)], NOISE) if len(groups) else raw
    labels = absorb_by_identifiers(merged, snapshot)
    probabilities = np.asarray(clusterer.probabilities_, dtype=np.float64).copy()
    probabilities[labels != merged] = params.absorbed_probability
    tied, tying_tokens = tied_members(labels, snapshot)
    # accounts absorbed by an identifier are tied by construction
    untied = (labels != NOISE) & ~tied & (labels == merged)
    n_labels = int(groups.max()) + 1 if len(groups) else 0
    ids, lineage = _match_ids(labels, snapshot.previous, n_labels)
    known = snapshot.created_known
    registered_age = (np.where(known, snapshot.age_days, np.inf) if known is not None
                      else np.full(n, np.inf))
    network_tokens = [t[np.isin(t, np.r_[snapshot.device_tokens[i],
                                        snapshot.signature_tokens[i]], invert=True)]
                      for i, t in enumerate(snapshot.beacon_tokens)]
    clusters: dict[str, ClusterProfile] = {}
    for label in range(n_labels):
        members = np.flatnonzero(labels == label)
        clusters[ids[label]] = profile_cluster(
            ids[label], members, device_tokens=snapshot.device_tokens,
            stack_only=snapshot.stack_only, global_df=snapshot.rarity.df,
            stack_only_factor=params.stack_only_factor,
            signature_tokens=snapshot.signature_tokens, hours=snapshot.hours,
            daily_volume=snapshot.daily_volume, anonymized=snapshot.anonymized,
            age_days=snapshot.age_days, regularity=snapshot.regularity,
            probabilities=probabilities, fitted_at=snapshot.now, lineage=lineage[ids[label]],
            registered_age_days=registered_age, network_tokens=network_tokens)
    probabilities[untied] *= params.untied_factor
    members = {snapshot.account_ids[i]: Assignment(ids[label], round(float(probabilities[i]), 4))
               for i, label in enumerate(labels) if label != NOISE}
    return ClusterModel(
        version=version, fitted_at=snapshot.now, fit_seconds=time.perf_counter() - started,
        params=params, rarity=snapshot.rarity, clusterer=clusterer, label_ids=tuple(ids),
        clusters=clusters, members=members, account_ids=tuple(snapshot.account_ids),
        labels=np.asarray(labels, dtype=np.intp), noise_accounts=int(np.sum(labels == NOISE)),
        lineage=lineage,
        # only tied members' identifiers link on sight: a company's backends in a fleet's
        # cluster must not make their own templates and NAT address beacons of it
        beacons=beacon_table(np.where(untied, NOISE, labels).astype(np.intp), snapshot),
        label_groups=tuple(int(g) for g in groups),
        tying_tokens={t: ids[c] for t, c in tying_tokens.items()},
        tied_created=_tied_created(labels, tied, snapshot, ids))


def predict(model: ClusterModel, profiles: list[AccountProfile], now: float
            ) -> list[Assignment | None]:
    """Place accounts into the model's clusters without refitting (None: noise), with their
    ties checked (``tie_placements``)."""
    placed = predict_rows(model, feature_rows(profiles, now, model.rarity,
                                              model.params.window_days))
    return tie_placements(model, profiles, placed, now)


def tie_placements(model: ClusterModel, profiles: list[AccountProfile],
                   placed: list[Assignment | None], now: float) -> list[Assignment | None]:
    """Placements from ``predict_rows`` checked against the fit's ties, as the fit checks its
    members: an account placed in a cluster whose tying device ids and templates it does not
    have, and that was not registered with the cluster's tied members, keeps
    ``untied_factor`` of its membership; one that is noise by its vector but has a cluster's
    tying device id or template is absorbed into it. Reads the live profiles (run it where
    they are owned, like ``feature_rows``)."""
    # models saved before ties were kept have none: leave their placements as they are
    tying = getattr(model, "tying_tokens", None)
    if tying is None:
        return placed
    since = minute_of(now) - int(model.params.window_days * DAY_MINUTES)
    tied_created = getattr(model, "tied_created", {})
    young = now - CREATED_TOGETHER_MAX_DAYS * 86400.0
    out: list[Assignment | None] = []
    for p, a in zip(profiles, placed, strict=True):
        tokens = account_tokens(p, since)
        strong = np.concatenate([tokens[_DEVICE_KIND][~stack_only_devices(tokens)],
                                 tokens[_SIGNATURE_KIND]])
        ties = Counter(c for t in strong.tolist() if (c := tying.get(t)) is not None)
        if a is None and ties:
            a = Assignment(ties.most_common(1)[0][0], model.params.absorbed_probability)
        elif a is not None and a.cluster_id not in ties and not (
                p.created_at is not None and p.created_at >= young
                and _registered_with(tied_created.get(a.cluster_id), p.created_at)):
            a = Assignment(a.cluster_id, round(a.probability * model.params.untied_factor, 4))
        out.append(a)
    return out


def predict_rows(model: ClusterModel, rows: F64Array) -> list[Assignment | None]:
    """``predict`` for feature rows already built (this part may run in another thread: it
    reads only the immutable model)."""
    if model.clusterer is None or not model.label_ids or not len(rows):
        return [None] * len(rows)
    labels, probabilities = hdbscan.approximate_predict(model.clusterer,
                                                        scaled(rows, model.params))
    groups = model.label_groups
    return [Assignment(model.label_ids[groups[label]], round(float(prob), 4))
            if label != NOISE else None
            for label, prob in zip(labels, probabilities, strict=True)]
