"""One fixture per port, parametrized over every backend that implements it.

Each backend comes as a ``Backend``: ``open()`` gives a store on the backend's state (call it
again after ``close()`` for a restart, or while the first is open for "another process"), and
flags say which optional properties the backend has. Redis and PostgreSQL backends live under
a prefix / schema unique to the test and removed afterwards.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from live_services import (
    drop_redis_prefix,
    drop_schema,
    require_postgres,
    require_redis,
    unique,
)
from psycopg import sql

from ringfence.service.adapters.embedded_store import EmbeddedProfileStore
from ringfence.service.adapters.event_log import COLUMNS, SqliteEventLog
from ringfence.service.adapters.labels import MemoryLabelStore, SqliteLabelStore
from ringfence.service.adapters.postgres_labels import PostgresLabelStore
from ringfence.service.adapters.postgres_log import PostgresEventLog
from ringfence.service.adapters.redis_store import RedisProfileStore, connect
from ringfence.service.adapters.resilient import ResilientProfileStore
from ringfence.service.core.model import ScoredEvent

REDIS_TIMEOUT_S = 2.0  # generous here: contract tests check answers, not fault handling


@dataclass
class Backend:
    name: str
    opener: Callable[[], Any]
    durable: bool  # state survives close() and a new open()
    shared: bool  # two open instances see each other's writes (like two processes)
    read_events: Callable[[], list[ScoredEvent]] | None = None
    opened: list[Any] = field(default_factory=list)

    def open(self) -> Any:
        store = self.opener()
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()  # close() is idempotent on every backend
        self.opened.clear()


@pytest.fixture(params=["embedded-memory", "embedded-sqlite", "redis", "redis-resilient"])
def profile_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if kind == "embedded-memory":
        backend = Backend(kind, lambda: EmbeddedProfileStore(None), durable=False, shared=False)
    elif kind == "embedded-sqlite":
        path = tmp_path / "state.db"
        backend = Backend(kind, lambda: EmbeddedProfileStore(path), durable=True, shared=False)
    else:
        admin = require_redis()
        prefix = unique("rf-contract")

        def open_redis() -> RedisProfileStore | ResilientProfileStore:
            shared = RedisProfileStore(connect("redis://127.0.0.1:6379/0",
                                               timeout_s=REDIS_TIMEOUT_S), prefix=prefix)
            if kind == "redis":
                return shared
            return ResilientProfileStore(shared, EmbeddedProfileStore(None),
                                         slow_s=REDIS_TIMEOUT_S)

        backend = Backend(kind, open_redis, durable=True, shared=True)

        def cleanup() -> None:
            drop_redis_prefix(admin, prefix)
            admin.close()
    try:
        yield backend
    finally:
        backend.close_all()
        cleanup()


def _event_from_row(row: dict[str, Any]) -> ScoredEvent:
    """A stored row back as the ScoredEvent it was written from."""
    row = dict(row)
    reasons = row["reasons"]
    if isinstance(reasons, str):
        reasons = reasons.split(",") if reasons else []
    row["reasons"] = tuple(reasons)
    for name in ("anonymized", "hosting", "proxy", "tor"):
        row[name] = bool(row[name])
    if row["content_signature"] is not None:
        row["content_signature"] %= 1 << 64  # stored as the signed 64-bit bit pattern
    return ScoredEvent(**row)


@pytest.fixture(params=["sqlite", "postgres"])
def event_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    names = [f.name for f in dataclasses.fields(ScoredEvent)]
    assert tuple(names) == COLUMNS
    if request.param == "sqlite":
        path = tmp_path / "events.db"

        def read_sqlite() -> list[ScoredEvent]:
            conn = sqlite3.connect(path)
            try:
                rows = conn.execute(f"SELECT {', '.join(names)} FROM events ORDER BY id")
                return [_event_from_row(dict(zip(names, r, strict=True))) for r in rows]
            finally:
                conn.close()

        backend = Backend("sqlite", lambda: SqliteEventLog(path), durable=True, shared=False,
                          read_events=read_sqlite)
        try:
            yield backend
        finally:
            backend.close_all()
        return
    dsn = require_postgres()
    schema = unique("rf_contract")

    def read_postgres() -> list[ScoredEvent]:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(sql.SQL("SELECT {} FROM {}.events ORDER BY event_time").format(
                sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(schema)))
            return [_event_from_row(dict(zip(names, r, strict=True))) for r in rows]

    backend = Backend("postgres", lambda: PostgresEventLog(
        dsn, schema=schema, spill_path=tmp_path / "spill.db", flush_interval=0.02),
        durable=True, shared=True, read_events=read_postgres)
    try:
        yield backend
    finally:
        backend.close_all()
        drop_schema(dsn, schema)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def label_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    if kind == "memory":
        backend = Backend(kind, MemoryLabelStore, durable=False, shared=False)
    elif kind == "sqlite":
        path = tmp_path / "state.db"
        backend = Backend(kind, lambda: SqliteLabelStore(path), durable=True, shared=False)
    else:
        dsn = require_postgres()
        schema = unique("rf_contract")
        backend = Backend(kind, lambda: PostgresLabelStore(dsn, schema=schema), durable=True,
                          shared=True)
    try:
        yield backend
    finally:
        backend.close_all()
        if kind == "postgres":
            drop_schema(dsn, schema)
