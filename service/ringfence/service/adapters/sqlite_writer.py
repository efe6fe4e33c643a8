"""A background thread that owns one SQLite connection and commits queued writes in batches.

Writes are queued from the serving thread (never blocking it on disk) and committed together
every ``flush_interval`` seconds or ``max_batch`` rows, whichever comes first (0: as soon as the
queue is empty, i.e. group commit). ``flush()`` waits until everything queued before it is
committed. A failed commit is retried until it succeeds; ``failing`` says it is happening and
``on_failure`` hears of each failed attempt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Job = tuple[str, Sequence[Any]] | Callable[[sqlite3.Connection], None]
Committed = Callable[[], None]


def connect(path: Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection in WAL mode: readers never block the writer and vice versa."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def lower_thread_priority(increment: int) -> bool:
    """Raise the calling thread's nice value by ``increment`` (Linux schedules threads on
    their own nice values; elsewhere this does nothing). False if it could not."""
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except OSError:
        return False
    return True


class SqliteWriter:
    def __init__(self, path: Path, *, name: str, flush_interval: float = 0.05,
                 max_batch: int = 2000, synchronous: str = "NORMAL",
                 max_queued: int = 200_000, niceness: int = 0,
                 on_failure: Callable[[Exception], None] | None = None) -> None:
        self._conn = connect(path, synchronous=synchronous)
        self._queue: queue.Queue[tuple[Job, Committed | None] | None] = queue.Queue(max_queued)
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._closed = False
        self.failures = 0
        self.dropped = 0
        self.failing = False  # the last commit attempt failed (full disk, I/O error)
        self._on_failure = on_failure
        self._niceness = niceness
        self._thread = threading.Thread(target=self._run, name=f"sqlite-{name}", daemon=True)
        self._thread.start()

    def execute_now(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement on the writer's connection before the thread uses it (schema set-up)."""
        self._conn.execute(sql, params)

    def submit(self, job: Job, on_commit: Committed | None = None) -> bool:
        """Queue a write without blocking. False (and counted in ``dropped``) only when
        ``max_queued`` writes are already waiting, i.e. the disk has been failing for long."""
        if self._closed:
            raise RuntimeError("writer is closed")
        try:
            self._queue.put_nowait((job, on_commit))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("SQLite writer queue full: %d writes dropped so far", self.dropped)
            return False
        return True

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every write queued so far is committed."""
        done = threading.Event()
        self._queue.put((lambda _conn: None, done.set))
        if not done.wait(timeout):
            raise TimeoutError("SQLite writer did not flush in time")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        if self._niceness:
            lower_thread_priority(self._niceness)
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            # The interval counts from the batch's first write, not from the last one: under
            # steady traffic writes never pause for flush_interval, and waiting for such a
            # pause kept batches open for max_batch writes (tens of seconds uncommitted).
            deadline = time.monotonic() + self._flush_interval
            try:
                while len(batch) < self._max_batch:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
            except queue.Empty:
                pass
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Job, Committed | None]]) -> None:
        # Retry until the batch commits (a full or failing disk must not lose queued writes);
        # meanwhile new writes wait in the bounded queue.
        attempt = 0
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for job, _ in batch:
                    if callable(job):
                        job(self._conn)
                    else:
                        self._conn.execute(job[0], job[1])
                self._conn.execute("COMMIT")
                break
            except sqlite3.Error as exc:
                self.failures += 1
                self.failing = True
                attempt += 1
                if self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                if self._on_failure is not None:
                    self._on_failure(exc)
                if attempt == 1 or attempt % 20 == 0:
                    log.error("SQLite commit of %d writes failed (attempt %d), retrying: %s",
                              len(batch), attempt, exc)
                threading.Event().wait(min(5.0, 0.05 * 2**attempt))
        self.failing = False
        for _, on_commit in batch:
            if on_commit is not None:
                on_commit()
