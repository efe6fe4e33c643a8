"""The SQLite writer commits a batch flush_interval after its first write even while writes
never pause. It used to wait for a pause of flush_interval: under steady traffic (the app hands
events over every 20 ms, the interval is 50 ms) nothing was committed until max_batch writes
had queued, and a kill -9 lost every event answered since the last pause."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from ringfence.service.adapters.embedded_store import WRITER_NICENESS, EmbeddedProfileStore
from ringfence.service.adapters.sqlite_writer import SqliteWriter


def test_steady_writes_are_committed_while_they_keep_coming(tmp_path):
    writer = SqliteWriter(tmp_path / "w.db", name="test", flush_interval=0.05)
    writer.execute_now("CREATE TABLE t (x INTEGER)")
    committed = threading.Event()
    stop = threading.Event()
    submitted = 0
    try:
        # A write every 5 ms (far more often than the 50 ms interval) until the first commit,
        # bounded at 2000 writes = 10 s: the old writer would only commit after all of them.
        while not committed.is_set() and submitted < 2000:
            writer.submit(("INSERT INTO t VALUES (?)", (submitted,)), committed.set)
            submitted += 1
            stop.wait(0.005)
        assert committed.is_set()
        assert submitted < 1000, "the first commit waited for a pause in the writes"
    finally:
        writer.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_the_profile_writer_runs_at_a_lower_cpu_priority_than_the_server(tmp_path):
    # A checkpoint is thousands of rows every few seconds: at the server's own priority the
    # writer thread took turns with the event loop on a shared core (p99 ~15 ms at half load)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    store = EmbeddedProfileStore(tmp_path / "state.db")
    try:
        store.flush()  # the writer thread has started and run
        writer = store._writer
        assert writer is not None
        tid = writer._thread.native_id
        assert tid is not None
        assert os.getpriority(os.PRIO_PROCESS, tid) == min(19, base + WRITER_NICENESS)
    finally:
        store.close()
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the calling thread is unchanged
