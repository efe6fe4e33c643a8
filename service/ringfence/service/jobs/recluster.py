"""``ringfence recluster``: the event log over a long window → account profiles (rebuilt with
the service's core code) → HDBSCAN → a model artifact every replica picks up.

Steps: plan (newest event, per-account counts, contiguous account ranges balanced by events,
an input fingerprint), aggregate the partitions on an engine (reusing any the work directory
already holds), assemble the snapshot, fit, publish through ``ModelStore`` with the latest
published model as ``previous`` (its members keep cluster ids stable; its version is the new
artifact's lineage), then write the marker that makes a re-run on the same inputs a no-op.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ringfence.service.adapters.keyfile import load_or_create_key
from ringfence.service.adapters.model_store import (
    LATEST,
    ArtifactInfo,
    ModelArtifactError,
    ModelStore,
)
from ringfence.service.core.clustering import ClusterModel, ClusterParams, fit_model
from ringfence.service.core.features import FEATURE_SCHEMA_VERSION
from ringfence.service.core.identity import Hasher
from ringfence.service.jobs import JobError
from ringfence.service.jobs.aggregate import (
    PartitionResult,
    PartitionTask,
    country_tokens,
)
from ringfence.service.jobs.engines import EmbeddedEngine, Engine, usable_cores
from ringfence.service.jobs.files import write_atomic
from ringfence.service.jobs.progress import Progress
from ringfence.service.jobs.snapshot import assemble
from ringfence.service.jobs.sources import AccountStat, EventSource
from ringfence.service.jobs.window import Window, iso, resolve
from ringfence.service.jobs.workdir import WorkDir
from ringfence.service.keys import key_id
from ringfence.service.settings import Settings

log = logging.getLogger(__name__)

JOB_VERSION = 1  # bump when the aggregation changes what it computes from the same events
MARKER = "recluster.json"
EVENTS_PER_PARTITION = 1_000_000


@dataclass(frozen=True, slots=True)
class ReclusterOptions:
    since: str = "45d"
    until: str | None = None
    partitions: int | None = None  # None: one per million events, at least 2 per engine slot
    work_dir: Path | None = None  # None: data_dir/recluster-work
    report: Path | None = None
    force: bool = False  # publish even if the same inputs were published already
    ignore_previous: bool = False  # fit without the latest model (new cluster ids)
    keep_work: bool = False
    fit_jobs: int | None = None  # hdbscan core_dist_n_jobs; None: the usable cores (≤ 4)
    progress_bar: bool | None = None  # None: a bar on a terminal, log lines otherwise


@dataclass(frozen=True)
class ReclusterResult:
    status: Literal["published", "up-to-date"]
    version: str
    previous: str
    fingerprint: str
    window: Window
    events: int
    accounts: int  # clustered
    clusters: int
    noise: int
    partitions: int
    reused_partitions: int
    aggregate_cpu_seconds: float  # summed over the partitions computed in this run
    artifact: Path | None
    report: Path | None
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        if self.status == "up-to-date":
            return (f"up to date: {self.version} was already published from the same events "
                    f"({self.window.describe()}) and parameters; --force refits anyway")
        return (f"published {self.version} (previous {self.previous or 'none'}): "
                f"{self.clusters} clusters over {self.accounts:,} accounts "
                f"({self.noise:,} noise) from {self.events:,} events, {self.window.describe()}; "
                f"{sum(self.timings.values()):.1f} s")


def job_key(settings: Settings) -> bytes:
    """The service's hash key; never a new one (it would sign models no replica accepts)."""
    if settings.hash_key is not None:
        return bytes.fromhex(settings.hash_key.get_secret_value())
    if not (settings.data_dir / "hash.key").exists():
        raise JobError(f"no hash key: set RINGFENCE_HASH_KEY (or hash_key in --config), or "
                       f"point --data-dir at the service's data directory "
                       f"({settings.data_dir / 'hash.key'} does not exist)")
    try:
        return load_or_create_key(None, settings.data_dir)
    except (OSError, ValueError) as exc:
        raise JobError(f"cannot read {settings.data_dir / 'hash.key'}: {exc}") from None


def model_dir(settings: Settings) -> Path:
    return settings.model_dir or settings.data_dir / "models"


def cluster_params(settings: Settings, window: Window, fit_jobs: int | None) -> ClusterParams:
    jobs = fit_jobs or min(4, usable_cores())
    return ClusterParams(min_cluster_size=settings.cluster_min_cluster_size,
                         min_samples=settings.cluster_min_samples, window_days=window.days,
                         core_dist_n_jobs=jobs, backend=settings.cluster_backend)


