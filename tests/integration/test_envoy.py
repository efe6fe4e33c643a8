"""Envoy's ext_authz and rate limit services against a real server, with real xds-protos
messages over loopback gRPC."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from envoy.type.v3 import ratelimit_unit_pb2
from google.protobuf import json_format
from google.rpc import code_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ringfence.service.adapters.clock import ManualClock
from ringfence.service.app import App
from ringfence.service.settings import Settings

T0 = 1_789_948_800.0 + 30  # 30 s into a day (and a minute): windows reset predictably
CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/120.0.0.0 Safari/537.36")
CHROME_JA4 = "t13d1516h2_8daaf6152771_02713d6af862"
# Low thresholds and a fast-saturating device ramp, so a small planted fleet reaches BLOCK.
FLEET_POLICY = """
version = "fleet-test"
[thresholds]
throttle = 0.3
challenge = 0.5
block = 0.8
[ramps]
device_accounts_full = 4
"""
CODE = rls_pb2.RateLimitResponse.Code


def app_settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(host="127.0.0.1", port=0, data_dir=data_dir, hash_key="00" * 32,
                                persist=False, clustering=False, shutdown_grace_s=0.5,
                                checkpoint_interval_s=3600, geoip_reload_interval_s=3600)
    return Settings(**{**base, **overrides})


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start an app on a manual clock; returns (app, channel)."""
    apps: list[App] = []
    channels: list[grpc.aio.Channel] = []

    async def start_app(policy: str | None = None, **overrides: Any
                        ) -> tuple[App, grpc.aio.Channel]:
        if policy is not None:
            path = tmp_path / f"policy-{len(apps)}.toml"
            path.write_text(policy)
            overrides["policy_file"] = path
        settings = app_settings(tmp_path / f"data-{len(apps)}", **overrides)
        app = App(settings, clock=ManualClock(T0))
        await app.start()
        apps.append(app)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        channels.append(channel)
        return app, channel

    yield start_app
    for channel in channels:
        await channel.close()
    for app in apps:
        if app.server is not None:
            await app.stop(0)


def check_request(account: str | None = "alice", *, address: str = "198.51.100.7",
                  device: str = "", headers: dict[str, str] | None = None,
                  raw: bool = True) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.address.socket_address.address = address
    request.attributes.source.address.socket_address.port_value = 50123
    http = request.attributes.request.http
    http.method = "POST"
    http.path = "/v1/chat/completions?stream=true"
    http.host = "api.example.com"
    values = {":authority": "api.example.com", "content-type": "application/json",
              "user-agent": CHROME_UA, "accept": "*/*", "accept-encoding": "gzip, deflate, br",
              "accept-language": "en-US,en;q=0.9", "x-ja4": CHROME_JA4}
    if account is not None:
        values["x-ringfence-account"] = account
    if device:
        values["x-ringfence-device-id"] = device
    values.update(headers or {})
    for key, value in values.items():
        if raw:  # encode_raw_headers: true (keeps the order)
            http.header_map.headers.add(key=key, raw_value=value.encode())
        else:
            http.headers[key] = value
    return request


def upstream_headers(response: external_auth_pb2.CheckResponse) -> dict[str, str]:
    return {h.header.key: h.header.value for h in response.ok_response.headers}


def metadata(response: Any) -> dict[str, Any]:
    return json_format.MessageToDict(response.dynamic_metadata)["ringfence"]


async def test_check_request_gets_a_decision_with_metadata(start):
    app, channel = await start()
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    response = await stub.Check(check_request("alice", headers={"x-ringfence-score": "0.0"}),
                                timeout=5)
    assert response.status.code == code_pb2.OK
    assert response.WhichOneof("http_response") == "ok_response"
    headers = upstream_headers(response)
    assert headers["x-ringfence-action"] == "allow"
    assert headers["x-ringfence-limit-key"] == "account:alice"
    assert 0.0 <= float(headers["x-ringfence-score"]) < 0.5
    # every header is overwritten, and answer headers not set are removed (no forging)
    assert all(h.append_action == h.OVERWRITE_IF_EXISTS_OR_ADD
               for h in response.ok_response.headers)
    assert {"x-ringfence-error", "x-ringfence-skipped"} <= set(
        response.ok_response.headers_to_remove)
    meta = metadata(response)
    assert meta["limit_key"] == "account:alice"
    assert meta["limit_scope"] == "account"
    assert meta["action"] == "allow" and meta["policy_action"] == "allow"
    assert meta["limit"] == {"requests_per_unit": 60, "unit": "MINUTE"}
    assert meta["hits_addend"] == 1
    assert meta["shadow"] is False
    # the engine saw the request: the account has a live profile
    summary, decision = app.engine.account("alice")
    assert summary.total_requests == 1 and decision is not None


