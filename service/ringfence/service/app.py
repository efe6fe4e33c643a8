"""The composition root: settings → adapters → engine → gRPC server, opened in order by one
AsyncExitStack and closed in reverse. Health is NOT_SERVING until everything is open, SERVING
while it runs, and NOT_SERVING again as soon as shutdown starts (then calls in flight drain)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import multiprocessing
import os
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ringfence.service.adapters.backends import (
    ManagedEventLog,
    ManagedProfileStore,
    open_event_log,
    open_label_store,
    open_profile_store,
)
from ringfence.service.adapters.clock import SystemClock
from ringfence.service.adapters.geoip import GeoIpPaths, MaxMindGeoIp
from ringfence.service.adapters.keyfile import load_or_create_key
from ringfence.service.adapters.memory_counter import MemoryHitCounter
from ringfence.service.adapters.model_store import ModelArtifactError, ModelStore
from ringfence.service.api import envoy
from ringfence.service.api.convert import Limits
from ringfence.service.api.durable import DurableAckInterceptor
from ringfence.service.api.gateway import Gateway, GatewayConfig, parse_trusted_proxies
from ringfence.service.api.http_check import HttpCheckServer
from ringfence.service.api.servicer import SERVICE_NAME, RiskServicer
from ringfence.service.core.cluster_state import ClusterState, RefitSchedule
from ringfence.service.core.clustering import (
    ClusterModel,
    ClusterParams,
    Snapshot,
    fit_model,
    predict_rows,
    tie_placements,
)
from ringfence.service.core.decision_feed import DecisionFeed, FeedLimits
from ringfence.service.core.engine import RiskEngine
from ringfence.service.core.errors import Rejected
from ringfence.service.core.features import feature_rows
from ringfence.service.core.fingerprint import analyze_user_agent
from ringfence.service.core.fitting import should_warm_up
from ringfence.service.core.fitting import warm_up as warm_fit_backend
from ringfence.service.core.identity import Hasher
from ringfence.service.core.policy import Policy
from ringfence.service.core.ports import Clock
from ringfence.service.core.profiles import AccountProfile
from ringfence.service.edge import Edge
from ringfence.service.keys import note_key
from ringfence.service.pacing import Pacer
from ringfence.service.settings import Settings

log = logging.getLogger(__name__)
_PLACE_SLICE = 32  # accounts placed per slice of loop time (~1 ms: features; ties and apply)
_CHECKPOINT_SLICE = 96  # changed profiles serialized per slice of loop time (~1 ms)
REFIT_NICENESS = 10  # the refit worker's nice increment (the server's own CPU comes first)
_END = object()


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return Policy()
    with path.open("rb") as f:
        return Policy.from_mapping(tomllib.load(f))


def geoip_paths(settings: Settings) -> GeoIpPaths:
    return GeoIpPaths(
        asn=settings.geoip_asn_db, country=settings.geoip_country_db,
        city=settings.geoip_city_db, anonymous_ip=settings.geoip_anonymous_ip_db,
        isp=settings.geoip_isp_db, connection_type=settings.geoip_connection_type_db)


def cluster_state(settings: Settings, policy: Policy) -> ClusterState:
    return ClusterState(
        ClusterParams(min_cluster_size=settings.cluster_min_cluster_size,
                      min_samples=settings.cluster_min_samples,
                      window_days=settings.cluster_window_days,
                      backend=settings.cluster_backend),
        RefitSchedule(interval_s=settings.cluster_refit_interval_s,
                      min_gap_s=settings.cluster_refit_min_gap_s,
                      pending_threshold=settings.cluster_refit_pending,
                      max_pending=max(settings.max_accounts_in_memory,
                                      settings.cluster_refit_pending)),
        policy.cluster)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    ms = 1000
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * ms)),
        ("grpc.keepalive_timeout_ms", 20 * ms),
        ("grpc.http2.min_ping_interval_without_data_ms",
         int(settings.min_client_ping_interval_s * ms)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * ms)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * ms)),
        # Worker processes share one port; the kernel spreads new connections over them.
        *([("grpc.so_reuseport", 1)] if settings.workers > 1 else []),
    ]


# Young collections as often as CPython's default (every 700 net allocations), so each one
# is short (every gRPC call leaves ~5 objects of cyclic garbage, so they always have work).
# A full collection comes after 100 middle ones (CPython: 10), and CPython also waits until a
# quarter of the long-lived objects are new. With (10_000, 20, 50) the young collections
# paused the loop for 2-7 ms and the middle ones for ~25 ms: open-loop p99.9 at half load was
# 22-25 ms against 10-11 ms with these, for ~3 % more CPU per call (docs/benchmarks.md).
GC_THRESHOLDS = (700, 10, 100)


def warm_up() -> None:
    """Pay one-off costs before SERVING, not on the first requests: ua-parser compiles its
    regexes on first use (~170 ms). And move everything built at start out of the garbage
    collector's reach. Then the collector's thresholds (``GC_THRESHOLDS``)."""
    analyze_user_agent("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                       "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36")
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _stop_pool(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Stop the refit worker now: a fit in progress is abandoned, not waited for."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


class App:
    """One running ringfence service. ``start`` returns the bound port."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 tracer_provider: object | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self.health = health.aio.HealthServicer()
        self.engine: RiskEngine | None = None
        self.store: ManagedProfileStore | None = None
        self.events: ManagedEventLog | None = None
        self.geoip: MaxMindGeoIp | None = None
        self.clusters: ClusterState | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.models: ModelStore | None = None
        self._model_path: Path | None = None
        self._refit_pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._fit_warmed = False
        self._refit_lock = asyncio.Lock()
        self._tracer_provider = tracer_provider  # tests inject one; else from settings
        self.edge: Edge | None = None
        self.gateway: Gateway | None = None  # Envoy ext_authz / rate limit, /v1/check
        self.decision_feed: DecisionFeed | None = None  # what StreamDecisions follows
        self.http_check: HttpCheckServer | None = None

    async def start(self) -> int:
        s = self.settings
        try:
            await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            data_dir = s.data_dir if s.persist else None
            key = load_or_create_key(
                s.hash_key.get_secret_value() if s.hash_key else None, data_dir)
            policy = load_policy(s.policy_file)
            self.geoip = MaxMindGeoIp(geoip_paths(s), cache_size=s.geoip_cache_size)
            self._stack.callback(self.geoip.close)
            self.store = open_profile_store(s, data_dir)  # backends chosen in backends.py
            self._stack.callback(self.store.close)
            note_key(self.store, key, s.retention_days)  # warns when the key was rotated
            self.events = open_event_log(s, data_dir)
            self._stack.callback(self.events.close)
            labels = open_label_store(s, data_dir)
            self._stack.callback(labels.close)
            if s.clustering:
                self.clusters = cluster_state(s, policy)
                model_dir = s.model_dir or (data_dir / "models" if data_dir else None)
                if model_dir is not None:
                    self.models = ModelStore(model_dir, key)
                # CPU-heavy fits run in a worker process started from a clean forkserver
                # (never forked from a process that already runs gRPC).
                # At a lower CPU priority: a fit sharing a core with the server otherwise
                # halves the serving capacity for seconds (a queue and a p99 of ~0.6 s).
                self._refit_pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("forkserver"),
                    initializer=os.nice, initargs=(REFIT_NICENESS,))
                self._stack.callback(_stop_pool, self._refit_pool)
            self.engine = RiskEngine(policy=policy, geoip=self.geoip, store=self.store,
                                     events=self.events, clock=self.clock, hasher=Hasher(key),
                                     clusters=self.clusters, labels=labels)
            if s.decision_stream_max_subscribers:
                self.decision_feed = DecisionFeed(self.clock, FeedLimits(
                    max_entries=s.decision_stream_max_entries,
                    queue_size=s.decision_stream_queue_size,
                    max_subscribers=s.decision_stream_max_subscribers))
                self._stack.callback(self.decision_feed.close)
            self.edge = Edge(s, self.clock, tracer_provider=self._tracer_provider,
                             decision_feed=self.decision_feed,
                             cluster_model=lambda: self.clusters.model if self.clusters else None,
                             dropped_writes=lambda: getattr(self.events, "dropped", 0),
                             failed_commits=lambda: getattr(self.events, "failed_commits", 0))
            self._stack.push_async_callback(self.edge.close)
            servicer = RiskServicer(
                self.engine, self.clock,
                Limits(max_clock_skew_s=s.max_clock_skew_s, max_event_age_s=s.max_event_age_s),
                s.max_batch_size, reload_model=self.reload_model_now,
                on_decision=self.edge.on_decision, decision_feed=self.decision_feed,
                heartbeat_s=s.decision_stream_heartbeat_s)
            # Innermost: with event_log_ack=committed a scoring call answers after its commit.
            durable = ([DurableAckInterceptor(self.events.committed)]
                       if s.event_log_ack == "committed" else [])
            self.server = grpc.aio.server(options=server_options(s),
                                          interceptors=[*self.edge.interceptors, *durable])
            self.server.add_generic_rpc_handlers((servicer.handler(),))
            self.gateway = Gateway(
                self.engine, self.clock,
                Limits(max_clock_skew_s=s.max_clock_skew_s, max_event_age_s=s.max_event_age_s),
                GatewayConfig(account_header=s.gateway_account_header,
                              missing_account=s.gateway_missing_account,
                              challenge_status=s.gateway_challenge_status,
                              trusted_proxies=parse_trusted_proxies(s.gateway_trusted_proxies)),
                on_decision=self.edge.on_decision)
            envoy.add_to_server(
                envoy.AuthorizationServicer(self.gateway),
                envoy.RateLimitServicer(self.gateway, MemoryHitCounter(s.ratelimit_max_counters),
                                        self.clock),
                self.server)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
            reflection.enable_server_reflection(
                (SERVICE_NAME, envoy.AUTHORIZATION_SERVICE, envoy.RATE_LIMIT_SERVICE,
                 health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
            self.port = self.edge.bind(self.server)  # TLS/mTLS when configured
            await self.server.start()
            await self.edge.start(self.health)
            if s.http_check_port:
                self.http_check = HttpCheckServer(
                    self.gateway, s.host, s.http_check_port, reuse_port=s.workers > 1,
                    committed=self.events.committed if s.event_log_ack == "committed" else None)
                await self.http_check.start()
                self._stack.push_async_callback(self.http_check.close)
            self._every(s.checkpoint_interval_s, self._checkpoint)
            self._every(0.02, self._submit_events)
            self._every(s.geoip_reload_interval_s, self._reload_geoip)
            self._every(3600.0, self._purge)
            if self.clusters is not None:
                self._every(s.cluster_assign_interval_s, self._cluster_work)
            if self.models is not None:
                await self._load_published_model()  # ids continue across restarts
                self._every(s.model_poll_interval_s, self._load_published_model)
            warm_up()
            await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        except BaseException:
            await self._stack.aclose()
            raise
        log.info("ringfence serving", extra={"port": self.port, "policy": policy.version,
                                             "geoip": list(self.geoip.loaded)})
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Turn unhealthy, let calls in flight finish (up to ``grace`` s), then close."""
        await self.health.enter_graceful_shutdown()
        if self.decision_feed is not None:
            self.decision_feed.close()  # streams end now (UNAVAILABLE), not at the grace's end
        if self.http_check is not None:
            self.http_check.stop_serving()  # /healthz 503; closed with the stack below
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.server is not None:
            await self.server.stop(self.settings.shutdown_grace_s if grace is None else grace)
            self.server = None
        await self._stack.aclose()
        log.info("ringfence stopped")

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
                          ) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await job()
                except Exception:
                    log.exception("background job %s failed", job.__name__)
        self._tasks.append(asyncio.create_task(loop()))

    async def _submit_events(self) -> None:
        submit = getattr(self.events, "submit_pending", None)
        if submit is not None:
            submit()

    async def _checkpoint(self) -> None:
        if self.store is not None and self.engine is not None:
            self.engine.save_state()
            # In paced slices of 96 profiles (~1 ms each) so requests are not stalled
            # behind it (in slices of 256 with one loop turn between them, the checkpoint
            # every 5 s alone raised the open-loop p99 at half load from ~3 to ~16 ms).
            pacer = self._pacer()
            # one round: what changed until now (changes meanwhile wait for the next one)
            self.store.begin_checkpoint()
            while self.store.checkpoint(limit=_CHECKPOINT_SLICE):
                await pacer.pause()

    def _pacer(self) -> Pacer:
        return Pacer(self.settings.background_loop_share)

    async def _cluster_work(self) -> None:
        if self.clusters is None:
            return
        now = self.clock.now()
        await self.place_pending_now(now)
        self._warm_fit_backend()
        if (self.settings.cluster_refit_local and self.clusters.refit_due(now)
                and not self._refit_lock.locked()):
            await self.refit_now()

    def _warm_fit_backend(self) -> None:
        """Once, before the first fit that needs them: compile the k-NN fit's kernels in the
        refit worker (at its low priority, off the serving loop; ``fitting.should_warm_up``)."""
        if self._fit_warmed or self._refit_pool is None or self.clusters is None \
                or not self.settings.cluster_refit_local:
            return
        model = self.clusters.model
        accounts = (len(model.account_ids) if model is not None else 0) + self.clusters.pending
        if should_warm_up(self.clusters.params, accounts):
            self._fit_warmed = True
            self._refit_pool.submit(warm_fit_backend)

    async def place_pending_now(self, now: float | None = None) -> int:
        """Place accounts waiting for a cluster into the current model; returns how many."""
        state, store = self.clusters, self.store
        now = self.clock.now() if now is None else now
        placed = 0
        pacer = self._pacer()
        while state is not None and store is not None and state.model is not None \
                and state.pending:
            model = state.model
            found = [(i, p) for i in state.take_pending()
                     if (p := store.account_profile(i)) is not None]
            # Features are read from live profiles here, on the loop that mutates them;
            # only the prediction itself (read-only model) runs in a thread. Features, ties
            # and applying go in paced slices of 32 accounts (~1-2 ms): rows are
            # independent, so the result is the same as all at once (ties and applying for
            # a 128-account batch at once held the loop for ~5 ms, and with one loop turn
            # between slices a placement round raised the open-loop p99 at half load to
            # ~50 ms).
            slices = [found[i:i + _PLACE_SLICE] for i in range(0, len(found), _PLACE_SLICE)]
            parts = []
            for n, part in enumerate(slices or [[]]):
                if n:
                    await pacer.pause()
                parts.append(feature_rows([p for _, p in part], now, model.rarity,
                                          model.params.window_days))
            rows = parts[0] if len(parts) == 1 else np.vstack(parts)
            predicted = await asyncio.to_thread(predict_rows, model, rows)
            for start in range(0, len(found), _PLACE_SLICE):
                await pacer.pause()
                part = found[start:start + _PLACE_SLICE]
                # checked against the fit's ties on the loop (it reads the live profiles)
                tied = tie_placements(model, [p for _, p in part],
                                      predicted[start:start + _PLACE_SLICE], now)
                state.apply(model, [i for i, _ in part], tied)
            placed += len(found)
        return placed

    async def refit_now(self) -> ClusterModel | None:
        """Refit the clusters now, in the worker process, and swap the model in."""
        if self.clusters is None or self.store is None or self.engine is None:
            return None
        async with self._refit_lock:
            now = self.clock.now()
            snapshot = await self._snapshot(now)
            loop = asyncio.get_running_loop()
            model = await loop.run_in_executor(self._refit_pool, fit_model, snapshot)
            previous = self.clusters.model.version if self.clusters.model else ""
            self.clusters.install(model, self.engine.policy.cluster)
            if self.models is not None:
                info = await asyncio.to_thread(self.models.save, model, previous)
                self._model_path = info.path
            log.info("clusters refitted", extra={
                "model": model.version, "accounts": len(model.account_ids),
                "clusters": len(model.clusters), "fit_seconds": round(model.fit_seconds, 3)})
            return model

    async def _snapshot(self, now: float) -> Snapshot:
        """The refit snapshot. Live profiles are read on the loop, paced (``pacing.Pacer``)
        every 25 accounts; once every profile has been read, the rest (the vectorised tail
        over the copies: rarity, identity matrix, ~1 s per 100k accounts) runs in a thread,
        so it no longer holds the loop for hundreds of ms. This relies on the snapshot reading
        each profile as it pulls it from the iterator (``clustering.build_snapshot`` copies
        what it needs in that one pass), so nothing live is read after the last one."""
        assert self.clusters is not None and self.store is not None
        read_all = False

        def accounts() -> Iterator[tuple[str, AccountProfile]]:
            nonlocal read_all
            assert self.store is not None
            yield from self.store.active_accounts()
            read_all = True

        steps = self.clusters.snapshot(accounts(), now)
        pacer = self._pacer()
        while True:
            item = await asyncio.to_thread(next, steps, _END) if read_all else next(steps, _END)
            if isinstance(item, Snapshot):
                return item
            if item is _END:
                raise RuntimeError("the cluster snapshot ended without a snapshot")
            await pacer.pause()  # let requests in between

    async def reload_model_now(self) -> str:
        """Load the latest published model if it is newer than the one in use; returns the
        version in use. A missing or invalid artifact raises Rejected; the old model stays."""
        if self.clusters is None or self.models is None or self.engine is None:
            raise Rejected("clustering or the model directory is not configured")
        try:
            path = self.models.latest_path()
            if path is None:
                raise Rejected(f"no model has been published to {self.models.directory}")
            if path != self._model_path:
                model, info = await asyncio.to_thread(self.models.load, path)
                self.clusters.install(model, self.engine.policy.cluster)
                self._model_path = info.path
                log.info("published model loaded", extra={"model": info.version,
                                                          "clusters": info.clusters})
        except ModelArtifactError as exc:
            raise Rejected(str(exc)) from None
        model = self.clusters.model
        return model.version if model is not None else ""

    async def _load_published_model(self) -> None:
        try:
            await self.reload_model_now()
        except Rejected as exc:
            if "no model has been published" not in str(exc):
                log.warning("published model refused; keeping the current one",
                            extra={"reason": str(exc)})

    async def reload_geoip_now(self) -> list[str]:
        """Check the .mmdb files for replacement now; returns the databases swapped in."""
        if self.geoip is None:
            return []
        swapped = await asyncio.to_thread(self.geoip.maybe_reload)
        if swapped:
            log.info("geoip databases reloaded", extra={"databases": swapped})
        return swapped

    async def _reload_geoip(self) -> None:
        await self.reload_geoip_now()

    async def purge_now(self) -> int:
        """Enforce the retention settings now; returns how many profiles were purged."""
        now = self.clock.now()
        if self.events is not None:
            self.events.purge(now - self.settings.event_retention_days * 86400)
        if self.store is None:
            return 0
        n = self.store.purge(now - self.settings.retention_days * 86400)
        if n:
            log.info("purged idle profiles", extra={"profiles": n})
        return n

    async def _purge(self) -> None:
        await self.purge_now()
