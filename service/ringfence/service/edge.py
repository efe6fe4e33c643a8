"""Security and operations around the gRPC server, built from settings in one place for the
composition root: TLS/mTLS on the port, bearer tokens, Prometheus metrics, OpenTelemetry
tracing and the plaintext probe port (docs/operations.md)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health

from ringfence.service.api import tls
from ringfence.service.api.auth import AuthInterceptor
from ringfence.service.api.probes import start_probe_server
from ringfence.service.core.decision_feed import DecisionFeed
from ringfence.service.core.model import Decision
from ringfence.service.core.ports import Clock
from ringfence.service.metrics import Metrics
from ringfence.service.settings import Settings

if TYPE_CHECKING:
    from ringfence.service.core.clustering import ClusterModel

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost: assume it is reachable from outside


class Edge:
    """Interceptors, the observer for decisions, the port binding and the side servers."""

    def __init__(self, settings: Settings, clock: Clock, *,
                 cluster_model: Callable[[], ClusterModel | None] = lambda: None,
                 dropped_writes: Callable[[], int] = lambda: 0,
                 failed_commits: Callable[[], int] = lambda: 0,
                 tracer_provider: Any | None = None,
                 decision_feed: DecisionFeed | None = None) -> None:
        self.settings = settings
        self.decision_feed = decision_feed
        self.metrics = (Metrics(clock=clock, cluster_model=cluster_model,
                                dropped_writes=dropped_writes, failed_commits=failed_commits)
                        if settings.metrics_port else None)
        self.auth = AuthInterceptor(settings.tokens_file) if settings.tokens_file else None
        self._own_tracer_provider = tracer_provider is None and settings.tracing != "off"
        if self._own_tracer_provider:
            from ringfence.service import tracing
            tracer_provider = tracing.provider(settings)
        self.tracer_provider = tracer_provider
        self.metrics_port = 0
        self.health_port = 0
        self._probe_server: grpc.aio.Server | None = None

    @property
    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Outermost first: metrics and tracing also see the calls auth turns away."""
        out: list[grpc.aio.ServerInterceptor] = []
        if self.metrics is not None:
            out.append(self.metrics.interceptor())
        if self.tracer_provider is not None:
            from ringfence.service.tracing import TracingInterceptor
            out.append(TracingInterceptor(self.tracer_provider))
        if self.auth is not None:
            out.append(self.auth)
        return out

    @property
    def on_decision(self) -> Callable[[Decision], None] | None:
        """What servicers call with every decision they return (None: nobody listens)."""
        observers: list[Callable[[Decision], None]] = []
        if self.decision_feed is not None:
            observers.append(self.decision_feed.publish)
        if self.metrics is not None:
            observers.append(self.metrics.observe_decision)
        if self.tracer_provider is not None:
            from ringfence.service.tracing import annotate_decision
            observers.append(annotate_decision)
        if not observers:
            return None
        if len(observers) == 1:
            return observers[0]

        def fan_out(decision: Decision) -> None:
            for observe in observers:
                observe(decision)
        return fan_out

    def bind(self, server: grpc.aio.Server) -> int:
        return tls.bind(server, self.settings)

    async def start(self, health_servicer: health.aio.HealthServicer) -> None:
        """Start the side servers (after the gRPC server) and say how the port is guarded."""
        s = self.settings
        if self.metrics is not None:
            self.metrics_port = self.metrics.serve(s.host, s.metrics_port)
        if s.health_port:
            self._probe_server, self.health_port = await start_probe_server(
                health_servicer, s.host, s.health_port, reuse_port=s.workers > 1)
        mode = ("mtls" if s.tls_client_ca_file else "tls") if s.tls_cert_file else "plaintext"
        log.info("edge", extra={"transport": mode,
                                "tokens": self.auth.callers if self.auth else None,
                                "metrics_port": self.metrics_port or None,
                                "health_port": self.health_port or None,
                                "tracing": s.tracing})
        if not is_loopback(s.host):
            if self.auth is None:
                log.warning("listening on a non-loopback address without bearer tokens "
                            "(RINGFENCE_TOKENS_FILE): any client that reaches the port can "
                            "score, read profiles and submit labels", extra={"host": s.host})
            if s.tls_cert_file is None:
                log.warning("listening on a non-loopback address without TLS "
                            "(RINGFENCE_TLS_CERT_FILE): requests, answers and tokens cross "
                            "the network in clear", extra={"host": s.host})

    async def close(self) -> None:
        if self._probe_server is not None:
            await self._probe_server.stop(0)
            self._probe_server = None
        if self.metrics is not None:
            self.metrics.close()
        if self._own_tracer_provider and self.tracer_provider is not None:
            self.tracer_provider.shutdown()
