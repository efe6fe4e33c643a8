"""Where the batch jobs read scored events from: the embedded SQLite log, Parquet files (local
or any fsspec URL, read with DuckDB) or the PostgreSQL event log.

A source is a small picklable value (a path, URLs or a DSN) so a dask task can open it on a
worker. It answers three questions: the newest event time, per-account event statistics in a
window (one pass over an index; it plans the partitions and fingerprints the input), and the
events of a range of accounts ordered by account and event time — only the columns a profile
rebuild reads (``PROFILE_COLUMNS``; a third of the row, and a third of the read cost).
``read_events`` gives whole rows for exports; ``query`` runs the audit report's SQL on the
source's own engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ringfence.service.core.model import ScoredEvent
from ringfence.service.jobs import JobError

Row = tuple[Any, ...]
AccountStat = tuple[str, int, float, float]  # account id, events, first and last event time

FIELDS = tuple(f.name for f in dataclasses.fields(ScoredEvent))
FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(ScoredEvent)}
# What ``event_from_log`` reads, plus the account id to group rows by: all a rebuild needs.
PROFILE_COLUMNS = ("account_id", "event_time", "ip_hash", "prefix_hash", "asn", "country",
                   "anonymized", "device_key", "stack_key", "content_signature", "task",
                   "input_tokens", "output_tokens", "account_created_at")
_BLANK = {"str": "''", "bool": "FALSE", "int": "0", "float": "0.0"}
BATCH_ROWS = 50_000


def profile_select(prefix: str = "") -> str:
    return ", ".join(prefix + c for c in PROFILE_COLUMNS)


class EventSource(Protocol):
    """A readable event log (see the module docstring)."""

    @property
    def name(self) -> str: ...

    def newest(self) -> float | None: ...

    def account_stats(self, since: float, until: float) -> list[AccountStat]: ...

    def read_accounts(self, since: float, until: float, first: str, last: str,
                      accounts: Sequence[str]) -> Iterator[list[Row]]:
        """``PROFILE_COLUMNS`` of the events of the accounts ``first`` ≤ id ≤ ``last`` (all
        of them in ``accounts``), grouped by account, in event-time order within each."""
        ...

    def read_events(self, since: float, until: float) -> Iterator[list[Row]]:
        """Every field of the events in the window, in event-time order (``reasons`` as a
        list of codes), for ``export-events``."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run ``sql`` with ``{events}`` (the events relation), ``{reasons}`` (reason codes
        joined by commas) and ``{day}`` (whole days since epoch, as an integer) filled in and
        ``?`` placeholders."""
        ...


# --- the embedded SQLite log -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SqliteSource:
    path: Path

    @property
    def name(self) -> str:
        return str(self.path)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            raise JobError(f"event log {self.path} does not exist (give --data-dir or "
                           "--events-db, or read Parquet with --parquet)")
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise JobError(f"cannot open {self.path}: {exc}") from None
        try:
            try:
                conn.execute("SELECT 1 FROM events LIMIT 0")
            except sqlite3.DatabaseError as exc:
                problem = ("it has no events table (is it a ringfence event log?)"
                           if "no such table" in str(exc) else str(exc))
                raise JobError(f"cannot read {self.path}: {problem}") from None
            yield conn
        finally:
            conn.close()

    def newest(self) -> float | None:
        with self._connect() as conn:
            value = conn.execute("SELECT max(event_time) FROM events").fetchone()[0]
        return None if value is None else float(value)

    def account_stats(self, since: float, until: float) -> list[AccountStat]:
        # The (account_id, event_time) index covers this query: one sequential index pass.
        sql = ("SELECT account_id, count(*), min(event_time), max(event_time) FROM events "
               "{hint} WHERE event_time >= ? AND event_time <= ? GROUP BY account_id")
        with self._connect() as conn:
            try:
                rows = conn.execute(sql.format(hint="INDEXED BY events_account"),
                                    (since, until)).fetchall()
            except sqlite3.OperationalError:  # a log without that index: let SQLite plan
                rows = conn.execute(sql.format(hint=""), (since, until)).fetchall()
        return [(str(a), int(n), float(lo), float(hi)) for a, n, lo, hi in rows]

    def read_accounts(self, since: float, until: float, first: str, last: str,
                      accounts: Sequence[str]) -> Iterator[list[Row]]:
        sql = (f"SELECT {profile_select()} FROM events WHERE account_id >= ? AND account_id <= ? "
               "AND event_time >= ? AND event_time <= ? ORDER BY account_id, event_time, id")
        with self._connect() as conn:
            cursor = conn.execute(sql, (first, last, since, until))
            while rows := cursor.fetchmany(BATCH_ROWS):
                yield rows

    def read_events(self, since: float, until: float) -> Iterator[list[Row]]:
        sql = (f"SELECT {', '.join(FIELDS)} FROM events WHERE event_time >= ? AND "
               "event_time <= ? ORDER BY event_time, id")
        at = FIELDS.index("reasons")
        with self._connect() as conn:
            cursor = conn.execute(sql, (since, until))
            while rows := cursor.fetchmany(BATCH_ROWS):
                yield [(*r[:at], r[at].split(",") if r[at] else [], *r[at + 1:])
                       for r in rows]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        text = sql.format(events="events", reasons="reasons",
                          day="CAST(event_time / 86400 AS INTEGER)")
        with self._connect() as conn:
            return conn.execute(text, tuple(params)).fetchall()


# --- Parquet files (local or fsspec), read with DuckDB ------------------------------------------
@dataclass(frozen=True, slots=True)
class ParquetSource:
    """Parquet files whose columns are ScoredEvent fields (``ringfence export-events`` writes
    them). ``urls`` are paths, directories (every ``*.parquet`` below) or globs, local or any
    fsspec URL (``s3://…`` needs s3fs installed, and so on)."""

    urls: tuple[str, ...]

    @property
    def name(self) -> str:
        return ", ".join(self.urls)

    def files(self) -> tuple[list[str], Any]:
        """The files to read (as DuckDB will name them) and the fsspec filesystem for remote
        ones (None when all are local)."""
        import fsspec

        out: list[str] = []
        remote = None
        for url in self.urls:
            try:
                fs, path = fsspec.core.url_to_fs(url)
            except (ValueError, ImportError) as exc:
                raise JobError(f"cannot open {url}: {exc}") from None
            local = "file" in _protocols(fs)
            if any(c in path for c in "*?["):
                found = sorted(fs.glob(path))
            elif fs.isdir(path):
                found = sorted(fs.glob(path.rstrip("/") + "/**/*.parquet"))
            elif fs.exists(path):
                found = [path]
            else:
                raise JobError(f"Parquet input {url} does not exist")
            if not found:
                raise JobError(f"no Parquet files at {url}")
            if local:
                out.extend(os.path.abspath(p) for p in found)
            else:
                remote = fs
                protocol = _protocols(fs)[0]
                out.extend(f"{protocol}://{p.lstrip('/')}" if protocol == "memory"
                           else f"{protocol}://{p}" for p in found)
        return out, remote

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Any]:
        import duckdb

        files, remote = self.files()
        conn = duckdb.connect()
        try:
            if remote is not None:
                conn.register_filesystem(remote)
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            try:
                conn.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet([{listed}], "
                             "union_by_name=true, filename=true, file_row_number=true)")
                columns = {r[0]: r[1] for r in conn.execute("DESCRIBE events").fetchall()}
            except duckdb.Error as exc:
                raise JobError(f"cannot read Parquet input {self.name}: "
                               f"{str(exc).splitlines()[0]}") from None
            missing = sorted(set(PROFILE_COLUMNS) - set(columns))
            if missing:
                raise JobError(f"Parquet input {self.name} lacks columns {', '.join(missing)} "
                               "(ringfence export-events writes every ScoredEvent field)")
            yield conn, columns
        finally:
            conn.close()

    def _run(self, conn: Any, sql: str, params: Sequence[Any]) -> Any:
        import duckdb

        try:
            return conn.execute(sql, list(params))
        except duckdb.Error as exc:
            raise JobError(f"cannot read Parquet input {self.name}: "
                           f"{str(exc).splitlines()[0]}") from None

    def newest(self) -> float | None:
        with self._connect() as (conn, _):
            value = self._run(conn, "SELECT max(event_time) FROM events", ()).fetchone()[0]
        return None if value is None else float(value)

    def account_stats(self, since: float, until: float) -> list[AccountStat]:
        with self._connect() as (conn, _):
            rows = self._run(conn, "SELECT account_id, count(*), min(event_time), "
                             "max(event_time) FROM events WHERE event_time >= ? AND "
                             "event_time <= ? GROUP BY account_id", (since, until)).fetchall()
        return [(str(a), int(n), float(lo), float(hi)) for a, n, lo, hi in rows]

    def read_accounts(self, since: float, until: float, first: str, last: str,
                      accounts: Sequence[str]) -> Iterator[list[Row]]:
        # DuckDB compares VARCHAR bytewise, i.e. in Python's str order. The file name and
        # row number keep the order of events with equal times as they were written.
        sql = (f"SELECT {profile_select()} FROM events WHERE account_id >= ? AND "
               "account_id <= ? AND event_time >= ? AND event_time <= ? "
               "ORDER BY account_id, event_time, filename, file_row_number")
        with self._connect() as (conn, _):
            for batch in _arrow_batches(conn, sql, (first, last, since, until), self.name):
                columns = [c.to_pylist() for c in batch.columns]
                yield list(zip(*columns, strict=True))

    def read_events(self, since: float, until: float) -> Iterator[list[Row]]:
        with self._connect() as (conn, columns):
            listed = ", ".join(
                (f"string_split({n}, ',')" if n == "reasons" and
                 not str(columns[n]).endswith("[]") else n) if n in columns else
                _BLANK.get(FIELD_TYPES[n], "NULL") for n in FIELDS)
            sql = (f"SELECT {listed} FROM events WHERE event_time >= ? AND event_time <= ? "
                   "ORDER BY event_time, filename, file_row_number")
            for batch in _arrow_batches(conn, sql, (since, until), self.name):
                yield list(zip(*[c.to_pylist() for c in batch.columns], strict=True))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._connect() as (conn, columns):
            reasons = ("array_to_string(reasons, ',')"
                       if str(columns.get("reasons", "VARCHAR")).endswith("[]") else "reasons")
            text = sql.format(events="events", reasons=reasons,
                              day="CAST(floor(event_time / 86400) AS BIGINT)")
            return list(self._run(conn, text, params).fetchall())


