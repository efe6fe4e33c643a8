"""Prometheus metrics on the side port, scraped over HTTP after real gRPC traffic; no label
ever carries an account, IP, device or cluster id."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.request
from pathlib import Path
from types import MappingProxyType

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ringfence.service.adapters.clock import ManualClock
from ringfence.service.core.model import (
    Action,
    Decision,
    Limit,
    LimitScope,
    LimitUnit,
    Reason,
)
from ringfence.service.metrics import MAX_REASON_CODES, OTHER, Metrics
from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc

SCORE = "/ringfence.v1.RiskService/Score"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def scrape(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert reply.status == 200
            return reply.read().decode()
    return await asyncio.to_thread(get)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


async def test_metrics_count_calls_and_decisions_without_identifiers(start_app):
    app = await start_app(metrics_port=free_port())
    assert app.edge.metrics_port
    accounts = [f"acct-metrics-{i:03d}" for i in range(12)]
    ips = [f"203.0.113.{10 + i}" for i in range(12)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        for account, ip in zip(accounts, ips, strict=True):
            await stub.Score(pb.ScoreRequest(
                account_id=account, client_ip=ip,
                fingerprint=pb.DeviceFingerprint(device_id="shared-device-xyz",
                                                 user_agent="python-httpx/0.27")), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Score(pb.ScoreRequest(account_id="acct-bad", client_ip="not-an-ip"),
                             timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetAccount(pb.GetAccountRequest(account_id="acct-unknown-zz"), timeout=5)
        # An unknown method: its client-chosen name must never become a label.
        bogus = channel.unary_unary("/ringfence.v1.RiskService/Bogus-q7w8e9")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await bogus(b"", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

    text = await scrape(app.edge.metrics_port)
    assert value(text, "ringfence_grpc_requests_total", method=SCORE, code="OK") == 12
    assert value(text, "ringfence_grpc_requests_total", method=SCORE,
                 code="INVALID_ARGUMENT") == 1
    assert value(text, "ringfence_grpc_requests_total",
                 method="/ringfence.v1.RiskService/GetAccount", code="NOT_FOUND") == 1
    assert value(text, "ringfence_grpc_request_seconds_count", method=SCORE) == 13
    decided = sum(value(text, "ringfence_decisions_total", action=a.name.lower()) or 0
                  for a in Action)
    assert decided == 12
    reasons = {dict(labels)["code"] for (name, labels) in samples(text)
               if name == "ringfence_decision_reasons_total"}
    assert "DEVICE_SHARED_BY_ACCOUNTS" in reasons
    assert value(text, "ringfence_decisions_degraded_total") == 0
    assert value(text, "ringfence_event_log_dropped_writes_total") == 0
    assert value(text, "ringfence_build_info", version="0.1.0") == 1
    assert value(text, "ringfence_cluster_model_age_seconds") is None  # nothing fitted yet
    for secret in (*accounts, *ips, "acct-bad", "not-an-ip", "acct-unknown-zz",
                   "shared-device-xyz", "Bogus-q7w8e9"):
        assert secret not in text

    model = await app.refit_now()
    text = await scrape(app.edge.metrics_port)
    assert value(text, "ringfence_cluster_model_accounts") == len(model.account_ids)
    assert value(text, "ringfence_cluster_model_clusters") == len(model.clusters)
    assert value(text, "ringfence_cluster_model_age_seconds") >= 0
    for cluster_id in model.clusters:
        assert cluster_id not in text


async def test_calls_turned_away_by_auth_are_counted(start_app, tmp_path):
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("")
    app = await start_app(metrics_port=free_port(), tokens_file=tokens)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await risk_pb2_grpc.RiskServiceStub(channel).Score(
                pb.ScoreRequest(account_id="a", client_ip="203.0.113.1"), timeout=5)
    # the server counts the call as it finishes, which can be just after the client has its
    # answer: poll (up to 5 s) instead of scraping once
    for _ in range(50):
        text = await scrape(app.edge.metrics_port)
        if value(text, "ringfence_grpc_requests_total", method=SCORE, code="UNAUTHENTICATED"):
            break
        await asyncio.sleep(0.1)
    assert value(text, "ringfence_grpc_requests_total", method=SCORE,
                 code="UNAUTHENTICATED") == 1
    assert value(text, "ringfence_decisions_total", action="allow") == 0


async def test_metrics_are_off_by_default(start_app):
    app = await start_app()
    assert app.edge.metrics is None and app.edge.metrics_port == 0


def _decision(*codes: str) -> Decision:
    return Decision(risk_score=0.5, action=Action.ALLOW, policy_action=Action.BLOCK, shadow=True,
                    route_to_fallback=False, limit_key="account:x",
                    limit_scope=LimitScope.ACCOUNT, suggested_limit=Limit(60, LimitUnit.SECOND),
                    ttl_seconds=1.0,
                    reasons=tuple(Reason(c, 0.1, "") for c in codes), policy_version="v",
                    decided_at=0.0)


def test_reason_code_labels_are_bounded():
    metrics = Metrics(clock=ManualClock(0.0))
    metrics.observe_decision(_decision("ACCOUNT_NEW", "acct-42 from 203.0.113.7", "lower"))
    for i in range(MAX_REASON_CODES + 10):
        metrics.observe_decision(_decision(f"CODE_{i}"))
    text = metrics.render().decode()
    codes = {dict(labels)["code"] for (name, labels) in samples(text)
             if name == "ringfence_decision_reasons_total"}
    assert len(codes) == MAX_REASON_CODES + 1 and OTHER in codes and "ACCOUNT_NEW" in codes
    assert "203.0.113.7" not in text
    assert value(text, "ringfence_decisions_total", action="allow") == MAX_REASON_CODES + 11
    assert value(text, "ringfence_policy_decisions_total", action="block") == \
        MAX_REASON_CODES + 11


def test_every_metric_is_documented_and_every_documented_one_exists():
    class Model:
        fitted_at = 0.0
        account_ids = ("a",)
        clusters = MappingProxyType({"c-1": object()})

    metrics = Metrics(clock=ManualClock(10.0), cluster_model=Model)
    metrics.observe_decision(_decision("ACCOUNT_NEW"))
    metrics.requests.labels("/m", "OK").inc()
    metrics.latency.labels("/m").observe(0.1)
    exposed = {re.sub(r"_(bucket|count|sum)$", "", s.name)
               for family in text_string_to_metric_families(metrics.render().decode())
               for s in family.samples
               if s.name.startswith("ringfence_") and not s.name.endswith("_created")}
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`(ringfence_[a-z_]+)`", docs))
    assert exposed == documented
