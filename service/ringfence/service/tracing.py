"""Optional OpenTelemetry tracing: one server span per unary RPC (continuing the caller's trace
from W3C ``traceparent`` metadata), with each decision's action and score as a span event.

Spans carry method, status and decision outcome only: never an account, IP or fingerprint.
Needs ``opentelemetry-api``/``-sdk`` (``pip install 'ringfence[tracing]'``, which also brings
the OTLP exporter); this module is imported only when tracing is on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from ringfence.service import __version__
from ringfence.service.api.auth import is_open
from ringfence.service.api.interceptors import method_name, status_name, wrap
from ringfence.service.core.model import Decision
from ringfence.service.settings import Settings

INSTRUMENTATION = "ringfence.service"


def provider(settings: Settings) -> TracerProvider:
    """A tracer provider exporting in batches to the configured exporter."""
    exporter: SpanExporter
    if settings.tracing == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ValueError("tracing=otlp needs the OTLP exporter: "
                             "pip install 'ringfence[tracing]'") from exc
        exporter = OTLPSpanExporter(endpoint=settings.tracing_otlp_endpoint)
    else:
        exporter = ConsoleSpanExporter()
    tracer_provider = TracerProvider(
        resource=Resource.create({"service.name": "ringfence",
                                  "service.version": __version__}),
        sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio)))
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    return tracer_provider


def annotate_decision(decision: Decision) -> None:
    """Observer hook: record a decision on the current span (a no-op when none records)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event("ringfence.decision", {
            "ringfence.action": decision.action.name.lower(),
            "ringfence.policy_action": decision.policy_action.name.lower(),
            "ringfence.risk_score": decision.risk_score,
            "ringfence.degraded": decision.degraded,
            "ringfence.reasons": [r.code for r in decision.reasons],
        })


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span around every unary-response RPC except health and reflection."""

    def __init__(self, tracer_provider: trace.TracerProvider) -> None:
        self._tracer = tracer_provider.get_tracer(INSTRUMENTATION, __version__)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = method_name(handler_call_details)
        if handler is None or handler.response_streaming or is_open(method):
            return handler
        carrier = {k: v for k, v in handler_call_details.invocation_metadata or ()
                   if isinstance(v, str)}
        parent = propagate.extract(carrier)
        service, _, rpc = method.lstrip("/").partition("/")

        @contextlib.contextmanager
        def around(context: grpc.aio.ServicerContext) -> Iterator[None]:
            with self._tracer.start_as_current_span(
                    f"{service}/{rpc}", context=parent, kind=SpanKind.SERVER,
                    record_exception=False, set_status_on_exception=False,
                    attributes={"rpc.system": "grpc", "rpc.service": service,
                                "rpc.method": rpc}) as span:
                exc: BaseException | None = None
                try:
                    yield
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    code = status_name(context, exc)
                    span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
                    if code != "OK":
                        span.set_status(Status(StatusCode.ERROR, code))
        return wrap(handler, around)
