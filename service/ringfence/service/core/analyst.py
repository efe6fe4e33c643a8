"""Read-side questions an analyst asks about clusters and accounts (the cluster RPCs)."""

from __future__ import annotations

from dataclasses import dataclass

from ringfence.service.core.cluster_profiles import ClusterAssessment, ClusterProfile
from ringfence.service.core.cluster_state import ClusterState
from ringfence.service.core.clustering import ClusterParams
from ringfence.service.core.errors import FieldViolation, InvalidInput, NotFound
from ringfence.service.core.features import FEATURE_NAMES, feature_rows
from ringfence.service.core.labels import LabelBook
from ringfence.service.core.model import AccountSummary, Decision, LabelValue
from ringfence.service.core.policy import Policy
from ringfence.service.core.ports import ProfileStore


@dataclass(frozen=True, slots=True)
class ClusterReport:
    profile: ClusterProfile
    assessment: ClusterAssessment
    label: LabelValue | None
    daily_budget: int
    enforced: bool


@dataclass(frozen=True, slots=True)
class Explanation:
    summary: AccountSummary
    features: tuple[tuple[str, float], ...]
    cluster: ClusterReport | None
    probability: float
    nearest: tuple[tuple[str, float], ...]
    last_decision: Decision | None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    enabled: bool
    version: str
    fitted_at: float
    fit_seconds: float
    accounts: int
    clusters: int
    noise_accounts: int
    pending: int
    params: ClusterParams | None


class Analyst:
    def __init__(self, clusters: ClusterState | None, store: ProfileStore, labels: LabelBook,
                 policy: Policy) -> None:
        self._clusters = clusters
        self._store = store
        self._labels = labels
        self.policy = policy

    def _report(self, cluster_id: str) -> ClusterReport | None:
        state = self._clusters
        model = state.model if state is not None else None
        if state is None or model is None:
            return None
        profile = model.clusters.get(cluster_id)
        assessment = state.assessment(cluster_id)
        if profile is None or assessment is None:
            return None
        label = self._labels.cluster(cluster_id)
        rules = self.policy.cluster
        enforced = label is LabelValue.ABUSIVE or (
            label is not LabelValue.BENIGN and assessment.risk >= rules.enforce_risk)
        budget = max(1, round(rules.limit_multiplier * max(profile.baseline_daily_volume, 1.0)))
        return ClusterReport(profile, assessment, label, budget, enforced)

    def cluster(self, cluster_id: str, sample: int) -> tuple[ClusterReport, list[str]]:
        report = self._report(cluster_id)
        if report is None or self._clusters is None or self._clusters.model is None:
            raise NotFound(f"cluster {cluster_id!r} is not in the current model")
        return report, self._clusters.model.members_of(cluster_id)[:sample]

    def list_clusters(self, min_risk: float, offset: int, limit: int, token_version: str | None
                      ) -> tuple[list[ClusterReport], int | None, str]:
        """A page of clusters, riskiest first; returns (page, next offset or None, version)."""
        model = self._clusters.model if self._clusters is not None else None
        if model is None:
            return [], None, ""
        if token_version is not None and token_version != model.version:
            raise InvalidInput([FieldViolation(
                "page_token", f"belongs to model {token_version}; the clusters were refitted "
                              f"(now {model.version}): start again without a token")])
        reports = [r for cid in model.clusters if (r := self._report(cid)) is not None
                   and r.assessment.risk >= min_risk]
        reports.sort(key=lambda r: (-r.assessment.risk, -r.profile.size, r.profile.cluster_id))
        page = reports[offset:offset + limit]
        more = offset + limit if offset + limit < len(reports) else None
        return page, more, model.version

    def explain(self, account_id: str, nearest: int, now: float) -> Explanation:
        summary = self._store.account_summary(account_id, now)
        profile = self._store.account_profile(account_id)
        if summary is None or profile is None:
            raise NotFound(f"account {account_id!r} has no live profile")
        state = self._clusters
        model = state.model if state is not None else None
        features: tuple[tuple[str, float], ...] = ()
        report = None
        probability = 0.0
        neighbours: tuple[tuple[str, float], ...] = ()
        if state is not None and model is not None:
            row = feature_rows([profile], now, model.rarity, model.params.window_days)[0]
            features = tuple(zip(FEATURE_NAMES, (round(float(v), 6) for v in row),
                                 strict=True))
            assignment = state.assignment(account_id)
            if assignment is not None:
                report = self._report(assignment.cluster_id)
                probability = assignment.probability
                neighbours = tuple((a, round(d, 6)) for a, d in model.nearest_members(
                    assignment.cluster_id, row, nearest + 1) if a != account_id)[:nearest]
        return Explanation(summary, features, report, probability, neighbours,
                           self._store.last_decision(account_id))

    def model_info(self) -> ModelInfo:
        state = self._clusters
        if state is None:
            return ModelInfo(False, "", 0.0, 0.0, 0, 0, 0, 0, None)
        model = state.model
        if model is None:
            return ModelInfo(True, "", 0.0, 0.0, 0, 0, 0, state.pending, state.params)
        return ModelInfo(True, model.version, model.fitted_at, model.fit_seconds,
                         len(model.account_ids), len(model.clusters), model.noise_accounts,
                         state.pending, model.params)

