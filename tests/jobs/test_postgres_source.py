"""The PostgreSQL event log as a recluster and audit source: events written by the service's
PostgreSQL adapter give the clusters and the audit the SQLite log gives."""

from __future__ import annotations

import pytest
from conftest import KEY_HEX, job_settings, partition_of
from live_services import drop_schema, require_postgres, unique

from ringfence.service.adapters.model_store import ModelStore
from ringfence.service.jobs.audit import audit
from ringfence.service.jobs.recluster import ReclusterOptions, recluster
from ringfence.service.jobs.sources import PostgresSource, SqliteSource


@pytest.fixture
def pg_source(fleet_events):
    from ringfence.service.adapters.postgres_log import PostgresEventLog

    dsn = require_postgres()
    schema = unique("rf_jobs")
    log = PostgresEventLog(dsn, schema=schema, spill_path=None)
    for e in fleet_events:
        log.append(e)
    log.flush()
    assert log.written == len(fleet_events)
    log.close()
    yield PostgresSource(dsn, schema)
    drop_schema(dsn, schema)


def test_postgres_log_gives_the_sqlite_clusters_and_audit(data_dir, pg_source):
    sqlite = SqliteSource(data_dir / "events.db")
    a = recluster(job_settings(data_dir, model_dir=data_dir / "a"), sqlite,
                  ReclusterOptions(partitions=2))
    b = recluster(job_settings(data_dir, model_dir=data_dir / "b"), pg_source,
                  ReclusterOptions(partitions=3))
    assert a.fingerprint == b.fingerprint
    key = bytes.fromhex(KEY_HEX)
    ma, _ = ModelStore(data_dir / "a", key).load_latest()
    mb, _ = ModelStore(data_dir / "b", key).load_latest()
    assert partition_of(ma) == partition_of(mb)

    settings = job_settings(data_dir, model_dir=data_dir / "a")
    want, got = audit(sqlite, "2026-05", settings), audit(pg_source, "2026-05", settings)
    for report in (want, got):
        report.pop("source"), report.pop("generated_at")
    assert got == want
