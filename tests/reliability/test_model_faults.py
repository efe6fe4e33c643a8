"""A truncated model artifact published under a running server: refused by ReloadModel and by
the model_dir poller, the model in use stays, Score keeps answering; a good artifact published
after it is still picked up by the poller."""

from __future__ import annotations

import asyncio
import logging
import os

import grpc
import pytest

from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc


async def wait_for(predicate, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def publish(models_dir, name: str, data: bytes) -> None:
    """Write an artifact and point LATEST at it, each with an atomic rename."""
    for path, content in ((models_dir / name, data), (models_dir / "LATEST", name.encode())):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(content)
        os.replace(tmp, path)


async def test_truncated_artifact_is_refused_and_the_model_in_use_stays(
    start_app, tmp_path, caplog
):
    app = await start_app(
        data_dir=tmp_path / "data",
        cluster_min_cluster_size=5,
        cluster_min_samples=2,
        cluster_assign_interval_s=3600,
        cluster_refit_interval_s=3600,
        cluster_refit_pending=10**6,
        model_poll_interval_s=0.1,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        batch = [
            pb.ScoreRequest(
                account_id=f"m{i}",
                client_ip=f"198.51.100.{i % 4}",
                fingerprint=pb.DeviceFingerprint(device_id=f"d{i % 3}"),
            )
            for i in range(40)
        ]
        await stub.ScoreBatch(pb.ScoreBatchRequest(requests=batch), timeout=30)
        model = await app.refit_now()  # published to data/models, LATEST names it
        models_dir = app.models.directory
        good = (models_dir / f"{model.version}.rfmodel").read_bytes()

        with caplog.at_level(logging.WARNING, logger="ringfence.service.app"):
            publish(models_dir, "m-truncated.rfmodel", good[: len(good) // 2])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ReloadModel(pb.ReloadModelRequest(), timeout=10)
            assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "truncated or corrupt" in err.value.details()
            await wait_for(
                lambda: any("published model refused" in r.getMessage() for r in caplog.records),
                "the poller to refuse it",
            )
        refused = [r for r in caplog.records if "published model refused" in r.getMessage()]
        assert "truncated or corrupt" in refused[0].reason

        info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
        assert info.model_version == model.version  # the old model stays in use
        reply = await stub.Score(batch[0], timeout=5)
        assert reply.model_version == model.version

        with caplog.at_level(logging.INFO, logger="ringfence.service.app"):
            publish(models_dir, "m-good.rfmodel", good)  # complete: the poller loads it
            await wait_for(
                lambda: any("published model loaded" in r.getMessage() for r in caplog.records),
                "the poller to load it",
            )
        info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
        assert info.model_version == model.version
