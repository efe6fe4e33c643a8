"""Analyst labels in PostgreSQL, shared by every replica (``{schema}.labels``).

A label is acknowledged only after its INSERT committed. Labels are rare, so each call opens
its own short connection: nothing to keep alive or to repair after an outage. PostgreSQL
unreachable → ``NotReady`` (UNAVAILABLE at the edge): the caller retries, nothing is half-stored.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ringfence.service.adapters.postgres_log import check_schema_name, ensure_schema, pg_connect
from ringfence.service.core.errors import NotReady
from ringfence.service.core.model import Label, LabelTarget, LabelValue

_DDL = ["CREATE TABLE IF NOT EXISTS {schema}.labels (id bigserial PRIMARY KEY, "
        "target smallint NOT NULL, target_id text NOT NULL, value smallint NOT NULL, "
        "created_at double precision NOT NULL, author text NOT NULL, note text NOT NULL)"]


class PostgresLabelStore:
    def __init__(self, dsn: str, *, schema: str = "ringfence", connect_timeout: int = 2) -> None:
        self._dsn = dsn
        self._schema = check_schema_name(schema)
        self._connect_timeout = connect_timeout
        self._ready = False  # schema created (once per process, on first use)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = pg_connect(self._dsn, connect_timeout=self._connect_timeout)
        except psycopg.OperationalError as exc:
            raise NotReady(f"the label store (PostgreSQL) is unreachable: {exc}") from exc
        if not self._ready:
            ensure_schema(conn, self._schema, _DDL)
            self._ready = True
        return conn

    def add(self, label: Label) -> None:
        with self._connect() as conn:
            conn.execute(
                sql.SQL("INSERT INTO {}.labels (target, target_id, value, created_at, author, "
                        "note) VALUES (%s, %s, %s, %s, %s, %s)").format(
                    sql.Identifier(self._schema)),
                (int(label.target), label.target_id, int(label.value), label.created_at,
                 label.author, label.note))
            # Leaving the block commits; an error rolls back and propagates.

    def all(self) -> list[Label]:
        with self._connect() as conn:
            rows = conn.execute(
                sql.SQL("SELECT target, target_id, value, created_at, author, note "
                        "FROM {}.labels ORDER BY id").format(sql.Identifier(self._schema))
            ).fetchall()
        return [Label(LabelTarget(t), tid, LabelValue(v), at, author, note)
                for t, tid, v, at, author, note in rows]

    def close(self) -> None:
        return None