def fingerprint(key: bytes, window: Window, params: ClusterParams,
                stats: Sequence[AccountStat]) -> str:
    """What the published model is a function of: the events selected (per-account counts and
    first/last times), the window, the parameters, the feature schema and the key."""
    digest = hashlib.sha256()
    for account, n, first, last in sorted(stats):
        digest.update(f"{account}\x00{n}\x00{first!r}\x00{last!r}\n".encode())
    shape = {k: v for k, v in dataclasses.asdict(params).items() if k != "core_dist_n_jobs"}
    header = json.dumps({"job": JOB_VERSION, "schema": FEATURE_SCHEMA_VERSION,
                         "key": key_id(key), "since": window.since, "until": window.until,
                         "params": shape, "events": digest.hexdigest()}, sort_keys=True)
    return hashlib.sha256(header.encode()).hexdigest()


def plan(stats: Sequence[AccountStat], partitions: int) -> list[list[AccountStat]]:
    """Contiguous ranges of the sorted accounts, balanced by events (each account in exactly
    one; a range is one index range scan in SQLite and a min/max filter in Parquet)."""
    ordered = sorted(stats)
    parts = max(1, min(partitions, len(ordered)))
    total = sum(s[1] for s in ordered)
    out: list[list[AccountStat]] = [[] for _ in range(parts)]
    seen = 0
    for stat in ordered:
        k = min(parts - 1, int(seen * parts / total)) if total else 0
        out[k].append(stat)
        seen += stat[1]
    return [p for p in out if p]


def make_tasks(source: EventSource, window: Window, window_days: float,
               groups: Sequence[Sequence[AccountStat]], key: bytes) -> list[PartitionTask]:
    """One task per planned group, carrying keyed tokens instead of the key."""
    hasher = Hasher(key)
    countries = country_tokens(hasher)
    return [PartitionTask(
        index=i, partitions=len(groups), source=source, since=window.since, until=window.until,
        window_days=window_days, first=g[0][0], last=g[-1][0],
        accounts=tuple(s[0] for s in g),
        account_tokens=tuple(hasher.token("account", s[0]) for s in g),
        country_tokens=countries, events=sum(s[1] for s in g)) for i, g in enumerate(groups)]


def _read_marker(directory: Path) -> dict[str, Any]:
    try:
        value = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _latest_name(store: ModelStore) -> str:
    try:
        path = store.latest_path()
    except ModelArtifactError:
        return ""
    return path.name if path is not None else ""


def _previous(store: ModelStore, ignore: bool) -> tuple[ClusterModel | None, ArtifactInfo | None]:
    if ignore:
        return None, None
    try:
        found = store.load_latest()
    except ModelArtifactError as exc:
        raise JobError(f"the latest published model is unusable ({exc}); repair "
                       f"{store.directory / LATEST} or pass --ignore-previous (cluster ids "
                       "then start afresh)") from None
    return found if found is not None else (None, None)


@dataclass(frozen=True)
class Plan:
    """What a run will do, fixed before any partition runs."""

    window: Window
    params: ClusterParams
    fingerprint: str
    events: int
    tasks: list[PartitionTask]


def recluster(settings: Settings, source: EventSource, options: ReclusterOptions,
              engine: Engine | None = None) -> ReclusterResult:
    engine = engine or EmbeddedEngine()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    key = job_key(settings)
    store = ModelStore(model_dir(settings), key)

    newest = source.newest()
    if newest is None:
        raise JobError(f"no events in {source.name}")
    window = resolve(options.since, options.until, newest)
    stats = source.account_stats(window.since, window.until)
    if not stats:
        raise JobError(f"no events between {iso(window.since)} and {iso(window.until)} in "
                       f"{source.name}")
    params = cluster_params(settings, window, options.fit_jobs)
    fp = fingerprint(key, window, params, stats)
    total_events = sum(s[1] for s in stats)
    marker = _read_marker(store.directory)
    latest = _latest_name(store)
    if (not options.force and marker.get("fingerprint") == fp and latest
            and marker.get("artifact") == latest):
        log.info("recluster: inputs unchanged since %s was published", marker.get("version"))
        return ReclusterResult(
            status="up-to-date", version=str(marker.get("version", "")),
            previous=str(marker.get("previous", "")), fingerprint=fp, window=window,
            events=total_events, accounts=int(marker.get("accounts", 0)),
            clusters=int(marker.get("clusters", 0)), noise=int(marker.get("noise", 0)),
            partitions=0, reused_partitions=0, aggregate_cpu_seconds=0.0,
            artifact=store.directory / latest, report=None,
            timings={"plan": time.perf_counter() - started})
    previous = _previous(store, options.ignore_previous)

    wanted = options.partitions or max(math.ceil(total_events / EVENTS_PER_PARTITION),
                                       2 * engine.parallelism)
    plan_ = Plan(window, params, fp, total_events,
                 make_tasks(source, window, params.window_days, plan(stats, wanted), key))
    work = WorkDir(options.work_dir or settings.data_dir / "recluster-work", fp)
    with work.lock():
        work.prepare()
        timings["plan"] = time.perf_counter() - started
        log.info("recluster: %s events of %s accounts in %s, %d partitions, engine %s",
                 f"{total_events:,}", f"{len(stats):,}", window.describe(),
                 len(plan_.tasks), engine.name)
        mark = time.perf_counter()
        results, reused = _aggregate(plan_, work, engine, options.progress_bar)
        timings["aggregate"] = time.perf_counter() - mark
        result = _fit_and_publish(settings, store, options, plan_, results, previous, timings)
        if not options.keep_work:
            work.finish()
    return dataclasses.replace(
        result, reused_partitions=reused,
        aggregate_cpu_seconds=sum(r.cpu_seconds for r in results[reused:]))


