"""Prometheus metrics on a side HTTP port: gRPC server metrics (an interceptor), decisions by
action and reason (an observer the servicers call; core/ never imports prometheus), and state
read at scrape time (cluster model age and size, event-log writes dropped).

No label ever carries an account, IP, fingerprint or cluster id: labels are method names that
have a handler, status code names, actions and reason codes (a bounded set, capped anyway).
Each App has its own registry, so tests can run several in one process.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
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
from ringfence.service.api.interceptors import method_name, status_name, wrap
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
        for action in Action:  # every series exists from the start, so rate() sees zeros
            self.decisions.labels(action.name.lower())
            self.policy_decisions.labels(action.name.lower())
        r.register(_StateCollector(clock, cluster_model, dropped_writes, failed_commits))
        self._reason_codes: set[str] = set()
        self._reason_lock = threading.Lock()
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # decisions ----------------------------------------------------------------------------

    def observe_decision(self, decision: Decision) -> None:
        self.decisions.labels(decision.action.name.lower()).inc()
        self.policy_decisions.labels(decision.policy_action.name.lower()).inc()
        self.risk.observe(decision.risk_score)
        if decision.degraded:
            self.degraded.inc()
        if decision.route_to_fallback:
            self.fallback.inc()
        for reason in decision.reasons:
            self.reasons.labels(self._reason_label(reason.code)).inc()

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

    @contextlib.contextmanager
    def _around(self, method: str, unary: bool,
                context: grpc.aio.ServicerContext) -> Iterator[None]:
        start = time.perf_counter()
        self.in_flight.inc()
        exc: BaseException | None = None
        try:
            yield
        except BaseException as e:
            exc = e
            raise
        finally:
            self.in_flight.dec()
            self.requests.labels(method, status_name(context, exc)).inc()
            if unary:
                self.latency.labels(method).observe(time.perf_counter() - start)

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


class _MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            # An unknown method: its name comes from the client, so it is never a label.
            return None
        method = method_name(handler_call_details)
        unary = not handler.response_streaming
        return wrap(handler, lambda context: self._metrics._around(method, unary, context))
