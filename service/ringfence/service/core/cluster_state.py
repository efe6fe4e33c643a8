"""The serving side of clustering: the current model, each account's cached assignment, the
accounts waiting to be placed, and when to refit. A known account's lookup is two dict reads.

Two things keep enforcement on a fleet from lagging or flapping between refits:
- **beacons**: an identifier that a risky cluster has (nearly) to itself links a request that
  carries it to that cluster at once (a few dict reads), before the account is placed;
- **hold**: a cluster found risky stays risky for ``ClusterPolicy.hold_hours`` across refits
  that keep its id, even when one fit measures it lower.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ringfence.service.core.cluster_profiles import ClusterAssessment, assess_cluster
from ringfence.service.core.clustering import (
    Assignment,
    Beacon,
    ClusterModel,
    ClusterParams,
    Snapshot,
    build_snapshot,
    fit_model,
    linked_by_beacons,
    predict,
)
from ringfence.service.core.model import ClusterContext
from ringfence.service.core.policy import ClusterPolicy
from ringfence.service.core.profiles import AccountProfile

_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class RefitSchedule:
    interval_s: float = 900.0  # refit at least this often
    min_gap_s: float = 60.0  # ... and never more often than this
    pending_threshold: int = 500  # refit early when this many accounts wait to be placed
    # accounts placed per approximate_predict call (their features are built on the serving
    # loop, ~50 µs each, so a batch is kept small enough not to stall requests)
    assign_batch: int = 128
    # accounts kept waiting at most: with no model yet (a replica before the first published
    # one) nothing is placed, and a flood of new accounts must not grow the queue without end.
    # The oldest are dropped: the next refit's snapshot includes them anyway.
    max_pending: int = 1_000_000
    # placements and beacon links cached between refits beyond the fitted accounts, at most
    # (a replica that never refits itself would otherwise grow them with every new account);
    # the oldest are dropped first and placed again on their next request
    max_cached: int = 1_000_000


class ClusterState:
    def __init__(self, params: ClusterParams, schedule: RefitSchedule,
                 policy: ClusterPolicy) -> None:
        self.params = params
        self.schedule = schedule
        self._policy = policy
        self.model: ClusterModel | None = None
        self._assessments: dict[str, ClusterAssessment] = {}
        self._assigned: dict[str, Assignment | None] = {}
        self._beacons: dict[int, Beacon] = {}  # token -> the risky cluster it links to
        # accounts linked to a risky cluster: by a beacon, or carried over (_carried_links)
        self._linked: dict[str, Assignment] = {}
        self._risky_at: dict[str, float] = {}  # cluster id -> last fit that found it risky
        self._pending: dict[str, None] = {}  # insertion-ordered set
        self._last_refit = -math.inf
        self.refits = 0

    # --- the per-request path: O(1) ---------------------------------------------------------
    def view(self, account_id: str, tokens: Iterable[int] = ()) -> ClusterContext | None:
        """The account's cluster: where it was placed, or a risky cluster one of ``tokens``
        (``features.request_tokens`` of the request) is a beacon of, whichever is riskier."""
        model = self.model
        if model is None:
            return None
        assignment = self._assigned.get(account_id)
        placed = self._context(model, assignment) if assignment is not None else None
        if placed is not None and self._counts(placed):
            return placed
        linked = self._linked.get(account_id)
        beacons = self._beacons
        if beacons and self._policy.beacon_probability > 0:
            cluster_id = linked_by_beacons(beacons, tokens)
            if cluster_id is not None:
                linked = Assignment(cluster_id, self._policy.beacon_probability)
                self._remember(self._linked, account_id, linked)
        if linked is not None:
            context = self._context(model, linked)
            if context is not None and (placed is None or self._counts(context)
                                        or context.risk > placed.risk):
                return context
        return placed

    def _remember(self, cache: dict[str, _V], account_id: str, value: _V) -> None:
        """Set (as the newest entry) and keep the cache within ``max_cached`` entries beyond
        the fitted accounts, dropping the oldest."""
        cache.pop(account_id, None)
        cache[account_id] = value
        model = self.model
        limit = self.schedule.max_cached + (len(model.account_ids) if model is not None else 0)
        while len(cache) > limit:
            del cache[next(iter(cache))]

    def _counted(self, assignment: Assignment) -> bool:
        """Whether a placement in the current model enters the account's score."""
        assessment = self._assessments.get(assignment.cluster_id)
        return (assessment is not None and assessment.risk >= self._policy.enforce_risk
                and assignment.probability >= self._policy.min_probability)

    def _as_link(self, assignment: Assignment) -> Assignment:
        policy = self._policy
        return Assignment(assignment.cluster_id, min(
            assignment.probability, max(policy.beacon_probability, policy.min_probability)))

    def _counts(self, context: ClusterContext) -> bool:
        """Whether the cluster enters the account's score (see scoring.with_cluster)."""
        return (context.risk >= self._policy.enforce_risk
                and context.probability >= self._policy.min_probability)

    def _context(self, model: ClusterModel, assignment: Assignment) -> ClusterContext | None:
        profile = model.clusters.get(assignment.cluster_id)
        assessment = self._assessments.get(assignment.cluster_id)
        if profile is None or assessment is None:
            return None
        return ClusterContext(
            cluster_id=profile.cluster_id, size=profile.size,
            probability=assignment.probability, risk=assessment.risk,
            reasons=assessment.reasons,
            daily_budget=max(1, round(self._policy.limit_multiplier
                                      * max(profile.baseline_daily_volume, 1.0))))

    def note(self, account_id: str, identity_changed: bool) -> None:
        """Queue an account for placement if it is new to the clustering or changed."""
        if identity_changed or account_id not in self._assigned:
            pending = self._pending
            pending[account_id] = None
            if len(pending) > self.schedule.max_pending:
                del pending[next(iter(pending))]

    # --- background work --------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._pending)

    def take_pending(self) -> list[str]:
        ids = []
        for account_id in self._pending:
            ids.append(account_id)
            if len(ids) >= self.schedule.assign_batch:
                break
        for account_id in ids:
            del self._pending[account_id]
        return ids

    def apply(self, model: ClusterModel, ids: list[str],
              assignments: list[Assignment | None]) -> None:
        """Record placements computed against ``model`` (dropped if a newer model is in)."""
        if model is not self.model:
            for account_id in ids:
                self._pending[account_id] = None
            return
        for account_id, assignment in zip(ids, assignments, strict=True):
            previous = self._assigned.get(account_id)
            # a re-placement from the feature vector alone (the account brought a new address
            # or prompt) must not undo what the fit found with its identifiers
            if (previous is not None and self._counted(previous)
                    and (assignment is None or not self._counted(assignment))
                    and account_id not in self._linked):
                self._remember(self._linked, account_id, self._as_link(previous))
            self._remember(self._assigned, account_id, assignment)

    def refit_due(self, now: float) -> bool:
        since = now - self._last_refit
        if since < self.schedule.min_gap_s:
            return False
        fitted = len(self.model.account_ids) if self.model is not None else 0
        if fitted + self.pending < 2 * self.params.min_cluster_size:
            return False  # too few accounts for any cluster: nothing to fit yet
        return since >= self.schedule.interval_s or self.pending >= \
            self.schedule.pending_threshold

    def snapshot(self, accounts: Iterable[tuple[str, AccountProfile]], now: float
                 ) -> Iterator[Snapshot | None]:
        self._last_refit = now
        # accounts linked by a beacon count as members, so the fleet's id carries over
        previous = {**self._linked,
                    **{k: v for k, v in self._assigned.items() if v is not None}}
        return build_snapshot(accounts, now, self.params, previous)

    def install(self, model: ClusterModel, policy: ClusterPolicy | None = None) -> None:
        """Swap a new model in. Accounts fitted as noise are cached as such; accounts that
        arrived during the fit stay pending and are placed against the new model."""
        if policy is not None:
            self._policy = policy
        policy = self._policy
        assessments = {cid: self._held(cid, assess_cluster(policy.weights, profile),
                                       model.fitted_at)
                       for cid, profile in model.clusters.items()}
        risky = {cid for cid, a in assessments.items() if a.risk >= policy.enforce_risk}
        self._risky_at = {cid: t for cid, t in self._risky_at.items() if cid in assessments}
        for cid in risky:
            self._risky_at[cid] = model.fitted_at
        # the device ids and templates that tie a risky cluster's group together link on
        # sight too (tied_members: they need only two holders, so a young fleet's templates
        # link before three of its accounts have sent each)
        beacons = {t: Beacon(cid, address=False)
                   for t, cid in getattr(model, "tying_tokens", {}).items() if cid in risky}
        beacons.update(model.beacons.beacons_for(
            np.array([cid in risky for cid in model.label_ids], dtype=bool), model.label_ids,
            model.params))
        assigned: dict[str, Assignment | None] = dict.fromkeys(model.account_ids)
        assigned.update(model.members)
        for account_id, previous in self._assigned.items():
            if account_id not in assigned and previous is not None:
                self._pending[account_id] = None  # placed before, not in this fit: re-place
        linked = self._carried_links(model, assessments, assigned)
        # One reference swap each; a Score running between them sees a consistent pair at
        # worst one refit old, because view() reads the model first and looks ids up in it.
        self._assessments = assessments
        self._beacons = beacons
        self._linked = linked
        self.model = model
        self._assigned = assigned
        self.refits += 1

    def _carried_links(self, model: ClusterModel, assessments: dict[str, ClusterAssessment],
                       assigned: dict[str, Assignment | None]) -> dict[str, Assignment]:
        """Links to risky clusters that outlive a refit. An account the previous model counted
        in a risky cluster (placed with enough membership, or linked by a beacon) stays
        linked to it while the cluster keeps its id and stays risky (``hold_hours`` at
        least), unless the new fit counts it somewhere: a fit leaves part of a fleet as
        noise or at its fringe each time, and its members must not drop in and out of
        enforcement with every refit."""
        old = self.model
        policy = self._policy
        if old is None:
            return {}
        previous: dict[str, Assignment] = {}
        for account_id, a in self._assigned.items():
            if a is not None and a.probability >= policy.min_probability:
                previous[account_id] = a
        previous.update(self._linked)
        out: dict[str, Assignment] = {}
        for account_id, a in previous.items():
            assessment = assessments.get(a.cluster_id)
            if assessment is None or assessment.risk < policy.enforce_risk:
                continue
            old_assessment = self._assessments.get(a.cluster_id)
            if old_assessment is None or old_assessment.risk < policy.enforce_risk:
                continue  # it was not counted before either
            now = assigned.get(account_id)
            if now is not None and now.probability >= policy.min_probability:
                # the new fit places it with confidence: that placement decides. (Placed in
                # the same cluster but untied, the link stays: its profile keeps only its
                # latest few prompts, so the template that tied it may have aged out.)
                continue
            out[account_id] = self._as_link(a)
        return out

    def _held(self, cluster_id: str, fresh: ClusterAssessment, fitted_at: float
              ) -> ClusterAssessment:
        """The fresh assessment, or the previous one while a risky cluster is on hold."""
        previous = self._assessments.get(cluster_id)
        risky_at = self._risky_at.get(cluster_id)
        if (previous is None or risky_at is None or previous.risk <= fresh.risk
                or fresh.risk >= self._policy.enforce_risk
                or fitted_at - risky_at > self._policy.hold_hours * 3600):
            return fresh
        return previous

    @property
    def beacons(self) -> int:
        """How many identifiers currently link requests to risky clusters."""
        return len(self._beacons)

    def assessment(self, cluster_id: str) -> ClusterAssessment | None:
        return self._assessments.get(cluster_id)

    def assignment(self, account_id: str) -> Assignment | None:
        return self._assigned.get(account_id)

    # --- synchronous driver (replays, tests) --------------------------------------------------
    def run_due(self, now: float, accounts: Callable[[], Iterable[tuple[str, AccountProfile]]],
                profile: Callable[[str], AccountProfile | None]) -> None:
        """Place pending accounts and refit if due, in this thread."""
        if self.refit_due(now):
            *_, snapshot = self.snapshot(accounts(), now)
            assert snapshot is not None  # the generator ends with the snapshot
            self.install(fit_model(snapshot))
        self.place_pending(now, profile)

    def place_pending(self, now: float, profile: Callable[[str], AccountProfile | None]
                      ) -> None:
        model = self.model
        while model is not None and self._pending:
            ids = self.take_pending()
            found = [(i, p) for i in ids if (p := profile(i)) is not None]
            placed = predict(model, [p for _, p in found], now)
            self.apply(model, [i for i, _ in found], placed)
