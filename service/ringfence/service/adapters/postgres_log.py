"""The durable event log in PostgreSQL, with a local spill so an outage loses nothing.

``append`` only queues (the serving thread never waits on the network). A background thread
takes up to ``max_batch`` events every ``flush_interval`` seconds and writes them with ``COPY``
into a per-connection staging table, then ``INSERT … ON CONFLICT (event_id) DO NOTHING`` into
``{schema}.events`` in one transaction. Each event carries a random ``event_id``, so a batch
whose commit outcome was unknown (the connection died at COMMIT) can be written again without
duplicates.

When PostgreSQL cannot be reached, batches are committed to a SQLite spill table instead (the
embedded event log's file, ``events.db``); one reconnect is tried per ``retry_interval``
seconds and, once it works, the spill is drained oldest first, each chunk deleted from the spill
only after PostgreSQL committed it. New events keep going to the spill until it is empty, so
events reach PostgreSQL in order. A spill left by a previous run is drained at start.

Durability: an event is durable once its batch committed to PostgreSQL or to the spill, at most
``flush_interval`` after ``append`` (events still queued in memory are lost if the process is
killed, as with the embedded log). The table has a BRIN index on ``event_time`` (append-only,
time-ordered data: tiny and fast for time-range scans and the retention purge) and a b-tree on
``(account_id, event_time)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ringfence.service.adapters.event_log import COLUMNS, _row
from ringfence.service.adapters.sqlite_writer import connect as sqlite_connect
from ringfence.service.core.model import ScoredEvent

log = logging.getLogger(__name__)

# PostgreSQL type of each ScoredEvent field, by its annotation; a new field with an unknown
# annotation fails here, at import, rather than at the first write.
_PG_TYPES = {"float": "double precision", "float | None": "double precision", "str": "text",
             "int": "bigint", "int | None": "bigint", "bool": "boolean",
             "tuple[str, ...]": "text[]"}
_TYPES = {f.name: str(f.type) for f in dataclasses.fields(ScoredEvent)}
_COLUMN_TYPES = {name: _PG_TYPES[_TYPES[name]] for name in COLUMNS}
_BOOLS = [i for i, name in enumerate(COLUMNS) if _TYPES[name] == "bool"]
_REASONS = COLUMNS.index("reasons")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SPILL = "pg_spill"
_REJECTED = "pg_rejected"  # rows PostgreSQL refused (e.g. a NUL in a string): kept, not retried
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)

Spilled = tuple[bytes, Sequence[Any]]  # event id, the event as an embedded-log (SQLite) row


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"PostgreSQL schema {schema!r} must match {_SCHEMA_NAME.pattern}")
    return schema


def pg_connect(dsn: str, *, connect_timeout: int = 2) -> psycopg.Connection[Any]:
    """A connection that gives up quickly (libpq's minimum connect timeout is 2 s)."""
    return psycopg.connect(dsn, connect_timeout=max(2, connect_timeout), autocommit=False)


def ensure_schema(conn: psycopg.Connection[Any], schema: str, statements: Sequence[str]
                  ) -> None:
    """Create the schema and run ``statements`` (``{schema}`` filled in) under an advisory
    lock, so replicas starting together do not race on CREATE … IF NOT EXISTS."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ringfence:{schema}",))
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for statement in statements:
            cur.execute(sql.SQL(statement).format(schema=sql.Identifier(schema)))
    conn.commit()


def _event_ddl() -> list[str]:
    columns = ", ".join(f"{name} {kind}" for name, kind in _COLUMN_TYPES.items())
    return [
        f"CREATE TABLE IF NOT EXISTS {{schema}}.events (event_id uuid PRIMARY KEY, {columns})",
        # Columns added to ScoredEvent after the table was created:
        *(f"ALTER TABLE {{schema}}.events ADD COLUMN IF NOT EXISTS {name} {kind}"
          for name, kind in _COLUMN_TYPES.items()),
        "CREATE INDEX IF NOT EXISTS events_time_brin ON {schema}.events "
        "USING brin (event_time)",
        "CREATE INDEX IF NOT EXISTS events_account_time ON {schema}.events "
        "(account_id, event_time)",
    ]


def _pg_row(event_id: bytes, values: Sequence[Any]) -> list[Any]:
    """A spill (SQLite) row as PostgreSQL takes it: booleans back from 0/1, reasons as an
    array. The content signature keeps SQLite's signed 64-bit bit pattern (bigint)."""
    out = list(values)
    for i in _BOOLS:
        out[i] = bool(out[i])
    reasons = out[_REASONS]
    out[_REASONS] = reasons.split(",") if reasons else []
    return [uuid.UUID(bytes=event_id), *out]


@dataclass(frozen=True, slots=True)
class _Barrier:
    """Set once everything queued before it is committed (to PostgreSQL or the spill)."""

    done: threading.Event


@dataclass(frozen=True, slots=True)
class _Purge:
    before: float


_Item = Spilled | _Barrier | _Purge | None


class PostgresEventLog:
    def __init__(self, dsn: str, *, schema: str = "ringfence", spill_path: Path | None,
                 flush_interval: float = 0.2, max_batch: int = 5000,
                 retry_interval: float = 1.0, connect_timeout: int = 2,
                 max_queued: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._dsn = dsn
        self._schema = check_schema_name(schema)
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._retry_interval = retry_interval
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._queue: queue.Queue[_Item] = queue.Queue(max_queued)
        self._insert_sql = sql.SQL(
            "INSERT INTO {schema}.events (event_id, {cols}) SELECT event_id, {cols} "
            "FROM rf_staging ON CONFLICT (event_id) DO NOTHING").format(
            schema=sql.Identifier(self._schema),
            cols=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
        self._copy_sql = sql.SQL("COPY rf_staging (event_id, {cols}) FROM STDIN").format(
            cols=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
        # The spill is opened here so a bad path fails at start, not at the first outage.
        self._spill = (sqlite_connect(spill_path) if spill_path is not None
                       else sqlite3.connect(":memory:", check_same_thread=False,
                                            isolation_level=None))
        self._spill_lock = threading.Lock()  # the spill connection is shared with readers
        self._spill.execute(f"CREATE TABLE IF NOT EXISTS {_SPILL} (seq INTEGER PRIMARY KEY, "
                            f"event_id BLOB NOT NULL, {', '.join(COLUMNS)})")
        self._spill.execute(f"CREATE TABLE IF NOT EXISTS {_REJECTED} (seq INTEGER PRIMARY KEY, "
                            f"event_id BLOB NOT NULL, error TEXT NOT NULL, {', '.join(COLUMNS)})")
        self._spill_insert = (f"INSERT INTO {_SPILL} (event_id, {', '.join(COLUMNS)}) "
                              f"VALUES ({', '.join('?' for _ in range(len(COLUMNS) + 1))})")
        self._conn: psycopg.Connection[Any] | None = None
        self._spilling = self.spilled > 0  # a previous run's spill drains first
        self._next_retry = 0.0
        self.dropped = 0
        self.rejected = 0  # events PostgreSQL refused, kept in the spill file's pg_rejected
        self.written = 0  # events committed to PostgreSQL by this process
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="postgres-events", daemon=True)
        self._thread.start()

    # --- serving side ----------------------------------------------------------------------
    def append(self, event: ScoredEvent) -> None:
        try:
            self._queue.put_nowait((uuid.uuid4().bytes, _row(event)))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("event queue full (PostgreSQL and the spill are failing): %d events "
                          "dropped so far", self.dropped)

    def purge(self, before: float) -> None:
        """Delete events older than ``before`` (epoch seconds), in the background."""
        try:
            self._queue.put_nowait(_Purge(before))
        except queue.Full:  # never block the caller's event loop; the next purge catches up
            log.warning("event purge skipped: the event queue is full")

    def committed(self) -> None:
        """Acknowledgement on queue only (event_log_ack=committed needs the embedded log)."""
        return None

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every event appended so far is committed to PostgreSQL or the spill;
        if spilling, also try to reconnect and drain once now (the test and ops hook)."""
        barrier = _Barrier(threading.Event())
        self._queue.put(barrier)
        if not barrier.done.wait(timeout):
            raise TimeoutError("PostgreSQL event log did not flush in time")

    @property
    def spilling(self) -> bool:
        return self._spilling

    @property
    def spilled(self) -> int:
        """Events waiting in the spill for PostgreSQL."""
        with self._spill_lock:
            return int(self._spill.execute(f"SELECT count(*) FROM {_SPILL}").fetchone()[0])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        if self._conn is not None:
            self._conn.close()
        self._spill.close()

    # --- background thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch, barriers, purges, stop = self._take()
            try:
                if batch:
                    self._write(batch)
                drain_now = bool(barriers) or stop
                if self._spilling and (drain_now or self._clock() >= self._next_retry):
                    self._drain()
                for purge in purges:
                    self._purge(purge.before)
            except Exception:
                # A bug, not an outage (those are handled above): keep the thread alive so
                # later events are still written and flush() still returns.
                log.exception("PostgreSQL event log writer failed on a batch")
            finally:
                for barrier in barriers:
                    barrier.done.set()
            if stop:
                return

    def _take(self) -> tuple[list[Spilled], list[_Barrier], list[_Purge], bool]:
        batch: list[Spilled] = []
        barriers: list[_Barrier] = []
        purges: list[_Purge] = []
        # Idle: wake up at the retry interval so a spill drains without new traffic.
        timeout = self._retry_interval if self._spilling else None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return batch, barriers, purges, False
        deadline = self._clock() + self._flush_interval
        while True:
            if item is None:
                return batch, barriers, purges, True
            if isinstance(item, _Barrier):
                barriers.append(item)
                break  # a flush is waiting: write now
            if isinstance(item, _Purge):
                purges.append(item)
            else:
                batch.append(item)
            if len(batch) >= self._max_batch:
                break
            left = deadline - self._clock()
            if left <= 0:
                break
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
        return batch, barriers, purges, False

    def _write(self, batch: list[Spilled]) -> None:
        if not self._spilling:
            try:
                self._insert(batch)
                return
            except _CONNECTION_ERRORS as exc:
                self._lost_connection(exc)
        self._spill_rows(self._spill_insert, [(eid, *values) for eid, values in batch])

    def _spill_rows(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        # Retry until the spill commits: it is the last place these events can go.
        attempt = 0
        while True:
            try:
                with self._spill_lock:
                    self._spill.execute("BEGIN IMMEDIATE")
                    try:
                        self._spill.executemany(statement, rows)
                        self._spill.execute("COMMIT")
                    except BaseException:
                        if self._spill.in_transaction:
                            self._spill.execute("ROLLBACK")
                        raise
                return
            except sqlite3.Error as exc:
                attempt += 1
                if attempt == 1 or attempt % 20 == 0:
                    log.error("event spill commit failed (attempt %d), retrying: %s",
                              attempt, exc)
                threading.Event().wait(min(5.0, 0.05 * 2**attempt))

    def _drain(self) -> None:
        """Move the spill to PostgreSQL, oldest first; stop at the first failure."""
        drained = 0
        try:
            while True:
                with self._spill_lock:
                    rows = self._spill.execute(
                        f"SELECT seq, event_id, {', '.join(COLUMNS)} FROM {_SPILL} "
                        "ORDER BY seq LIMIT ?", (self._max_batch,)).fetchall()
                if not rows:
                    break
                self._insert([(r[1], r[2:]) for r in rows])
                # Deleted only after PostgreSQL committed; if we die in between, the next
                # drain writes them again and ON CONFLICT skips them.
                with self._spill_lock:
                    self._spill.execute(f"DELETE FROM {_SPILL} WHERE seq <= ?", (rows[-1][0],))
                drained += len(rows)
        except _CONNECTION_ERRORS as exc:
            self._lost_connection(exc)
            if drained:
                log.warning("drained %d spilled events before PostgreSQL failed again", drained)
            return
        self._spilling = False
        log.warning("PostgreSQL event log is back: %d spilled events drained", drained)

    def _insert(self, batch: list[Spilled]) -> None:
        """Write ``batch`` to PostgreSQL; raises only connection errors. A batch PostgreSQL
        refuses is retried row by row and the refused rows are set aside (``pg_rejected``),
        so one bad row can never block the log."""
        try:
            self._copy(batch)
        except _CONNECTION_ERRORS:
            raise
        except psycopg.Error as exc:
            if len(batch) == 1:
                self._reject(batch[0], exc)
                return
            for item in batch:
                self._insert([item])

    def _copy(self, batch: list[Spilled]) -> None:
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                with cur.copy(self._copy_sql) as copy:
                    for eid, values in batch:
                        copy.write_row(_pg_row(eid, values))
                cur.execute(self._insert_sql)
            conn.commit()
        except psycopg.Error:
            self._drop_connection()
            raise
        self.written += len(batch)

    def _reject(self, item: Spilled, exc: Exception) -> None:
        self.rejected += 1
        log.error("PostgreSQL refused an event; kept in %s of the spill file", _REJECTED,
                  extra={"cause": repr(exc)})
        eid, values = item
        self._spill_rows(
            f"INSERT INTO {_REJECTED} (event_id, error, {', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in range(len(COLUMNS) + 2))})",
            [(eid, str(exc), *values)])

    def _purge(self, before: float) -> None:
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DELETE FROM {}.events WHERE event_time < %s").format(
                    sql.Identifier(self._schema)), (before,))
            conn.commit()
        except psycopg.Error as exc:
            self._drop_connection()
            log.warning("event purge skipped, PostgreSQL unavailable: %s", exc)
        with self._spill_lock:
            self._spill.execute(f"DELETE FROM {_SPILL} WHERE event_time < ?", (before,))

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            conn = pg_connect(self._dsn, connect_timeout=self._connect_timeout)
            try:
                ensure_schema(conn, self._schema, _event_ddl())
                with conn.cursor() as cur:
                    cur.execute(sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS rf_staging "
                        "(LIKE {}.events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS").format(
                        sql.Identifier(self._schema)))
                conn.commit()
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _lost_connection(self, exc: Exception) -> None:
        if not self._spilling:
            log.error("PostgreSQL event log unavailable; spilling events to the local buffer "
                      "and retrying every %.1f s", self._retry_interval,
                      extra={"cause": repr(exc)})
        self._spilling = True
        self._next_retry = self._clock() + self._retry_interval
