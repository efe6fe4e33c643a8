"""The embedded event log: every scored request, appended to a SQLite file for the batch job.

When is an answered request's event durable? ``ack="queued"`` (the default): once its batch
commits, at most about 70 ms after the decision was returned (rows are handed to the writer
thread every 20 ms or 256 events, and the writer commits every ``flush_interval``, 50 ms); a
``kill -9`` in that window loses the events answered in it. ``ack="committed"``: the server
awaits ``committed()`` before it answers, so an OK answer means the event is committed (group
commit: the writer commits as soon as it is idle, one commit for every request that arrived
meanwhile); when the log cannot commit (full disk) ``committed()`` fails with
EventLogUnavailable and the caller gets an error, not an OK for an event that is not stored.
With ``synchronous=NORMAL`` (default) a committed event survives a crash of the process; with
``FULL`` it also survives a power loss, at some cost in throughput (docs/reliability.md).
IPs, prefixes, device ids and JA4 are stored only as keyed hashes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Literal

from ringfence.service.adapters.sqlite_writer import SqliteWriter
from ringfence.service.core.model import ScoredEvent

COLUMNS = tuple(f.name for f in dataclasses.fields(ScoredEvent))

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, "
    + ", ".join(COLUMNS) + ")",
    "CREATE INDEX IF NOT EXISTS events_time ON events(event_time)",
    "CREATE INDEX IF NOT EXISTS events_account ON events(account_id, event_time)",
)
_BATCH = 256
_INSERT = (f"INSERT INTO events ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in COLUMNS)})")


_REASONS = COLUMNS.index("reasons")
_SIGNATURE = COLUMNS.index("content_signature")


def _row(event: ScoredEvent) -> tuple[object, ...]:
    # getattr, not dataclasses.astuple: astuple deep-copies and costs 18% of a Score.
    out = [getattr(event, name) for name in COLUMNS]
    out[_REASONS] = ",".join(event.reasons)
    # SQLite integers are signed 64-bit: store the unsigned signature's bit pattern.
    if event.content_signature is not None and event.content_signature >= 1 << 63:
        out[_SIGNATURE] = event.content_signature - (1 << 64)
    return tuple(out)


class EventLogUnavailable(Exception):
    """The event log cannot commit (full disk, I/O error): events are not being stored."""


def _nothing(_conn: object) -> None:
    return None


class SqliteEventLog:
    def __init__(self, path: Path, *, flush_interval: float = 0.05,
                 synchronous: str = "NORMAL",
                 ack: Literal["queued", "committed"] = "queued") -> None:
        self.path = path
        self.ack = ack
        self._writer = SqliteWriter(path, name="events", synchronous=synchronous,
                                    flush_interval=0.0 if ack == "committed" else flush_interval,
                                    on_failure=self._commit_failed)
        for statement in _SCHEMA:
            self._writer.execute_now(statement)
        self._pending: list[tuple[object, ...]] = []
        # Durable acknowledgement (ack="committed"); all on the serving event loop except
        # _commit_failed, which the writer thread calls.
        self._appended = 0  # events appended so far
        self._durable = 0  # of which this many are known to be committed
        self._barrier: asyncio.Future[None] | None = None  # waited on, not yet queued
        self._in_flight: set[asyncio.Future[None]] = set()  # queued, not yet committed
        self._loop: asyncio.AbstractEventLoop | None = None

    def append(self, event: ScoredEvent) -> None:
        # Rows gather here and go to the writer thread in batches: waking the thread for each
        # event cost 10% of a Score. The app calls submit_pending() every 20 ms.
        self._pending.append(_row(event))
        self._appended += 1
        if len(self._pending) >= _BATCH:
            self.submit_pending()

    def committed(self) -> asyncio.Future[None] | None:
        """With ack="committed": a future that completes once every event appended so far is
        committed (None when they already are), shared by every caller in this turn of the
        event loop; it fails with EventLogUnavailable while commits fail. With ack="queued":
        None (nobody waits). Call it on the event loop that appends."""
        if self.ack != "committed" or self._appended <= self._durable:
            return None
        if self._writer.failing:
            raise EventLogUnavailable(f"the event log {self.path} cannot commit (disk full or "
                                      "failing); see the server log")
        if self._barrier is None:
            self._loop = loop = asyncio.get_running_loop()
            self._barrier = loop.create_future()
            loop.call_soon(self._queue_barrier)  # after this turn's other calls appended
        return self._barrier

    def _queue_barrier(self) -> None:
        barrier, self._barrier = self._barrier, None
        if barrier is None:
            return
        upto = self._appended
        queued = self.submit_pending()
        loop = barrier.get_loop()
        self._in_flight.add(barrier)

        def done() -> None:  # the writer thread, after the commit
            loop.call_soon_threadsafe(self._release, barrier, upto)

        if not (queued and self._writer.submit(_nothing, done)):
            self._in_flight.discard(barrier)
            barrier.set_exception(EventLogUnavailable("the event log's queue is full"))

    def _release(self, barrier: asyncio.Future[None], upto: int) -> None:
        self._durable = max(self._durable, upto)
        self._in_flight.discard(barrier)
        if not barrier.done():
            barrier.set_result(None)

    def _commit_failed(self, exc: Exception) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fail_in_flight, str(exc))

    def _fail_in_flight(self, reason: str) -> None:
        failed, self._in_flight = self._in_flight, set()
        for barrier in failed:
            if not barrier.done():
                barrier.set_exception(EventLogUnavailable(
                    f"the event log {self.path} cannot commit: {reason}"))
                barrier.exception()  # retrieved: no "never retrieved" warning if nobody waits

    def submit_pending(self) -> bool:
        """Hand the gathered rows to the writer; False if its queue was full (rows dropped)."""
        if not self._pending:
            return True
        rows, self._pending = self._pending, []
        return self._writer.submit(lambda conn: conn.executemany(_INSERT, rows))

    def purge(self, before: float) -> None:
        """Delete events older than ``before`` (epoch seconds)."""
        self.submit_pending()  # keep the order: events appended before the purge come first
        self._writer.submit(("DELETE FROM events WHERE event_time < ?", (before,)))

    @property
    def dropped(self) -> int:
        return self._writer.dropped

    @property
    def failed_commits(self) -> int:
        """Commit attempts that failed so far (each is retried)."""
        return self._writer.failures

    @property
    def failing(self) -> bool:
        """The last commit failed (full disk, I/O error); writes are being retried."""
        return self._writer.failing

    def flush(self) -> None:
        self.submit_pending()
        self._writer.flush()

    def close(self) -> None:
        self.submit_pending()
        self._writer.close()


class NullEventLog:
    """For replays and tests that do not keep events."""

    def committed(self) -> None:
        return None

    def append(self, event: ScoredEvent) -> None:
        return None

    def purge(self, before: float) -> None:
        return None

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None
