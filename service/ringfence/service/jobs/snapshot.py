"""The driver's half of the two-phase snapshot: partition results → one ``Snapshot``.

Partitions computed each account's tokens and behaviour row; what needs every account at once
— the rarity of each identifier and the identity rows weighted by it — is the core's
``assemble_snapshot``, the same function the service's ``build_snapshot`` ends with. Accounts
are sorted by id, so every engine and every partitioning hands HDBSCAN the same matrix.
``tests/jobs/test_aggregate.py`` checks the result equals ``build_snapshot`` on the same
profiles, array for array.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ringfence.service.core.clustering import (
    Assignment,
    ClusterParams,
    Snapshot,
    assemble_snapshot,
)
from ringfence.service.core.features import BEHAVIOUR_NAMES, KINDS
from ringfence.service.jobs.aggregate import DAY, PartitionResult


@dataclass(frozen=True)
class Population:
    """Every account with events in the window (clustered or not), for the reports."""

    account_ids: list[str]
    daily: npt.NDArray[np.uint32]  # (n, days): events per UTC day
    first_day: int  # epoch day of column 0
    totals: npt.NDArray[np.int64]
    first_seen: npt.NDArray[np.float64]
    last_seen: npt.NDArray[np.float64]
    events: int

    def index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.account_ids)}


def _concat(results: Sequence[PartitionResult], name: str) -> npt.NDArray[np.generic]:
    return np.concatenate([getattr(r, name) for r in results])


def assemble(results: Sequence[PartitionResult], now: float, since: float,
             params: ClusterParams, previous: Mapping[str, Assignment]
             ) -> tuple[Snapshot, Population]:
    results = sorted(results, key=lambda r: r.index)
    kinds = len(KINDS)
    ids_all = _concat(results, "account_ids").astype(str)
    order = np.argsort(ids_all, kind="stable")
    counts = _concat(results, "token_counts").reshape(-1, kinds)
    flat = _concat(results, "tokens").astype(np.uint64)
    pieces = np.split(flat, np.cumsum(counts.ravel())[:-1]) if len(counts) else []
    by_account = [pieces[i * kinds:(i + 1) * kinds] for i in range(len(counts))]
    active = _concat(results, "active").astype(bool)
    behaviour = _concat(results, "behaviour").reshape(-1, len(BEHAVIOUR_NAMES))
    hours = _concat(results, "hours").reshape(-1, 24)

    chosen = [int(i) for i in order if active[i]]
    ids = [str(ids_all[i]) for i in chosen]
    snapshot = assemble_snapshot(
        now, params, ids, [by_account[i] for i in chosen],
        behaviour[chosen] if chosen else np.zeros((0, behaviour.shape[1])),
        hours[chosen], [a.cluster_id if (a := previous.get(i)) else None for i in ids],
        created_known=_concat(results, "created_known").astype(bool)[chosen])
    population = Population(
        account_ids=[str(ids_all[i]) for i in order],
        daily=_concat(results, "daily")[order].astype(np.uint32),
        first_day=int(since // DAY),
        totals=_concat(results, "totals")[order].astype(np.int64),
        first_seen=_concat(results, "first_seen")[order].astype(np.float64),
        last_seen=_concat(results, "last_seen")[order].astype(np.float64),
        events=sum(r.events for r in results),
    )
    return snapshot, population
