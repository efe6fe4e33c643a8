"""The SQLite writer commits a batch flush_interval after its first write even while writes
never pause. It used to wait for a pause of flush_interval: under steady traffic (the app hands
events over every 20 ms, the interval is 50 ms) nothing was committed until max_batch writes
had queued, and a kill -9 lost every event answered since the last pause."""

from __future__ import annotations

import threading

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
