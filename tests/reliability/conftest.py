"""Faults and hostile input against real servers: ``ringfence serve`` child processes (killed
with SIGKILL, starved of disk with RLIMIT_FSIZE) and in-process grpc.aio servers.

Every process started here is killed at the end of its test; nothing here touches the shared
Redis or PostgreSQL (the Redis fault runs its own throwaway redis-server).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from live_services import free_port

from ringfence.service.app import App
from ringfence.service.settings import Settings

KEY_HEX = "00" * 32


class ServeProcess:
    """One ``ringfence serve`` child process on a fixed port and data directory."""

    def __init__(self, data_dir: Path, env: dict[str, str], fsize_limit: int | None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")}
        self._env = {
            **base,
            "RINGFENCE_HASH_KEY": KEY_HEX,
            "RINGFENCE_LOG_FORMAT": "json",
            "RINGFENCE_CLUSTERING": "false",
            **env,
        }
        self._fsize_limit = fsize_limit
        self.proc: subprocess.Popen[bytes] | None = None

    def _limit_file_size(self) -> None:  # runs in the child, before exec
        assert self._fsize_limit is not None
        # Soft limit only: the test raises it again later with prlimit ("the disk is freed").
        resource.setrlimit(resource.RLIMIT_FSIZE, (self._fsize_limit, resource.RLIM_INFINITY))

    def start(self, timeout: float = 30.0) -> ServeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ringfence.service.cli",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=self._env,
                stdout=log,
                stderr=log,
                preexec_fn=self._limit_file_size if self._fsize_limit else None,
            )
        wait_serving(self.target, self.proc, timeout)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing queued in memory is written."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM and wait: the graceful shutdown path."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def lift_file_size_limit(self) -> None:
        assert self.proc is not None
        resource.prlimit(
            self.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_serving(target: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"ringfence serve exited with {proc.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.05)
    raise AssertionError(f"ringfence serve on {target} did not become SERVING")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``ringfence serve`` processes: ``serve(data_dir, fsize_limit=None, **env)``."""
    started: list[ServeProcess] = []

    def start(
        data_dir: Path | None = None, *, fsize_limit: int | None = None, **env: str
    ) -> ServeProcess:
        server = ServeProcess(data_dir or tmp_path / "data", env, fsize_limit)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        hash_key=KEY_HEX,
        shutdown_grace_s=0.5,
        checkpoint_interval_s=3600,
        geoip_reload_interval_s=3600,
    )
    return Settings(**{**base, **overrides})


@pytest.fixture(scope="session")
def make_settings() -> Callable[..., Settings]:
    """Test settings (loopback, free port, fixed key) with overrides: for module-scoped
    servers that cannot use start_app. A fixture, not an import: every test folder has a
    module named conftest."""
    return settings_for


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """In-process servers with settings overrides; every one started is stopped at the end."""
    apps: list[App] = []

    async def start(**overrides: Any) -> App:
        app = App(settings_for(overrides.pop("data_dir", tmp_path / "data"), **overrides))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        if app.server is not None:
            await app.stop(0)
