"""Analyst labels in SQLite (the embedded store's database file)."""

from __future__ import annotations

from pathlib import Path

from ringfence.service.adapters.sqlite_writer import SqliteWriter, connect
from ringfence.service.core.model import Label, LabelTarget, LabelValue

_SCHEMA = ("CREATE TABLE IF NOT EXISTS labels (id INTEGER PRIMARY KEY, target INTEGER NOT NULL, "
           "target_id TEXT NOT NULL, value INTEGER NOT NULL, created_at REAL NOT NULL, "
           "author TEXT NOT NULL, note TEXT NOT NULL)")


class SqliteLabelStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer = SqliteWriter(path, name="labels", flush_interval=0.01)
        self._writer.execute_now(_SCHEMA)

    def add(self, label: Label) -> None:
        self._writer.submit(("INSERT INTO labels(target, target_id, value, created_at, author, "
                             "note) VALUES (?, ?, ?, ?, ?, ?)",
                             (int(label.target), label.target_id, int(label.value),
                              label.created_at, label.author, label.note)))
        self._writer.flush()  # a label is acknowledged only once it is on disk

    def all(self) -> list[Label]:
        conn = connect(self._path)
        try:
            rows = conn.execute("SELECT target, target_id, value, created_at, author, note "
                                "FROM labels ORDER BY id").fetchall()
        finally:
            conn.close()
        return [Label(LabelTarget(t), tid, LabelValue(v), at, author, note)
                for t, tid, v, at, author, note in rows]

    def close(self) -> None:
        self._writer.close()


class MemoryLabelStore:
    def __init__(self) -> None:
        self._labels: list[Label] = []

    def add(self, label: Label) -> None:
        self._labels.append(label)

    def all(self) -> list[Label]:
        return list(self._labels)

    def close(self) -> None:
        return None
