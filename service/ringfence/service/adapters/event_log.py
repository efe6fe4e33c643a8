"""The embedded event log: every scored request, appended to a SQLite file for the batch job.

An event is durable once its batch commits: at most about 70 ms after the decision was
returned (rows are handed to the writer thread every 20 ms or 256 events, and the writer commits
every ``flush_interval``, 50 ms). With ``synchronous=NORMAL`` (default) a committed event survives a
crash of the process; with ``FULL`` it also survives a power loss, at some cost in throughput.
IPs, prefixes, device ids and JA4 are stored only as keyed hashes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

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


class SqliteEventLog:
    def __init__(self, path: Path, *, flush_interval: float = 0.05,
                 synchronous: str = "NORMAL") -> None:
        self.path = path
        self._writer = SqliteWriter(path, name="events", flush_interval=flush_interval,
                                    synchronous=synchronous)
        for statement in _SCHEMA:
            self._writer.execute_now(statement)
        self._pending: list[tuple[object, ...]] = []

    def append(self, event: ScoredEvent) -> None:
        # Rows gather here and go to the writer thread in batches: waking the thread for each
        # event cost 10% of a Score. The app calls submit_pending() every 20 ms.
        self._pending.append(_row(event))
        if len(self._pending) >= _BATCH:
            self.submit_pending()

    def submit_pending(self) -> None:
        if self._pending:
            rows, self._pending = self._pending, []
            self._writer.submit(lambda conn: conn.executemany(_INSERT, rows))

    def purge(self, before: float) -> None:
        """Delete events older than ``before`` (epoch seconds)."""
        self.submit_pending()  # keep the order: events appended before the purge come first
        self._writer.submit(("DELETE FROM events WHERE event_time < ?", (before,)))

    @property
    def dropped(self) -> int:
        return self._writer.dropped

    def flush(self) -> None:
        self.submit_pending()
        self._writer.flush()

    def close(self) -> None:
        self.submit_pending()
        self._writer.close()


class NullEventLog:
    """For replays and tests that do not keep events."""

    def append(self, event: ScoredEvent) -> None:
        return None

    def purge(self, before: float) -> None:
        return None

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None
