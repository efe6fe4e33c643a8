"""Replicas agree: ``ringfence serve --workers 2`` (two processes on one port, SO_REUSEPORT)
plus a second replica on another port, all on one Redis prefix, answer as one service.

Clustering is off here: each replica would fit its own model, and cross-replica agreement on
clusters needs a shared model artifact (docs/storage.md, limitations)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from live_services import drop_redis_prefix, free_port, require_redis, unique

from ringfence.client import Client, Fingerprint, OnUnavailable, ScoreRequest

RINGFENCE = [sys.executable, "-m", "ringfence.service.cli", "serve"]
KEY_HEX = "11" * 32  # replicas must share the hash key, or they hash devices differently
SEPARATE_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # a new TCP connection each


def wait_serving(target: str, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"server exited: {proc.stderr.read()}"
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise AssertionError(f"{target} did not become SERVING")


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def socket_inodes(port: int, state: str) -> set[str]:
    """Inodes of TCP sockets on local ``port`` in ``state`` (0A listen, 01 established)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                found.add(fields[9])
    return found


def holders(pids: list[int], inodes: set[str]) -> set[int]:
    """Which of ``pids`` hold one of the sockets ``inodes``."""
    out = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                out.add(pid)
                break
    return out


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    admin = require_redis()
    prefix = unique("rf-replicas")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")}
    env.update(RINGFENCE_STORE="redis", RINGFENCE_REDIS_PREFIX=prefix,
               RINGFENCE_REDIS_TIMEOUT_S="2", RINGFENCE_CLUSTERING="false",
               RINGFENCE_HASH_KEY=KEY_HEX, RINGFENCE_LOG_FORMAT="json",
               RINGFENCE_SHUTDOWN_GRACE_S="0.5")
    shared_port, other_port = free_port(), free_port()
    procs = [
        subprocess.Popen([*RINGFENCE, "--port", str(shared_port), "--workers", "2",
                          "--data-dir", str(tmp_path / "replica-1")], env=env,
                         stderr=subprocess.PIPE, text=True),
        subprocess.Popen([*RINGFENCE, "--port", str(other_port),
                          "--data-dir", str(tmp_path / "replica-2")], env=env,
                         stderr=subprocess.PIPE, text=True),
    ]
    try:
        wait_serving(f"127.0.0.1:{shared_port}", procs[0])
        wait_serving(f"127.0.0.1:{other_port}", procs[1])
        yield procs[0], shared_port, other_port
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                for pid in children(proc.pid):
                    os.kill(pid, signal.SIGKILL)
                proc.kill()
                proc.wait()
        drop_redis_prefix(admin, prefix)
        admin.close()


def request(account: str, n: int) -> ScoreRequest:
    return ScoreRequest(account_id=account, client_ip=f"203.0.{n}.9",  # one prefix each
                        fingerprint=Fingerprint(device_id="planted-device",
                                                user_agent="python-requests/2.32"))


def device_count(decision) -> int:
    reason = next(r for r in decision.reasons if r.code == "DEVICE_SHARED_BY_ACCOUNTS")
    return int(reason.message.split(" used by ")[1].split()[0])


def test_two_workers_and_a_replica_agree(replicas):
    parent, shared_port, other_port = replicas
    # Both workers listen on the shared port.
    workers = children(parent.pid)
    assert len(workers) == 2
    deadline = time.monotonic() + 30
    while holders(workers, socket_inodes(shared_port, "0A")) != set(workers):
        assert time.monotonic() < deadline, "a worker never bound the shared port"
        time.sleep(0.1)

    def client(port: int) -> Client:
        return Client(f"127.0.0.1:{port}", timeout=5, on_unavailable=OnUnavailable.RAISE,
                      channel_options=SEPARATE_CONNECTION)

    # Sixteen connections to the shared port: the kernel spreads them over both workers.
    shared_clients = [client(shared_port) for _ in range(16)]
    other = client(other_port)
    try:
        for i, c in enumerate(shared_clients):
            c.score(request(f"warm-{i}", 200 + i))
        served = holders(workers, socket_inodes(shared_port, "01"))
        assert served == set(workers), "connections did not reach both workers"

        endpoints = [*shared_clients, other]
        decisions = [endpoints[i % len(endpoints)].score(request(f"fleet-{i}", i))
                     for i in range(30)]
        assert [device_count(d) for d in decisions] == list(range(17, 47))  # 16 warm-up

        # Later requests, whichever process answers, see the whole fleet and score alike.
        late = [c.score(request(f"late-{i}", 100 + i))
                for i, c in enumerate([shared_clients[0], shared_clients[7], other])]
        assert [device_count(d) for d in late] == [47, 48, 49]
        assert len({d.risk_score for d in late}) == 1
        assert len({tuple(r.code for r in d.reasons) for d in late}) == 1
        assert all(not d.degraded for d in decisions + late)

        # One account's state and last decision read the same from every process.
        decided = other.score(request("fleet-3", 3))
        views = [c.get_account("fleet-3") for c in (*shared_clients, other)]
        assert {v.profile.total_requests for v in views} == {2}
        assert {v.last_decision.risk_score for v in views} == {decided.risk_score}
        assert {v.last_decision.reasons for v in views} == {decided.reasons}
    finally:
        for c in [*shared_clients, other]:
            c.close()
