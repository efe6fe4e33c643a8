"""The embedded event log: every scored request, appended to a SQLite file for the batch job.

An event is durable once its batch commits: at most ``flush_interval`` (default 50 ms) after
the decision was returned. With ``synchronous=NORMAL`` (default) a committed event survives a
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
_INSERT = (f"INSERT INTO events ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in COLUMNS)})")


def _row(event: ScoredEvent) -> tuple[object, ...]:
    values = dataclasses.astuple(event)
    out = list(values)
    i = COLUMNS.index("reasons")
    out[i] = ",".join(event.reasons)
    j = COLUMNS.index("content_signature")
    # SQLite integers are signed 64-bit: store the unsigned signature's bit pattern.
    if event.content_signature is not None and event.content_signature >= 1 << 63:
        out[j] = event.content_signature - (1 << 64)
    return tuple(out)


class SqliteEventLog:
    def __init__(self, path: Path, *, flush_interval: float = 0.05,
                 synchronous: str = "NORMAL") -> None:
        self.path = path
        self._writer = SqliteWriter(path, name="events", flush_interval=flush_interval,
                                    synchronous=synchronous)
        for statement in _SCHEMA:
            self._writer.execute_now(statement)

    def append(self, event: ScoredEvent) -> None:
        self._writer.submit((_INSERT, _row(event)))

    def purge(self, before: float) -> None:
        """Delete events older than ``before`` (epoch seconds)."""
        self._writer.submit(("DELETE FROM events WHERE event_time < ?", (before,)))

    @property
    def dropped(self) -> int:
        return self._writer.dropped

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
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