async def test_header_map_without_order_is_also_scored(start):
    _, channel = await start()
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    response = await stub.Check(check_request("bob", raw=False), timeout=5)
    assert upstream_headers(response)["x-ringfence-limit-key"] == "account:bob"


async def test_planted_device_shared_by_many_accounts_ends_in_a_denied_429(start):
    _, channel = await start(FLEET_POLICY)
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    responses = [await stub.Check(check_request(f"fleet-{i}", address=f"203.0.113.{i + 1}",
                                                device="device-planted"), timeout=5)
                 for i in range(8)]
    kinds = [r.WhichOneof("http_response") for r in responses]
    assert kinds[0] == "ok_response"
    assert kinds[-1] == "denied_response"
    blocked = responses[-1]
    assert blocked.status.code != code_pb2.OK
    denied = blocked.denied_response
    assert denied.status.code == 429
    body = json.loads(denied.body)
    assert body["error"] == "rate_limited" and body["action"] == "block"
    client = {h.header.key: h.header.value for h in denied.headers}
    assert client["x-ringfence-action"] == "block"
    assert int(client["retry-after"]) >= 1
    # the client learns neither its score nor the limit key
    assert "x-ringfence-score" not in client and "x-ringfence-limit-key" not in client
    meta = metadata(blocked)
    assert meta["action"] == "block"
    assert meta["limit"]["requests_per_unit"] == 0
    assert meta["hits_addend"] == 8
    assert "DEVICE_SHARED_BY_ACCOUNTS" in meta["reasons"]
    # a challenge on the way there was denied with the default 403
    statuses = [r.denied_response.status.code for r in responses
                if r.WhichOneof("http_response") == "denied_response"]
    assert set(statuses) <= {403, 429}


async def test_shadow_mode_always_allows_and_says_what_it_would_do(start):
    _, channel = await start("shadow = true\n" + FLEET_POLICY)
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    responses = [await stub.Check(check_request(f"s-{i}", device="device-shadow"), timeout=5)
                 for i in range(8)]
    assert all(r.status.code == code_pb2.OK for r in responses)
    last = upstream_headers(responses[-1])
    assert last["x-ringfence-action"] == "allow"
    assert last["x-ringfence-shadow"] == "1"
    assert last["x-ringfence-policy-action"] == "block"


async def test_challenge_passes_through_when_configured(start):
    _, channel = await start(FLEET_POLICY, gateway_challenge_status=0)
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    actions = []
    for i in range(8):
        r = await stub.Check(check_request(f"c-{i}", device="device-c"), timeout=5)
        actions.append(upstream_headers(r).get("x-ringfence-action") if r.status.code == 0
                       else "denied")
    assert "challenge" in actions  # let through with the header
    assert actions[-1] == "denied"  # the block tier is still denied


async def test_missing_account_is_allowed_and_marked_skipped(start):
    _, channel = await start()
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    response = await stub.Check(check_request(None), timeout=5)
    assert response.status.code == code_pb2.OK
    assert upstream_headers(response) == {"x-ringfence-skipped": "no_account"}
    assert "x-ringfence-score" in response.ok_response.headers_to_remove
    assert metadata(response) == {"skipped": "no_account"}


async def test_missing_account_can_be_denied_with_400(start):
    _, channel = await start(gateway_missing_account="deny",
                             gateway_account_header="X-User-Id")
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    response = await stub.Check(check_request(None), timeout=5)
    assert response.denied_response.status.code == 400
    assert json.loads(response.denied_response.body) == {"error": "account_required"}
    ok = await stub.Check(check_request(None, headers={"x-user-id": "dora"}), timeout=5)
    assert upstream_headers(ok)["x-ringfence-limit-key"] == "account:dora"


async def test_invalid_source_address_fails_open_with_the_error_header(start, caplog):
    _, channel = await start()
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    caplog.set_level(logging.WARNING, logger="ringfence.service.api.gateway")
    response = await stub.Check(check_request("erin", address="not-an-ip.example"), timeout=5)
    assert response.status.code == code_pb2.OK
    headers = upstream_headers(response)
    assert headers["x-ringfence-error"] == "invalid_input: source address"
    assert "x-ringfence-score" not in headers
    assert metadata(response) == {"error": "invalid_input"}
    record = next(r for r in caplog.records if "not scored" in r.getMessage())
    assert record.fields == ["source address"]
    assert "not-an-ip" not in caplog.text  # the raw address is never logged


async def test_odd_client_headers_cannot_turn_scoring_off(start):
    _, channel = await start()
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    odd = {"user-agent": "x" * 5000, "x-ringfence-task": "nonsense",
           "x-ringfence-content-signature": "not-a-number",
           **{f"x-ringfence-fp-k{i}": "v" for i in range(40)}}
    response = await stub.Check(check_request("frank", headers=odd), timeout=5)
    headers = upstream_headers(response)
    assert "x-ringfence-error" not in headers
    assert headers["x-ringfence-limit-key"] == "account:frank"


