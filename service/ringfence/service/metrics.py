"""Prometheus metrics on a side HTTP port: gRPC server metrics (an interceptor), decisions by
action and reason (an observer the servicers call; core/ never imports prometheus), and state
read at scrape time (cluster model age and size, event-log writes dropped).

No label ever carries an account, IP, fingerprint or cluster id: labels are method names that
have a handler, status code names, actions and reason codes (a bounded set, capped anyway).
Each App has its own registry, so tests can run several in one process.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ringfence.service import __version__
from ringfence.service.api.interceptors import WrappedHandlers, method_name, status_name, wrap
from ringfence.service.core.model import Action, Decision

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from ringfence.service.core.clustering import ClusterModel
    from ringfence.service.core.ports import Clock

# Latency buckets around the 2-50 ms a rate limiter gives ringfence.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RISK_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MAX_REASON_CODES = 200  # reason codes are constants; the cap only guards against a bug
OTHER = "OTHER"
_REASON_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


class _StateCollector(Collector):
    """Values read when Prometheus scrapes, not pushed on every request."""

    def __init__(self, clock: Clock, cluster_model: Callable[[], ClusterModel | None],
                 dropped_writes: Callable[[], int],
                 failed_commits: Callable[[], int] = lambda: 0) -> None:
        self._clock = clock
        self._cluster_model = cluster_model
        self._dropped_writes = dropped_writes
        self._failed_commits = failed_commits

    def collect(self) -> Iterator[Any]:
        model = self._cluster_model()
        age = GaugeMetricFamily("ringfence_cluster_model_age_seconds",
                                "Seconds since the cluster model in use was fitted (absent "
                                "before the first fit).")
        accounts = GaugeMetricFamily("ringfence_cluster_model_accounts",
                                     "Accounts in the last cluster fit.")
        clusters = GaugeMetricFamily("ringfence_cluster_model_clusters",
                                     "Clusters in the model in use.")
        if model is not None:
            age.add_metric([], max(0.0, self._clock.now() - model.fitted_at))
            accounts.add_metric([], len(model.account_ids))
            clusters.add_metric([], len(model.clusters))
        yield from (age, accounts, clusters)
        dropped = CounterMetricFamily("ringfence_event_log_dropped_writes",
                                      "Scored events the event log could not write.")
        dropped.add_metric([], self._dropped_writes())
        yield dropped
        failed = CounterMetricFamily("ringfence_event_log_failed_commits",
                                     "Event-log commits that failed (full disk, I/O error) "
                                     "and are being retried; rising means events are not "
                                     "being stored.")
        failed.add_metric([], self._failed_commits())
        yield failed


class Metrics:
    """The metrics of one running service."""

    def __init__(self, *, clock: Clock,
                 cluster_model: Callable[[], ClusterModel | None] = lambda: None,
                 dropped_writes: Callable[[], int] = lambda: 0,
                 failed_commits: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Gauge("ringfence_build_info", "The running version.", ["version"],
              registry=r).labels(__version__).set(1)
        self.requests = Counter("ringfence_grpc_requests", "gRPC calls finished, by full "
                                "method name and status code.", ["method", "code"],
                                registry=r)
        self.latency = Histogram("ringfence_grpc_request_seconds", "Time to answer a unary "
                                 "gRPC call, by method.", ["method"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("ringfence_grpc_requests_in_flight", "gRPC calls being "
                               "served now.", registry=r)
        self.decisions = Counter("ringfence_decisions", "Decisions returned, by action "
                                 "(shadow mode: always allow).", ["action"], registry=r)
        self.policy_decisions = Counter("ringfence_policy_decisions", "Decisions by the "
                                        "action the policy chose (differs from "
                                        "ringfence_decisions in shadow mode).", ["action"],
                                        registry=r)
        self.reasons = Counter("ringfence_decision_reasons", "Reasons attached to decisions, "
                               "by reason code.", ["code"], registry=r)
        self.degraded = Counter("ringfence_decisions_degraded", "Decisions made with an input "
                                "unavailable (IP database, shared store): fail-open answers.",
                                registry=r)
        self.fallback = Counter("ringfence_decisions_fallback", "Decisions that routed the "
                                "request to the fallback model (global volume guard).",
                                registry=r)
        self.risk = Histogram("ringfence_decision_risk_score", "Risk scores returned.",
                              buckets=RISK_BUCKETS, registry=r)
        # Every series exists from the start, so rate() sees zeros. The labelled children are
        # kept: looking them up by label values on every call costs more than the increment.
        self._by_action = {a: self.decisions.labels(a.name.lower()) for a in Action}
        self._by_policy_action = {a: self.policy_decisions.labels(a.name.lower())
                                  for a in Action}
        self._by_reason: dict[str, Any] = {}  # bounded: at most MAX_REASON_CODES + 1 labels
        self._by_method_code: dict[tuple[str, str], Any] = {}  # methods with a handler × codes
        self._latency_by_method: dict[str, Any] = {}
        r.register(_StateCollector(clock, cluster_model, dropped_writes, failed_commits))
        self._reason_codes: set[str] = set()
        self._reason_lock = threading.Lock()
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # decisions ----------------------------------------------------------------------------

    def observe_decision(self, decision: Decision) -> None:
        self._by_action[decision.action].inc()
        self._by_policy_action[decision.policy_action].inc()
        self.risk.observe(decision.risk_score)
        if decision.degraded:
            self.degraded.inc()
        if decision.route_to_fallback:
            self.fallback.inc()
        by_reason = self._by_reason
        for reason in decision.reasons:
            child = by_reason.get(reason.code)
            if child is None:
                child = self.reasons.labels(self._reason_label(reason.code))
                if len(by_reason) <= MAX_REASON_CODES:
                    by_reason[reason.code] = child
            child.inc()

    def _reason_label(self, code: str) -> str:
        if code in self._reason_codes:
            return code
        with self._reason_lock:
            if len(self._reason_codes) >= MAX_REASON_CODES or not _REASON_CODE.fullmatch(code):
                return OTHER
            self._reason_codes.add(code)
        return code

    # gRPC ---------------------------------------------------------------------------------

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _MetricsInterceptor(self)

    def _around(self, method: str, unary: bool,
                context: grpc.aio.ServicerContext) -> _ObservedCall:
        latency = None
        if unary:
            latency = self._latency_by_method.get(method)
            if latency is None:
                latency = self._latency_by_method[method] = self.latency.labels(method)
        return _ObservedCall(self, method, latency, context)

    def _count(self, method: str, code: str) -> None:
        child = self._by_method_code.get((method, code))
        if child is None:
            child = self._by_method_code[(method, code)] = self.requests.labels(method, code)
        child.inc()

    # exposition ---------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format, as /metrics serves it."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP in a daemon thread; returns the bound port."""
        self._httpd, self._thread = start_http_server(port, host, registry=self.registry)
        return int(self._httpd.server_address[1])

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _ObservedCall:
    """Around one call: the in-flight gauge, then its status count and latency."""

    __slots__ = ("_context", "_latency", "_method", "_metrics", "_start")

    def __init__(self, metrics: Metrics, method: str, latency: Any,
                 context: grpc.aio.ServicerContext) -> None:
        self._metrics = metrics
        self._method = method
        self._latency = latency  # the method's histogram child; None for streaming calls
        self._context = context
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()
        self._metrics.in_flight.inc()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        metrics = self._metrics
        metrics.in_flight.dec()
        metrics._count(self._method, status_name(self._context, exc))
        if self._latency is not None:
            self._latency.observe(time.perf_counter() - self._start)


class _MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._wrapped = WrappedHandlers()

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            # An unknown method: its name comes from the client, so it is never a label.
            return None
        method = method_name(handler_call_details)

        def build(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
            unary = not handler.response_streaming
            return wrap(handler,
                        lambda context: self._metrics._around(method, unary, context))
        return self._wrapped.get(method, handler, build)
