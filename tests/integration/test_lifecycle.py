"""Health, reflection, graceful shutdown, restart, hot reload and policy, over real gRPC."""

from __future__ import annotations

import asyncio
import sqlite3

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ringfence.client import Action, AsyncClient, Fingerprint, ScoreRequest
from ringfence.service.geodata import NetworkRecord, write_geo_databases

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_is_serving_and_turns_not_serving_on_shutdown(app, target):
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ringfence.v1.RiskService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING
        stopping = asyncio.create_task(app.stop(grace=1))
        assert (await watch.read()).status == NOT_SERVING
        await stopping


async def test_reflection_lists_the_services(target):
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
    names = {s.name for s in reply.list_services_response.service}
    assert {"ringfence.v1.RiskService", "grpc.health.v1.Health"} <= names


async def test_restart_keeps_profiles_decisions_and_events(start_app, tmp_path):
    data = tmp_path / "persist"
    first = await start_app(data_dir=data)
    async with AsyncClient(f"127.0.0.1:{first.port}", timeout=5) as client:
        for i in range(7):
            await client.score(ScoreRequest(account_id="dora", client_ip=f"198.51.100.{i}"))
    await first.stop(grace=1)

    second = await start_app(data_dir=data)
    async with AsyncClient(f"127.0.0.1:{second.port}", timeout=5) as client:
        info = await client.get_account("dora")
    assert info.profile.total_requests == 7
    assert info.profile.distinct_ips == 7
    assert info.last_decision is not None
    events = sqlite3.connect(data / "events.db").execute("SELECT count(*) FROM events")
    assert events.fetchone()[0] == 7


async def test_raw_ips_and_device_ids_are_not_stored(start_app, tmp_path):
    data = tmp_path / "privacy"
    app = await start_app(data_dir=data)
    async with AsyncClient(f"127.0.0.1:{app.port}", timeout=5) as client:
        await client.score(ScoreRequest(account_id="erin", client_ip="192.0.2.123",
                                        fingerprint=Fingerprint(device_id="DEVICE-SECRET-42")))
    await app.stop(grace=1)
    for path in data.iterdir():
        blob = path.read_bytes()
        assert b"192.0.2.123" not in blob, path
        assert b"DEVICE-SECRET-42" not in blob, path


async def test_replaced_mmdb_is_picked_up_and_garbage_is_ignored(start_app, tmp_path):
    geo = tmp_path / "geo"
    plain = [NetworkRecord(cidr="192.0.2.0/24", asn=64500, as_org="Example Cable")]
    paths = write_geo_databases(plain, geo, kinds=("asn", "anonymous_ip"))
    app = await start_app(data_dir=tmp_path / "d", geoip_asn_db=paths.asn,
                          geoip_anonymous_ip_db=paths.anonymous_ip)
    target = f"127.0.0.1:{app.port}"

    async def codes(account: str) -> set[str]:
        async with AsyncClient(target, timeout=5) as client:
            decision = await client.score(ScoreRequest(account_id=account,
                                                       client_ip="192.0.2.10"))
        return {r.code for r in decision.reasons}

    assert "IP_ANONYMIZED" not in await codes("f1")
    hosting = [NetworkRecord(cidr="192.0.2.0/24", asn=64501, as_org="Example Cloud",
                             is_hosting=True)]
    write_geo_databases(hosting, geo, kinds=("asn", "anonymous_ip"))
    assert await app.reload_geoip_now() == ["asn", "anonymous_ip"]
    assert "IP_ANONYMIZED" in await codes("f2")

    garbage = geo / "garbage.tmp"
    garbage.write_bytes(b"not an mmdb at all" * 100)
    garbage.replace(paths.anonymous_ip)
    assert await app.reload_geoip_now() == []
    assert "IP_ANONYMIZED" in await codes("f3")  # the old reader still answers


async def test_shadow_policy_allows_but_reports_the_policy_action(start_app, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('version = "shadow-test"\nshadow = true\n'
                      "[thresholds]\nthrottle = 0.1\nchallenge = 0.12\nblock = 0.14\n")
    app = await start_app(data_dir=tmp_path / "s", policy_file=policy)
    async with AsyncClient(f"127.0.0.1:{app.port}", timeout=5) as client:
        decision = await client.score(ScoreRequest(account_id="new-account",
                                                   client_ip="198.51.100.1"))
    assert decision.policy_version == "shadow-test"
    assert decision.shadow
    assert decision.action is Action.ALLOW
    assert decision.policy_action is Action.BLOCK  # ACCOUNT_NEW alone is 0.15 ≥ 0.14
