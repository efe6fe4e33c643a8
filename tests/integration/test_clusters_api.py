"""Clustering through the server: refit in the worker process, cluster RPCs, labels, and a
model swap under concurrent Score calls."""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest

from ringfence.service.geodata import NetworkRecord, write_geo_databases
from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc

NETWORKS = [NetworkRecord(cidr="100.64.0.0/16", asn=64601, as_org="Home Cable", country="US"),
            NetworkRecord(cidr="198.19.0.0/16", asn=64701, as_org="Cheap Cloud", country="NL",
                          is_hosting=True)]


def _request(account: str, ip: str, device: str, t: float, signature: int | None,
             task: int) -> pb.ScoreRequest:
    req = pb.ScoreRequest(account_id=account, client_ip=ip,
                          fingerprint=pb.DeviceFingerprint(device_id=device,
                                                           user_agent="python-httpx/0.27"),
                          context=pb.RequestContext(task_category=task, input_tokens=100))
    req.context.event_time.FromNanoseconds(int(t * 1e9))
    if signature is not None:
        req.context.content_signature = signature
    return req


def traffic(now: float, seed: int = 3) -> list[pb.ScoreRequest]:
    rng = random.Random(seed)
    out = []
    for i in range(60):  # a fleet: a pool of 4 devices, hosting IPs, one template, one clock
        for h in range(12):
            out.append(_request(f"fleet-{i}", f"198.19.{rng.randrange(256)}.{rng.randrange(256)}",
                                f"fleet-dev-{rng.randrange(4)}", now - 12 * 3600 + h * 3600 + i % 5,
                                0x5EED5EED5EED5EED, pb.TASK_CATEGORY_REASONING))
    for i in range(200):  # ordinary users
        ip = f"100.64.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(rng.randint(1, 5)):
            out.append(_request(f"user-{i}", ip, f"user-dev-{i}",
                                now - rng.uniform(0, 12 * 3600), None, pb.TASK_CATEGORY_CHAT))
    out.sort(key=lambda r: r.context.event_time.seconds)
    return out


@pytest.fixture
async def cluster_app(start_app, tmp_path):
    paths = write_geo_databases(NETWORKS, tmp_path / "geo", kinds=("asn", "anonymous_ip"))
    app = await start_app(data_dir=tmp_path / "c", geoip_asn_db=paths.asn,
                          geoip_anonymous_ip_db=paths.anonymous_ip, cluster_min_cluster_size=10,
                          cluster_min_samples=5, cluster_assign_interval_s=3600,
                          cluster_refit_interval_s=3600, cluster_refit_pending=10**6)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        requests = traffic(time.time())
        for start in range(0, len(requests), 500):
            reply = await stub.ScoreBatch(
                pb.ScoreBatchRequest(requests=requests[start:start + 500]), timeout=30)
            assert all(r.HasField("response") for r in reply.results)
        yield app, stub


async def test_cluster_rpcs_after_a_refit(cluster_app):
    app, stub = cluster_app
    info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert info.clustering_enabled and not info.model_version
    model = await app.refit_now()
    assert model is not None
    info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert info.model_version == model.version
    assert info.accounts == 260 and info.clusters >= 1
    assert list(info.feature_names)[:1] == ["identity_0"]

    listed = await stub.ListClusters(pb.ListClustersRequest(page_size=1), timeout=5)
    top = listed.clusters[0]
    assert top.enforced and top.risk >= 0.5
    assert "CLUSTER_SHARED_DEVICES" in {r.code for r in top.reasons}
    got = await stub.GetCluster(pb.GetClusterRequest(cluster_id=top.cluster_id,
                                                     member_sample_size=1000), timeout=5)
    members = set(got.member_sample)
    assert len(members & {f"fleet-{i}" for i in range(60)}) >= 54
    assert not {m for m in members if m.startswith("user-")}
    if listed.next_page_token:
        second = await stub.ListClusters(
            pb.ListClustersRequest(page_size=1, page_token=listed.next_page_token), timeout=5)
        assert second.clusters[0].risk <= top.risk

    fleet_member = sorted(members)[0]
    explained = await stub.ExplainAccount(pb.ExplainAccountRequest(account_id=fleet_member,
                                                                   nearest=3), timeout=5)
    assert explained.cluster.cluster_id == top.cluster_id
    assert len(explained.nearest_members) == 3
    assert all(n.account_id.startswith("fleet-") for n in explained.nearest_members)
    assert len(explained.features) == len(info.feature_names)

    decision = await stub.Score(_request(fleet_member, "198.19.1.1", "fleet-dev-1",
                                         time.time(), 0x5EED5EED5EED5EED,
                                         pb.TASK_CATEGORY_REASONING), timeout=5)
    assert decision.limit_key == f"cluster:{top.cluster_id}"
    assert decision.limit_scope == pb.LIMIT_SCOPE_CLUSTER
    assert decision.suggested_limit.unit == pb.Limit.UNIT_DAY
    assert decision.cluster.cluster_id == top.cluster_id

    await stub.SubmitLabel(pb.SubmitLabelRequest(cluster_id=top.cluster_id,
                                                  label=pb.LABEL_VALUE_BENIGN, author="ana",
                                                  note="our own load test"), timeout=5)
    cleared = await stub.Score(_request(fleet_member, "198.19.1.2", "fleet-dev-1", time.time(),
                                        None, pb.TASK_CATEGORY_REASONING), timeout=5)
    assert cleared.limit_scope == pb.LIMIT_SCOPE_ACCOUNT
    relisted = await stub.GetCluster(pb.GetClusterRequest(cluster_id=top.cluster_id), timeout=5)
    assert relisted.cluster.label == pb.LABEL_VALUE_BENIGN and not relisted.cluster.enforced


