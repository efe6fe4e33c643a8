"""The recluster job's HTML cluster report: accounts projected to 2-D and coloured by cluster,
the riskiest clusters with their evidence (``assess_cluster`` under the scoring policy), and
each top cluster's members and requests per day over the window, from the event log."""

from __future__ import annotations

import dataclasses
import datetime
import tomllib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ringfence.service.core.cluster_profiles import ClusterAssessment, assess_cluster
from ringfence.service.core.clustering import ClusterModel, Snapshot, scaled
from ringfence.service.core.errors import InvalidInput
from ringfence.service.core.policy import ClusterWeights, Policy
from ringfence.service.jobs import JobError
from ringfence.service.jobs.files import write_atomic
from ringfence.service.jobs.html import (
    NOISE,
    OTHER,
    PALETTE,
    Raw,
    day_label,
    items,
    line_chart,
    page,
    scatter,
    table,
)
from ringfence.service.jobs.snapshot import Population
from ringfence.service.jobs.window import Window, iso
from ringfence.service.settings import Settings

MAX_POINTS = 4000
TOP_CLUSTERS = 10
CHARTED = 6


def policy_of(settings: Settings) -> Policy:
    """The scoring policy the service runs (defaults without a policy file)."""
    if settings.policy_file is None:
        return Policy()
    try:
        with settings.policy_file.open("rb") as f:
            return Policy.from_mapping(tomllib.load(f))
    except (OSError, ValueError, InvalidInput) as exc:
        raise JobError(f"cannot read policy file {settings.policy_file}: {exc}") from None


def cluster_weights(settings: Settings) -> ClusterWeights:
    return policy_of(settings).cluster.weights