def _aggregate(plan_: Plan, work: WorkDir, engine: Engine, bar: bool | None
               ) -> tuple[list[PartitionResult], int]:
    """Every partition's result: from the work directory, or computed (and saved there)."""
    parts = len(plan_.tasks)
    results: list[PartitionResult] = []
    progress = Progress("recluster", plan_.events, bar=bar)
    todo: list[PartitionTask] = []
    for task in plan_.tasks:
        cached = work.load(task.index, parts)
        if cached is not None:
            results.append(cached)
            progress.advance(cached.events, f"partition {task.index + 1} reused")
        else:
            todo.append(task)
    reused = len(results)

    def finished(result: PartitionResult) -> None:
        work.save(result, parts)
        results.append(result)
        progress.advance(result.events, f"partition {result.index + 1}/{parts} in "
                                        f"{result.seconds:.1f} s")

    try:
        engine.run(todo, finished)
    finally:
        progress.close()
    return results, reused


def _fit_and_publish(settings: Settings, store: ModelStore, options: ReclusterOptions,
                     plan_: Plan, results: list[PartitionResult],
                     previous: tuple[ClusterModel | None, ArtifactInfo | None],
                     timings: dict[str, float]) -> ReclusterResult:
    previous_model, previous_info = previous
    window = plan_.window
    mark = time.perf_counter()
    snapshot, population = assemble(results, window.until, window.since, plan_.params,
                                    previous_model.members if previous_model else {})
    timings["assemble"] = time.perf_counter() - mark
    mark = time.perf_counter()
    log.info("recluster: fitting HDBSCAN on %s accounts (on the driver, not partitioned)",
             f"{len(snapshot.account_ids):,}")
    model = fit_model(snapshot)
    timings["fit"] = time.perf_counter() - mark
    if model.clusterer is None:
        log.warning("recluster: %d accounts are too few to cluster; publishing an empty model",
                    len(snapshot.account_ids))

    mark = time.perf_counter()
    previous_version = previous_info.version if previous_info else ""
    info = store.save(model, previous=previous_version)
    write_atomic(store.directory / MARKER, json.dumps({
        "fingerprint": plan_.fingerprint, "artifact": info.path.name,
        "version": model.version, "previous": previous_version, "since": window.since,
        "until": window.until, "events": population.events,
        "accounts": len(model.account_ids), "clusters": len(model.clusters),
        "noise": model.noise_accounts, "published_at": time.time()}, indent=2).encode())
    timings["publish"] = time.perf_counter() - mark

    report = None
    if options.report is not None:
        from ringfence.service.jobs.reports import write_cluster_report

        mark = time.perf_counter()
        report = write_cluster_report(options.report, model=model, snapshot=snapshot,
                                      population=population, window=window,
                                      previous=previous_version, settings=settings,
                                      timings=timings)
        timings["report"] = time.perf_counter() - mark
    return ReclusterResult(
        status="published", version=model.version, previous=previous_version,
        fingerprint=plan_.fingerprint, window=window, events=population.events,
        accounts=len(model.account_ids), clusters=len(model.clusters),
        noise=model.noise_accounts, partitions=len(plan_.tasks), reused_partitions=0,
        aggregate_cpu_seconds=0.0, artifact=info.path, report=report, timings=timings)