async def test_label_and_cluster_errors(cluster_app):
    _, stub = cluster_app
    for bad, field in ((pb.SubmitLabelRequest(account_id="a"), "label"),
                       (pb.SubmitLabelRequest(label=pb.LABEL_VALUE_ABUSIVE), "target"),
                       (pb.ListClustersRequest(page_size=501), "page_size"),
                       (pb.ListClustersRequest(page_token="garbage"), "page_token")):
        method = stub.SubmitLabel if isinstance(bad, pb.SubmitLabelRequest) else \
            stub.ListClusters
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(bad, timeout=5)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetCluster(pb.GetClusterRequest(cluster_id="c-nope"), timeout=5)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SubmitLabel(pb.SubmitLabelRequest(cluster_id="c-nope",
                                                     label=pb.LABEL_VALUE_ABUSIVE), timeout=5)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


async def test_model_swap_under_concurrent_scores_loses_no_request(cluster_app):
    app, stub = cluster_app
    await app.refit_now()
    stop = asyncio.Event()
    answered = errors = 0

    async def caller(k: int) -> None:
        nonlocal answered, errors
        i = 0
        while not stop.is_set():
            i += 1
            try:
                await stub.Score(_request(f"fleet-{(k * 7 + i) % 60}", "198.19.9.9",
                                          f"fleet-dev-{i % 4}", time.time(), None,
                                          pb.TASK_CATEGORY_CODE), timeout=10)
                answered += 1
            except grpc.aio.AioRpcError:
                errors += 1

    callers = [asyncio.create_task(caller(k)) for k in range(8)]
    versions = set()
    for _ in range(3):  # three swaps while the callers keep going
        model = await app.refit_now()
        versions.add(model.version)
        await app.place_pending_now()
    stop.set()
    await asyncio.gather(*callers)
    assert len(versions) == 3
    assert errors == 0
    assert answered > 0


async def test_published_model_is_shared_reloaded_and_bad_artifacts_refused(cluster_app,
                                                                            start_app,
                                                                            tmp_path):
    app, stub = cluster_app
    model = await app.refit_now()
    models_dir = app.models.directory
    assert (models_dir / "LATEST").read_text() == f"{model.version}.rfmodel"

    # a replica that never refits loads what the first one published
    replica = await start_app(data_dir=tmp_path / "replica", model_dir=models_dir,
                              cluster_refit_local=False, cluster_assign_interval_s=3600)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
        rstub = risk_pb2_grpc.RiskServiceStub(channel)
        info = await rstub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
        assert info.model_version == model.version
        assert info.clusters == len(model.clusters)

        # a corrupt newer artifact is refused and the model in use stays
        bad = models_dir / "m-bad.rfmodel"
        bad.write_bytes(b'{"format": "ringfence-cluster-model"}\n' + b"x" * 100)
        (models_dir / "LATEST").write_text(bad.name)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rstub.ReloadModel(pb.ReloadModelRequest(), timeout=10)
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        info = await rstub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
        assert info.model_version == model.version

    # the first server refits again: the new model keeps the fleet's id and is published
    (models_dir / "LATEST").write_text(f"{model.version}.rfmodel")
    fleet_id = model.members["fleet-0"].cluster_id
    newer = await app.refit_now()
    assert newer.members["fleet-0"].cluster_id == fleet_id
    reply = await stub.ReloadModel(pb.ReloadModelRequest(), timeout=10)
    assert reply.model_version == newer.version
