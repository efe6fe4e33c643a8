"""The installed ``ringfence`` command: serve on embedded defaults, score, stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

RINGFENCE = [sys.executable, "-m", "ringfence.service.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(target: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise AssertionError("server did not become SERVING")


@pytest.fixture
def server(tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")}
    env["RINGFENCE_LOG_FORMAT"] = "json"
    proc = subprocess.Popen([*RINGFENCE, "serve", "--port", str(port), "--data-dir",
                             str(tmp_path / "data")], env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_serving(f"127.0.0.1:{port}")
        yield proc, f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_score_and_sigterm(server):
    proc, target = server
    out = subprocess.run([*RINGFENCE, "score", "--target", target, "--account", "alice",
                          "--ip", "192.0.2.55", "--device-id", "dev-1"],
                         capture_output=True, text=True, timeout=30, check=True)
    decision = json.loads(out.stdout)
    assert decision["limitKey"] == "account:alice"
    assert decision["action"] == "ACTION_ALLOW"

    bad = subprocess.run([*RINGFENCE, "score", "--target", target, "--json",
                          '{"accountId": "a", "clientIp": "nope"}'],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr and "client_ip" in bad.stderr

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    logs = proc.stderr.read()
    assert "ringfence stopped" in logs
    assert "192.0.2.55" not in logs  # raw IPs never reach the logs


def test_invalid_settings_exit_with_a_message(tmp_path):
    env = {**os.environ, "RINGFENCE_PORT": "not-a-port"}
    out = subprocess.run([*RINGFENCE, "serve", "--data-dir", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "port" in out.stderr


def test_serve_help_documents_the_settings():
    out = subprocess.run([*RINGFENCE, "serve", "--help"], capture_output=True, text=True,
                         timeout=30, check=True)
    assert "RINGFENCE_DATA_DIR" in out.stdout and "RINGFENCE_GEOIP_ASN_DB" in out.stdout
