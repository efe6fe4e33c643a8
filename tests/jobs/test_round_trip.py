"""Events scored by a real server → ``ringfence recluster`` → artifact → the running server
swaps it in through ReloadModel (health SERVING, no failed call) → decisions carry the new
clusters, and a second run keeps the fleet's id. Also: the profiles rebuilt from the log are
the server's live profiles, byte for byte; a corrupted artifact is refused."""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest
from conftest import KEY_HEX
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ringfence.service.adapters.model_store import ModelStore
from ringfence.service.cli import main
from ringfence.service.jobs.aggregate import rebuild_profiles
from ringfence.service.jobs.recluster import make_tasks, plan
from ringfence.service.jobs.sources import SqliteSource
from ringfence.service.jobs.window import Window
from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc

FLEET_SIG = 0x5EED5EED5EED5EED


def _request(account, ip, device, t, signature, task):
    req = pb.ScoreRequest(account_id=account, client_ip=ip,
                          fingerprint=pb.DeviceFingerprint(device_id=device,
                                                           user_agent="python-httpx/0.27"),
                          context=pb.RequestContext(task_category=task, input_tokens=100))
    req.context.event_time.FromNanoseconds(int(t * 1e9))
    if signature is not None:
        req.context.content_signature = signature
    return req


def traffic(now: float, seed: int = 3, fleet: int = 60, users: int = 200):
    rng = random.Random(seed)
    out = []
    for i in range(fleet):  # a pool of 4 devices, hosting IPs, one template, one clock
        for h in range(12):
            out.append(_request(f"fleet-{i}", f"198.19.{rng.randrange(256)}.{rng.randrange(256)}",
                                f"fleet-dev-{rng.randrange(4)}", now - 12 * 3600 + h * 3600 + i % 5,
                                FLEET_SIG, pb.TASK_CATEGORY_REASONING))
    for i in range(users):
        ip = f"100.64.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(rng.randint(1, 5)):
            out.append(_request(f"user-{i}", ip, f"user-dev-{i}",
                                now - rng.uniform(0, 12 * 3600), None, pb.TASK_CATEGORY_CHAT))
    out.sort(key=lambda r: r.context.event_time.ToNanoseconds())
    return out


async def _score_all(stub, requests):
    for start in range(0, len(requests), 500):
        reply = await stub.ScoreBatch(pb.ScoreBatchRequest(requests=requests[start:start + 500]),
                                      timeout=30)
        assert all(r.HasField("response") for r in reply.results)


async def _recluster(data_dir, *extra):
    return await asyncio.to_thread(main, ["recluster", "--data-dir", str(data_dir),
                                          "--since", "2d", "--progress", "lines", *extra])


@pytest.fixture
async def scored(serve, tmp_path, monkeypatch):
    monkeypatch.setenv("RINGFENCE_HASH_KEY", KEY_HEX)
    app = await serve(tmp_path / "srv")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    stub = risk_pb2_grpc.RiskServiceStub(channel)
    await _score_all(stub, traffic(time.time()))
    app.events.flush()  # events are durable within 50 ms; the test does not wait for it
    yield app, stub, channel
    await channel.close()


async def test_rebuilt_profiles_equal_the_live_ones(scored):
    app, _, _ = scored
    app.store.flush()
    source = SqliteSource(app.settings.data_dir / "events.db")
    window = Window(0.0, time.time() + 60)
    stats = source.account_stats(window.since, window.until)
    [task] = make_tasks(source, window, 7.0, plan(stats, 1), bytes.fromhex(KEY_HEX))
    rebuilt = {a: p for a, p, _ in rebuild_profiles(task)}
    assert len(rebuilt) == 260
    for account in ("fleet-0", "fleet-17", "fleet-59", "user-0", "user-42", "user-199"):
        live = app.store.account_profile(account)
        assert live is not None and live.countries.keys  # the country token path is covered
        assert rebuilt[account].to_bytes() == live.to_bytes(), account


async def test_recluster_round_trip_through_a_running_server(scored, capsys):
    app, stub, channel = scored
    data_dir = app.settings.data_dir
    assert await _recluster(data_dir) == 0
    store = ModelStore(data_dir / "models", bytes.fromhex(KEY_HEX))
    model, info = store.load_latest()
    fleet_id = model.members["fleet-0"].cluster_id
    fleet_members = {a for a, m in model.members.items() if m.cluster_id == fleet_id}
    assert len({f"fleet-{i}" for i in range(60)} & fleet_members) >= 54
    assert not {a for a in fleet_members if a.startswith("user-")}
    assert info.previous == ""

    # ReloadModel while callers keep scoring and a prober keeps checking health
    health = health_pb2_grpc.HealthStub(channel)
    stop = asyncio.Event()
    answered = errors = 0
    statuses = set()

    async def caller(k: int) -> None:
        nonlocal answered, errors
        i = 0
        while not stop.is_set():
            i += 1
            try:
                await stub.Score(_request(f"user-{(k * 13 + i) % 200}", "100.64.9.9",
                                          f"user-dev-{(k * 13 + i) % 200}", time.time(), None,
                                          pb.TASK_CATEGORY_CHAT), timeout=10)
                answered += 1
            except grpc.aio.AioRpcError:
                errors += 1

    async def prober() -> None:
        while not stop.is_set():
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            statuses.add(reply.status)
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(caller(k)) for k in range(6)] + [asyncio.create_task(prober())]
    await asyncio.sleep(0.1)
    reply = await stub.ReloadModel(pb.ReloadModelRequest(), timeout=30)
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks)
    assert reply.model_version == model.version
    assert errors == 0 and answered > 0
    assert statuses == {health_pb2.HealthCheckResponse.SERVING}

    decision = await stub.Score(_request("fleet-3", "198.19.1.1", "fleet-dev-1", time.time(),
                                         FLEET_SIG, pb.TASK_CATEGORY_REASONING), timeout=5)
    assert decision.cluster.cluster_id == model.members["fleet-3"].cluster_id == fleet_id
    assert decision.model_version == model.version

    # more traffic → a second run publishes a successor that keeps the fleet's id
    await _score_all(stub, traffic(time.time(), seed=4)[:400])
    app.events.flush()
    assert await _recluster(data_dir) == 0
    newer, newer_info = store.load_latest()
    assert newer.version != model.version and newer_info.previous == model.version
    assert newer.members["fleet-0"].cluster_id == fleet_id
    assert fleet_id in newer.lineage[fleet_id]
    reply = await stub.ReloadModel(pb.ReloadModelRequest(), timeout=30)
    assert reply.model_version == newer.version
    decision = await stub.Score(_request("fleet-5", "198.19.2.2", "fleet-dev-2", time.time(),
                                         FLEET_SIG, pb.TASK_CATEGORY_REASONING), timeout=5)
    assert decision.cluster.cluster_id == fleet_id

    # unchanged events: nothing new is published
    latest = (data_dir / "models" / "LATEST").read_text()
    capsys.readouterr()
    assert await _recluster(data_dir, "--until", str(newer.fitted_at)) == 0
    assert "up to date" in capsys.readouterr().out
    assert (data_dir / "models" / "LATEST").read_text() == latest

    # a corrupted artifact is refused and the model in use stays
    path = data_dir / "models" / latest
    bad = path.with_name("m-9999999999-corrupt.rfmodel")
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    (data_dir / "models" / "LATEST").write_text(bad.name)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReloadModel(pb.ReloadModelRequest(), timeout=30)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "checksum" in err.value.details()
    info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert info.model_version == newer.version
