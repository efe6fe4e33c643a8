"""The dask engine (a local multi-process dask.distributed cluster, reached by its scheduler
address like a real one) and the embedded engine give the same clusters on the same data, from
the SQLite log and from its Parquet export; the embedded engine's process pool gives what one
process gives."""

from __future__ import annotations

import logging
import multiprocessing

import numpy as np
import pytest
from conftest import job_settings, partition_of

from ringfence.service.adapters.model_store import ModelStore
from ringfence.service.jobs import JobError
from ringfence.service.jobs.aggregate import PartitionResult
from ringfence.service.jobs.engines import (
    DaskEngine,
    EmbeddedEngine,
    cgroup_cpu_limit,
    usable_cores,
)
from ringfence.service.jobs.export import export_parquet
from ringfence.service.jobs.recluster import ReclusterOptions, job_key, recluster
from ringfence.service.jobs.sources import ParquetSource, SqliteSource


def _run(data_dir, source, engine, name, **options):
    settings = job_settings(data_dir, model_dir=data_dir / name)
    result = recluster(settings, source, ReclusterOptions(**options), engine)
    model, _ = ModelStore(data_dir / name, job_key(settings)).load_latest()
    return result, model


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("dask.distributed")
    for name in ("distributed", "distributed.scheduler", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        yield cluster


def test_dask_and_embedded_engines_give_the_same_clusters(data_dir, dask_cluster):
    source = SqliteSource(data_dir / "events.db")
    embedded, m1 = _run(data_dir, source, EmbeddedEngine(), "m-embedded", partitions=1)
    dask, m2 = _run(data_dir, source, DaskEngine(dask_cluster.scheduler_address), "m-dask",
                    partitions=5)
    assert dask.partitions == 5 and embedded.partitions == 1
    assert embedded.fingerprint == dask.fingerprint  # the engine is not an input
    assert len(m1.clusters) >= 1
    assert partition_of(m1) == partition_of(m2)
    assert m1.account_ids == m2.account_ids

    # the Parquet export of the same log, read by DuckDB on the dask workers
    export_parquet(source, str(data_dir / "export" / "events.parquet"), None)
    _, m3 = _run(data_dir, ParquetSource((str(data_dir / "export"),)),
                 DaskEngine(dask_cluster.scheduler_address), "m-parquet", partitions=3)
    assert partition_of(m3) == partition_of(m1)


def test_embedded_pool_gives_what_one_process_gives(data_dir):
    """workers=2 (a process pool) and workers=1 (in this process): the same partition
    results, array for array, and the same published model."""
    from ringfence.service.jobs.recluster import make_tasks, plan
    from ringfence.service.jobs.window import resolve

    source = SqliteSource(data_dir / "events.db")
    window = resolve("3d", None, source.newest())
    key = job_key(job_settings(data_dir))
    tasks = make_tasks(source, window, window.days,
                       plan(source.account_stats(window.since, window.until), 4), key)
    assert len(tasks) == 4

    def collect(engine):
        out: dict[int, PartitionResult] = {}
        workers_seen: list[int] = []
        before = {p.pid for p in multiprocessing.active_children()}  # e.g. a dask cluster's

        def on_result(result):
            workers_seen.append(len({p.pid for p in multiprocessing.active_children()}
                                    - before))
            out[result.index] = result

        engine.run(tasks, on_result)
        return out, workers_seen

    alone, seen_alone = collect(EmbeddedEngine(workers=1))
    pooled, seen_pooled = collect(EmbeddedEngine(workers=2))
    assert max(seen_alone) == 0 and max(seen_pooled) == 2  # in-process vs a pool of two
    assert sorted(alone) == sorted(pooled) == [0, 1, 2, 3]
    for index, one in alone.items():
        two = pooled[index]
        assert one.events == two.events > 0 and one.skipped == two.skipped == 0
        for name in PartitionResult.ARRAYS:
            a, b = getattr(one, name), getattr(two, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name

    r1, m1 = _run(data_dir, source, EmbeddedEngine(workers=1), "m-one", partitions=4)
    r2, m2 = _run(data_dir, source, EmbeddedEngine(workers=2), "m-two", partitions=4)
    assert r1.fingerprint == r2.fingerprint and r1.partitions == r2.partitions == 4
    assert len(m1.clusters) >= 1
    assert m1.account_ids == m2.account_ids
    assert np.array_equal(m1.labels, m2.labels)
    assert partition_of(m1) == partition_of(m2)


def test_a_cgroup_cpu_limit_caps_the_usable_cores(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None  # no cgroup files: no limit
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # limits.cpu: 1500m
    assert cgroup_cpu_limit(tmp_path) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    assert cgroup_cpu_limit(v1) == 2.0


def test_embedded_workers_default_to_the_usable_cores():
    assert EmbeddedEngine().workers == EmbeddedEngine().parallelism == usable_cores() >= 1
    assert EmbeddedEngine(workers=3).parallelism == 3
    with pytest.raises(JobError, match="at least 1"):
        EmbeddedEngine(workers=0)
