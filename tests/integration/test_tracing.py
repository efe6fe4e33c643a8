"""OpenTelemetry: one SERVER span per unary RPC, continuing the caller's trace, with the
decision as an event and no identifiers in any attribute."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ringfence.service.app import App
from ringfence.service.settings import Settings
from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_score_is_traced_without_identifiers(tmp_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = App(Settings(host="127.0.0.1", port=0, data_dir=tmp_path, hash_key="00" * 32,
                       shutdown_grace_s=0.5), tracer_provider=provider)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = risk_pb2_grpc.RiskServiceStub(channel)
            md = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),)
            await stub.Score(pb.ScoreRequest(account_id="trace-acct", client_ip="203.0.113.77"),
                             metadata=md, timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Score(pb.ScoreRequest(account_id="x", client_ip="bad"), timeout=5)
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        await app.stop(0)

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["ringfence.v1.RiskService/Score"] * 2  # no health span
    ok, bad = spans
    assert format(ok.context.trace_id, "032x") == TRACE_ID  # the caller's trace continues
    assert ok.attributes["rpc.grpc.status_code"] == 0
    assert bad.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert not bad.status.is_ok
    [event] = ok.events
    assert event.name == "ringfence.decision"
    assert event.attributes["ringfence.action"] == "allow"
    dumped = repr([(s.attributes, [e.attributes for e in s.events]) for s in spans])
    assert "trace-acct" not in dumped and "203.0.113.77" not in dumped