def _arrow_batches(conn: Any, sql: str, params: Sequence[Any], name: str) -> Iterator[Any]:
    """Record batches of a DuckDB query, streamed (``to_arrow_reader`` since DuckDB 2.0,
    ``fetch_arrow_reader`` before it)."""
    import duckdb

    try:
        relation = conn.sql(sql, params=list(params))
        reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
        yield from reader(BATCH_ROWS)
    except duckdb.Error as exc:
        raise JobError(f"cannot read Parquet input {name}: {str(exc).splitlines()[0]}") from None


def in_process_only(source: EventSource) -> bool:
    """True when another process cannot read ``source``: Parquet in fsspec's ``memory://``
    filesystem, which lives in this process (tests, notebooks)."""
    return isinstance(source, ParquetSource) and any(
        url.startswith("memory://") for url in source.urls)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


# --- the PostgreSQL event log ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PostgresSource:
    """``{schema}.events`` as the PostgreSQL event log writes it. Events still waiting in a
    replica's local spill are read once they have been drained to PostgreSQL."""

    dsn: str
    schema: str = "ringfence"

    @property
    def name(self) -> str:
        return f"PostgreSQL schema {self.schema}"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Any]:
        import psycopg

        from ringfence.service.adapters.postgres_log import check_schema_name

        check_schema_name(self.schema)
        try:
            conn = psycopg.connect(self.dsn, connect_timeout=5)
        except psycopg.Error as exc:
            raise JobError(f"cannot connect to PostgreSQL: {str(exc).splitlines()[0]}",
                           exit_code=1) from None
        try:
            yield conn
        except psycopg.errors.UndefinedTable:
            raise JobError(f"{self.schema}.events does not exist (no event has been logged "
                           "to PostgreSQL under that schema)") from None
        except psycopg.Error as exc:
            raise JobError(f"cannot read {self.schema}.events: {str(exc).splitlines()[0]}",
                           exit_code=1) from None
        finally:
            conn.close()

    def _events(self) -> str:
        return f'"{self.schema}".events'

    def newest(self) -> float | None:
        with self._connect() as conn:
            value = conn.execute(f"SELECT max(event_time) FROM {self._events()}").fetchone()[0]
        return None if value is None else float(value)

    def account_stats(self, since: float, until: float) -> list[AccountStat]:
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT account_id, count(*), min(event_time), max(event_time) FROM "
                f"{self._events()} WHERE event_time >= %s AND event_time <= %s "
                "GROUP BY account_id", (since, until)).fetchall()
        return [(str(a), int(n), float(lo), float(hi)) for a, n, lo, hi in rows]

    def read_accounts(self, since: float, until: float, first: str, last: str,
                      accounts: Sequence[str]) -> Iterator[list[Row]]:
        # The database collation may order ids unlike Python, so the partition is named by
        # its account list, not by the range.
        sql = (f"SELECT {profile_select()} FROM {self._events()} WHERE account_id = ANY(%s) "
               "AND event_time >= %s AND event_time <= %s "
               "ORDER BY account_id, event_time, event_id")
        with self._connect() as conn, conn.transaction(), \
                conn.cursor(name="rf_recluster") as cursor:
            cursor.itersize = BATCH_ROWS
            cursor.execute(sql, (list(accounts), since, until))
            while rows := cursor.fetchmany(BATCH_ROWS):
                yield rows

    def read_events(self, since: float, until: float) -> Iterator[list[Row]]:
        sql = (f"SELECT {', '.join(FIELDS)} FROM {self._events()} WHERE event_time >= %s "
               "AND event_time <= %s ORDER BY event_time, event_id")
        with self._connect() as conn, conn.transaction(), \
                conn.cursor(name="rf_export") as cursor:
            cursor.itersize = BATCH_ROWS
            cursor.execute(sql, (since, until))
            while rows := cursor.fetchmany(BATCH_ROWS):
                yield rows

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        text = sql.replace("%", "%%").replace("?", "%s").format(
            events=self._events(), reasons="array_to_string(reasons, ',')",
            day="CAST(floor(event_time / 86400) AS BIGINT)")
        with self._connect() as conn:
            return list(conn.execute(text, tuple(params)).fetchall())
