"""The dask engine (a local multi-process dask.distributed cluster, reached by its scheduler
address like a real one) and the embedded engine give the same clusters on the same data, from
the SQLite log and from its Parquet export."""

from __future__ import annotations

import logging

import pytest
from conftest import job_settings, partition_of

from ringfence.service.adapters.model_store import ModelStore
from ringfence.service.jobs.engines import DaskEngine, EmbeddedEngine
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