def project(features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The first two principal components (SVD of the centred matrix)."""
    if len(features) < 2:
        return np.zeros((len(features), 2))
    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:2].T
    return out if out.shape[1] == 2 else np.hstack([out, np.zeros((len(out), 1))])


def ranked(model: ClusterModel, weights: ClusterWeights
           ) -> list[tuple[str, ClusterAssessment]]:
    scored = [(cid, assess_cluster(weights, p)) for cid, p in model.clusters.items()]
    return sorted(scored, key=lambda x: (-x[1].risk, -model.clusters[x[0]].size, x[0]))


def _sample(labels: npt.NDArray[np.intp], limit: int, seed: int = 7) -> npt.NDArray[np.intp]:
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(labels), size=limit, replace=False))


def _projection(model: ClusterModel, snapshot: Snapshot, top: list[str]) -> Raw:
    if not len(snapshot.account_ids):
        return Raw("<p>No accounts were clustered.</p>")
    coords = project(scaled(snapshot.features, model.params))
    labels = model.labels
    colors: dict[str, str] = {}
    for i, cid in enumerate(top[:len(PALETTE)]):
        colors[cid] = PALETTE[i]
    group_of = {label: cid for label, cid in enumerate(model.label_ids)}
    points = []
    for i in _sample(labels, MAX_POINTS):
        label = int(labels[i])
        group = "noise" if label < 0 else group_of[label]
        points.append((float(coords[i, 0]), float(coords[i, 1]),
                       group if group in colors or group == "noise" else "other clusters"))
    legend = {**colors, "other clusters": OTHER, "noise": NOISE}
    return scatter(f"Accounts by cluster (PCA of the clustering space; {len(points):,} of "
                   f"{len(labels):,} shown)", points, legend, x_label="component 1",
                   y_label="component 2")


def _over_time(model: ClusterModel, population: Population, top: list[str]) -> list[Raw]:
    index = population.index()
    days = population.daily.shape[1]
    x = [float(population.first_day + d) for d in range(days)]
    volume, active = [], []
    for cid in top[:CHARTED]:
        rows = [index[a] for a in model.members_of(cid) if a in index]
        daily = population.daily[rows].astype(np.int64) if rows else np.zeros((0, days))
        volume.append((cid, list(zip(x, daily.sum(axis=0).tolist(), strict=True))))
        active.append((cid, list(zip(x, (daily > 0).sum(axis=0).tolist(), strict=True))))
    return [line_chart("Requests per day, top clusters", volume, x_label="day (UTC)",
                       y_label="requests", x_format=day_label),
            line_chart("Active members per day, top clusters", active, x_label="day (UTC)",
                       y_label="accounts", x_format=day_label)]


def _lineage(model: ClusterModel, cid: str, previous_ids: set[str]) -> str:
    parents = model.lineage.get(cid, ())
    if cid in previous_ids:
        return "kept its id"
    return "new" if not parents else "from " + ", ".join(parents)


def cluster_report(*, model: ClusterModel, snapshot: Snapshot, population: Population,
                   window: Window, previous: str, weights: ClusterWeights,
                   timings: Mapping[str, float]) -> str:
    scored = ranked(model, weights)
    top = [cid for cid, _ in scored[:TOP_CLUSTERS]]
    previous_ids = {p for p in snapshot.previous if p}
    fitted = datetime.datetime.fromtimestamp(model.fitted_at, datetime.UTC)
    summary = table(["", ""], [
        ("model version", model.version), ("previous model", previous or "none"),
        ("window", f"{iso(window.since)} .. {iso(window.until)} ({window.days:.1f} days)"),
        ("fitted at (window end)", fitted.strftime("%Y-%m-%d %H:%M UTC")),
        ("events", population.events), ("accounts with events", len(population.account_ids)),
        ("accounts clustered", len(model.account_ids)), ("clusters", len(model.clusters)),
        ("noise accounts", model.noise_accounts),
        ("parameters", ", ".join(f"{k}={v}" for k, v in
                                 dataclasses.asdict(model.params).items())),
        ("timings", ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())),
    ])
    rows = []
    for rank, (cid, assessment) in enumerate(scored[:TOP_CLUSTERS], 1):
        p = model.clusters[cid]
        rows.append((
            rank, cid, p.size, round(assessment.risk, 3), round(p.daily_volume),
            f"{p.daily_volume / max(p.baseline_daily_volume, 1.0):.1f}×",
            f"{p.shared_device_share:.0%}", f"{p.shared_signature_share:.0%}",
            f"{p.anonymized_share:.0%}", _lineage(model, cid, previous_ids),
            items([f"{r.code} ({r.weight:.2f}): {r.message}" for r in assessment.reasons]
                  or ["no cluster-level signal"])))
    top_table = table(["#", "cluster", "size", "risk", "requests/day (last 24 h)",
                       "× average account", "shared devices", "shared templates",
                       "anonymized", "id", "evidence"], rows, left=2)
    sizes = sorted((p.size for p in model.clusters.values()), reverse=True)
    sections = [
        "<h2>Summary</h2>", summary,
        "<h2>Accounts by cluster</h2>",
        '<p class="note">Each dot is an account in the space HDBSCAN clustered (identity '
        "dimensions weighted against behaviour), projected on its first two principal "
        "components. The riskiest clusters have their own colours.</p>",
        _projection(model, snapshot, top),
        f"<h2>Riskiest clusters ({min(TOP_CLUSTERS, len(scored))} of {len(scored)})</h2>",
        '<p class="note">Risk and evidence as the service scores them (assess_cluster with '
        "the policy's cluster weights). <i>id</i>: whether the cluster kept the id of the "
        "previous model's cluster with the same members.</p>",
        top_table if rows else Raw("<p>No clusters.</p>"),
        "<h2>Size and volume over time</h2>",
        '<p class="note">Members of each top cluster (as fitted now) and their requests per '
        "UTC day over the window, from the event log.</p>",
        Raw('<div class="charts">' + "".join(_over_time(model, population, top)) + "</div>"),
        "<h2>Cluster sizes</h2>",
        table(["clusters", "largest", "median", "smallest", "accounts in clusters"],
              [(len(sizes), sizes[0] if sizes else 0,
                int(np.median(sizes)) if sizes else 0, sizes[-1] if sizes else 0,
                sum(sizes))], left=0),
    ]
    return page(f"ringfence cluster report — {model.version}", sections)


def write_cluster_report(path: Path, *, model: ClusterModel, snapshot: Snapshot,
                         population: Population, window: Window, previous: str,
                         settings: Settings, timings: Mapping[str, float]) -> Path:
    text = cluster_report(model=model, snapshot=snapshot, population=population, window=window,
                          previous=previous, weights=cluster_weights(settings),
                          timings=timings)
    try:
        write_atomic(path, text.encode())
    except OSError as exc:
        raise JobError(f"cannot write report {path}: {exc.strerror}") from None
    return path
