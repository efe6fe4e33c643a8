"""A full disk under the event log, on a real ``ringfence serve`` process.

The disk fills when the child's RLIMIT_FSIZE (set before exec, soft limit only) stops every file
it writes from growing past 256 KiB: SQLite's writes fail as they would on a full volume, with
no root and no mount. The test then "frees the disk" by raising the limit with prlimit(2).

queued (default): Score keeps answering OK; the failure is logged once (then every 20th retry)
and counted in ringfence_event_log_failed_commits; once space is back the queued events are
committed, none lost. committed: a Score whose event cannot be committed is answered
UNAVAILABLE naming the event log, never OK; once space is back answers are OK again.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import urllib.request

import grpc
from live_services import free_port

from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc

LIMIT = 256 * 1024
MAX_CALLS = 20_000  # bound on the calls it may take to fill 256 KiB (a few hundred do)


def failed_commits(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.search(r"^ringfence_event_log_failed_commits_total (\S+)$", text, re.M)
    assert found, "the failed-commits counter is exported"
    return float(found.group(1))


def stored_accounts(db) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT account_id FROM events")}


def score(n: int) -> pb.ScoreRequest:
    return pb.ScoreRequest(
        account_id=f"disk-{n}",
        client_ip="198.51.100.4",
        fingerprint=pb.DeviceFingerprint(user_agent="fill/" + "x" * 200),
    )


async def fill_until_failing(stub, metrics_port: int, acked: set[str]) -> int:
    """Score until the event log reports a failed commit; returns the calls made."""
    for n in range(MAX_CALLS):
        await stub.Score(score(n), timeout=5)
        acked.add(f"disk-{n}")
        if n % 50 == 49:
            await asyncio.sleep(0.06)  # let a batch commit (queued mode commits every 50 ms)
            if failed_commits(metrics_port) > 0:
                return n + 1
    raise AssertionError(f"the event log did not fail within {MAX_CALLS} calls")


async def test_full_disk_keeps_answering_and_loses_nothing_once_freed(serve, tmp_path):
    data, metrics_port = tmp_path / "data", free_port()
    server = serve(data, fsize_limit=LIMIT, RINGFENCE_METRICS_PORT=str(metrics_port))
    acked: set[str] = set()
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        made = await fill_until_failing(stub, metrics_port, acked)
        for n in range(made, made + 300):  # the disk is full: answers keep coming
            reply = await stub.Score(score(n), timeout=5)
            assert 0.0 <= reply.risk_score <= 1.0
            acked.add(f"disk-{n}")
    assert failed_commits(metrics_port) > 0
    log = server.log()
    assert re.search(r"SQLite commit of \d+ writes failed \(attempt 1\), retrying", log), log
    assert log.count("SQLite commit of") < 50  # logged once, then every 20th retry

    server.lift_file_size_limit()  # space is back: the retried batches commit
    assert server.stop() == 0  # the graceful stop commits what is still queued
    assert acked <= stored_accounts(data / "events.db")


async def test_full_disk_with_committed_ack_answers_unavailable_never_ok(serve, tmp_path):
    data, metrics_port = tmp_path / "data", free_port()
    server = serve(
        data,
        fsize_limit=LIMIT,
        RINGFENCE_METRICS_PORT=str(metrics_port),
        RINGFENCE_EVENT_LOG_ACK="committed",
    )
    acked: set[str] = set()
    refused = 0
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        for n in range(MAX_CALLS):
            try:
                await stub.Score(score(n), timeout=10)
            except grpc.aio.AioRpcError as err:
                assert err.code() is grpc.StatusCode.UNAVAILABLE, err
                assert "event log" in err.details() and "events.db" in err.details()
                refused += 1
                if refused == 20:
                    break
            else:
                acked.add(f"disk-{n}")
        assert refused == 20, "the disk never filled"
        assert failed_commits(metrics_port) > 0

        server.lift_file_size_limit()
        # Answers turn OK again once a retried commit succeeds (retries back off to 5 s).
        for n in range(MAX_CALLS, MAX_CALLS + 400):
            try:
                await stub.Score(score(n), timeout=10)
            except grpc.aio.AioRpcError as err:
                assert err.code() is grpc.StatusCode.UNAVAILABLE, err
                await asyncio.sleep(0.05)
                continue
            acked.add(f"disk-{n}")
            break
        assert f"disk-{n}" in acked, "answers did not recover after the disk was freed"
    server.kill()  # even a kill now: everything acknowledged was already committed
    assert acked <= stored_accounts(data / "events.db")
