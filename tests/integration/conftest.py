"""A real ringfence server in the test's event loop, bound to 127.0.0.1 on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from ringfence.service.app import App
from ringfence.service.settings import Settings
from ringfence.v1 import risk_pb2_grpc

KEY_HEX = "00" * 32


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(host="127.0.0.1", port=0, data_dir=data_dir, hash_key=KEY_HEX,
                                shutdown_grace_s=0.5, checkpoint_interval_s=3600,
                                geoip_reload_interval_s=3600)
    return Settings(**{**base, **overrides})


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start apps with settings overrides; every app started is stopped at the end."""
    apps: list[App] = []

    async def start(**overrides: Any) -> App:
        app = App(make_settings(overrides.pop("data_dir", tmp_path / "data"), **overrides))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        if app.server is not None:
            await app.stop(0)


@pytest.fixture
async def app(start_app: Callable[..., Any]) -> App:
    return await start_app()


@pytest.fixture
async def target(app: App) -> str:
    return f"127.0.0.1:{app.port}"


@pytest.fixture
async def stub(target: str) -> AsyncIterator[risk_pb2_grpc.RiskServiceStub]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield risk_pb2_grpc.RiskServiceStub(channel)