def rate_limit_request(*descriptors: dict[str, str], domain: str = "api",
                       limit: tuple[int, int] | None = None,
                       hits: int = 0) -> rls_pb2.RateLimitRequest:
    request = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
    for entries in descriptors:
        d = request.descriptors.add()
        for key, value in entries.items():
            d.entries.add(key=key, value=value)
        if limit is not None:
            d.limit.requests_per_unit, d.limit.unit = limit
    return request


async def test_should_rate_limit_is_over_limit_after_the_budget(start):
    app, channel = await start()
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    request = rate_limit_request({"limit_key": "account:alice"},
                                 limit=(3, ratelimit_unit_pb2.MINUTE))
    answers = [await stub.ShouldRateLimit(request, timeout=5) for _ in range(4)]
    assert [a.overall_code for a in answers] == [CODE.OK] * 3 + [CODE.OVER_LIMIT]
    assert [a.statuses[0].limit_remaining for a in answers] == [2, 1, 0, 0]
    over = answers[-1]
    assert over.statuses[0].code == CODE.OVER_LIMIT
    assert over.statuses[0].current_limit.requests_per_unit == 3
    assert (over.statuses[0].current_limit.unit
            == rls_pb2.RateLimitResponse.RateLimit.Unit.MINUTE)
    reset = over.statuses[0].duration_until_reset.ToTimedelta().total_seconds()
    assert reset == 30  # T0 is 30 s into the minute
    assert {h.key: h.value for h in over.response_headers_to_add}["retry-after"] == "30"
    # a new window starts afresh
    app.clock.advance(60)
    fresh = await stub.ShouldRateLimit(request, timeout=5)
    assert fresh.overall_code == CODE.OK and fresh.statuses[0].limit_remaining == 2


async def test_hits_addend_charges_more_and_domains_count_apart(start):
    _, channel = await start()
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    heavy = rate_limit_request({"limit_key": "account:gus"}, limit=(10, ratelimit_unit_pb2.HOUR),
                               hits=4)
    assert (await stub.ShouldRateLimit(heavy, timeout=5)).statuses[0].limit_remaining == 6
    other = rate_limit_request({"limit_key": "account:gus"}, domain="other",
                               limit=(10, ratelimit_unit_pb2.HOUR))
    assert (await stub.ShouldRateLimit(other, timeout=5)).statuses[0].limit_remaining == 9


async def test_scoring_descriptors_count_against_the_suggested_limit(start):
    _, channel = await start(FLEET_POLICY)
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    first = await stub.ShouldRateLimit(rate_limit_request(
        {"account": "hana", "remote_address": "198.51.100.20", "user_agent": CHROME_UA}),
        timeout=5)
    status = first.statuses[0]
    assert first.overall_code == CODE.OK
    assert status.current_limit.requests_per_unit == 60
    assert status.limit_remaining == 59
    assert {h.key: h.value for h in first.request_headers_to_add}[
        "x-ringfence-limit-key"] == "account:hana"
    # a fleet on one device reaches the block tier: budget 0, over at once
    answers = [await stub.ShouldRateLimit(rate_limit_request(
        {"account": f"rl-{i}", "client_ip": f"203.0.113.{i + 1}", "device_id": "dev-rl"}),
        timeout=5) for i in range(8)]
    assert answers[-1].overall_code == CODE.OVER_LIMIT
    assert answers[-1].statuses[0].current_limit.requests_per_unit == 0


async def test_unknown_and_invalid_descriptors_are_allowed(start):
    _, channel = await start()
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    answer = await stub.ShouldRateLimit(rate_limit_request(
        {"generic_key": "x"}, {"account": "ivan", "client_ip": "999.1.1.1"},
        {"limit_key": "account:ivan"}), timeout=5)  # a limit_key without a limit
    assert answer.overall_code == CODE.OK
    assert [s.code for s in answer.statuses] == [CODE.OK] * 3
    assert not any(s.HasField("current_limit") for s in answer.statuses)


async def test_shadow_mode_never_reports_over_limit(start):
    _, channel = await start('shadow = true\n')
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    request = rate_limit_request({"limit_key": "account:jo"}, limit=(1, ratelimit_unit_pb2.DAY))
    answers = [await stub.ShouldRateLimit(request, timeout=5) for _ in range(2)]
    assert [a.overall_code for a in answers] == [CODE.OK, CODE.OK]
    assert json_format.MessageToDict(answers[1].dynamic_metadata) == {
        "ringfence": {"shadow_over_limit": True}}


async def test_reflection_lists_the_envoy_services(start):
    _, channel = await start()
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def one() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for reply in stub.ServerReflectionInfo(one(), timeout=5):
        names = {s.name for s in reply.list_services_response.service}
        break
    assert {"envoy.service.auth.v3.Authorization",
            "envoy.service.ratelimit.v3.RateLimitService"} <= names
