"""Settings: built once at start from defaults < TOML file < ``RINGFENCE_*`` env vars < flags,
then passed down by constructors. Nothing else reads the environment."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "RINGFENCE_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    data_dir: Path = Field(Path("data"), description="Where the embedded store keeps "
                           "profiles (state.db), the event log (events.db) and the hash key.")
    persist: bool = Field(True, description="Keep profiles and events on disk; false keeps "
                          "everything in memory (lost on restart).")
    hash_key: SecretStr | None = Field(None, description="Hex key (32-128 hex digits) for keyed "
                                       "hashes of IPs and device ids. Unset: generated once "
                                       "into data_dir/hash.key.")
    policy_file: Path | None = Field(None, description="Scoring policy TOML "
                                     "(docs/policy.md). Unset: built-in defaults.")
    geoip_asn_db: Path | None = Field(None, description="GeoLite2/GeoIP2 ASN .mmdb.")
    geoip_country_db: Path | None = Field(None, description="GeoIP2 Country .mmdb.")
    geoip_city_db: Path | None = Field(None, description="GeoIP2 City .mmdb.")
    geoip_anonymous_ip_db: Path | None = Field(None, description="GeoIP2 Anonymous-IP .mmdb "
                                               "(hosting, VPN, proxy, Tor flags).")
    geoip_isp_db: Path | None = Field(None, description="GeoIP2 ISP .mmdb.")
    geoip_connection_type_db: Path | None = Field(None, description="GeoIP2 Connection-Type "
                                                  ".mmdb.")
    geoip_cache_size: int = Field(65536, ge=0, description="IP lookups cached (LRU).")
    geoip_reload_interval_s: float = Field(30.0, gt=0, description="How often .mmdb files "
                                           "are checked for replacement.")
    retention_days: float = Field(30.0, gt=0, description="Profiles idle this long are purged.")
    event_retention_days: float = Field(90.0, gt=0, description="Events older than this are "
                                        "deleted from the event log.")
    max_accounts_in_memory: int = Field(1_000_000, ge=1, description="Account profiles "
                                        "cached in memory; older ones live on disk only.")
    max_shared_in_memory: int = Field(1_000_000, ge=1, description="Device and prefix "
                                      "profiles cached in memory, each.")
    checkpoint_interval_s: float = Field(5.0, gt=0, description="How often changed profiles "
                                         "are written to disk.")
    background_loop_share: float = Field(
        0.1, gt=0, le=1, description="Most of the event loop's time that background work "
        "on it (profile checkpoints, cluster placement, refit snapshots) may take while "
        "requests are served; it pauses between slices to stay under it. 1: only a loop "
        "turn between slices.")
    clustering: bool = Field(True, description="Cluster accounts with HDBSCAN and score "
                             "clusters; false scores accounts alone.")
    cluster_min_cluster_size: int = Field(10, ge=2, description="Smallest group of accounts "
                                          "that forms a cluster.")
    cluster_min_samples: int = Field(5, ge=1, description="HDBSCAN min_samples: higher is "
                                     "more conservative.")
    cluster_backend: Literal["auto", "hdbscan", "knn"] = Field(
        "auto", description="How refits build the HDBSCAN hierarchy: hdbscan (exact), knn "
        "(approximate neighbour graph, fast-hdbscan) or auto (knn from 20,000 accounts).")
    cluster_window_days: float = Field(7.0, gt=0, description="Accounts active in this window "
                                       "are clustered.")
    cluster_refit_interval_s: float = Field(900.0, gt=0, description="Refit at least this "
                                            "often.")
    cluster_refit_min_gap_s: float = Field(60.0, ge=0, description="Never refit more often "
                                           "than this.")
    cluster_refit_pending: int = Field(500, ge=1, description="Refit early once this many "
                                       "new or changed accounts wait to be placed.")
    cluster_refit_local: bool = Field(True, description="This process refits the clusters. "
                                      "False: it only loads models published to model_dir "
                                      "(by `ringfence recluster` or another replica).")
    model_dir: Path | None = Field(None, description="Where cluster model artifacts are "
                                   "published and read. Unset: data_dir/models (none without "
                                   "persist).")
    model_poll_interval_s: float = Field(10.0, gt=0, description="How often model_dir is "
                                         "checked for a newer model.")
    cluster_assign_interval_s: float = Field(1.0, gt=0, description="How often waiting "
                                             "accounts are placed into the current clusters.")
    event_log_sync: Literal["NORMAL", "FULL"] = Field("NORMAL", description="SQLite "
                                                      "synchronous mode of the event log.")
    event_log_ack: Literal["queued", "committed"] = Field(
        "queued", description="When a scoring call answers: queued (its events are committed "
        "within ~70 ms; kill -9 loses that window) or committed (only after its events are "
        "committed; UNAVAILABLE while the log cannot write). Embedded event log only "
        "(docs/reliability.md).")
    max_clock_skew_s: float = Field(300.0, ge=0, description="Event times further ahead "
                                    "than this are rejected.")
    max_event_age_s: float = Field(7 * 86400.0, gt=0, description="Event times older than "
                                   "this are rejected.")
    max_batch_size: int = Field(1000, ge=1, description="Requests per ScoreBatch call.")
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest gRPC "
                                   "message accepted or sent.")
    max_connection_age_s: float = Field(300.0, gt=0, description="Connections are recycled "
                                        "after this long so clients rebalance.")
    max_connection_age_grace_s: float = Field(30.0, ge=0, description="Time given to calls "
                                              "on a recycled connection.")
    keepalive_time_s: float = Field(60.0, gt=0, description="Server keepalive ping interval.")
    min_client_ping_interval_s: float = Field(10.0, gt=0, description="Clients may ping this "
                                              "often without being told too_many_pings.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="On SIGTERM: health turns "
                                    "NOT_SERVING, calls in flight get this long to finish.")
    # Shared state across replicas and worker processes (docs/storage.md).
    store: Literal["embedded", "redis"] = Field("embedded", description="Live profiles: "
                                                "embedded (this process, SQLite file) or "
                                                "redis (shared by every replica).")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for store=redis.")
    redis_prefix: str = Field("ringfence", min_length=1, description="Prefix of every Redis "
                              "key; replicas that must agree use the same one.")
    redis_timeout_s: float = Field(0.05, gt=0, description="Redis socket and connect "
                                   "timeout; a slower answer counts as a failure.")
    redis_probe_interval_s: float = Field(1.0, gt=0, description="While Redis is failing, "
                                          "answers come from local state and Redis is "
                                          "retried once per interval.")
    redis_local_max_accounts: int = Field(100_000, ge=1, description="Account profiles (and "
                                          "device/prefix profiles, each) kept in the local "
                                          "fallback that answers while Redis is down.")
    event_log: Literal["embedded", "postgres"] = Field("embedded", description="Event log: "
                                                       "embedded (data_dir/events.db) or "
                                                       "postgres (spills to events.db while "
                                                       "PostgreSQL is down).")
    label_store: Literal["embedded", "postgres"] = Field("embedded", description="Analyst "
                                                         "labels: embedded (state.db) or "
                                                         "postgres.")
    postgres_dsn: SecretStr | None = Field(None, description="libpq DSN/URL for the "
                                           "postgres backends, e.g. postgresql://user@host/db.")
    postgres_schema: str = Field("ringfence", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                                 description="PostgreSQL schema of the events and labels "
                                 "tables (created if missing).")
    workers: int = Field(1, ge=1, le=256, description="Worker processes serving one port "
                         "(SO_REUSEPORT), forked before any gRPC object exists; more than "
                         "one needs store=redis.")
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["json", "text"] = Field("json", description="Log line format.")
    # Security and operations (docs/operations.md).
    tls_cert_file: Path | None = Field(None, description="PEM server certificate (chain) for "
                                       "TLS on the gRPC port. Unset: plaintext.")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(None, description="PEM CA bundle; when set, "
                                            "clients must present a certificate it signed "
                                            "(mutual TLS).")
    tokens_file: Path | None = Field(None, description="TOML file of callers (SHA-256 of "
                                     "each bearer token, name, role). Unset: no token is "
                                     "asked for.")
    metrics_port: int = Field(0, ge=0, le=65535, description="Port of the Prometheus "
                              "/metrics HTTP endpoint, on the same host as gRPC. 0: off.")
    health_port: int = Field(0, ge=0, le=65535, description="Extra plaintext port serving "
                             "only grpc.health.v1 (for probes that cannot speak TLS). 0: off.")
    tracing: Literal["off", "otlp", "console"] = Field("off", description="OpenTelemetry "
                                                       "spans per RPC (needs the `tracing` "
                                                       "extra for otlp).")
    tracing_otlp_endpoint: str | None = Field(None, description="OTLP/gRPC collector, e.g. "
                                              "http://otel-collector:4317. Unset: the "
                                              "exporter's default.")
    tracing_sample_ratio: float = Field(1.0, ge=0, le=1, description="Share of traces "
                                        "started here that are sampled (a caller's sampling "
                                        "decision is followed).")

    # Gateway integrations: Envoy ext_authz / rate limit service, HTTP /v1/check (docs/envoy.md).
    gateway_account_header: str = Field("x-ringfence-account", description="Request header "
                                        "carrying the account id (set by the API's auth "
                                        "layer) for Envoy ext_authz and /v1/check.")
    gateway_missing_account: Literal["allow", "deny"] = Field(
        "allow", description="A gateway request without the account header: allow (with "
        "x-ringfence-skipped) or deny with 400.")
    gateway_challenge_status: int = Field(403, description="HTTP status a CHALLENGE is denied "
                                          "with at the gateway; 0 lets it through with "
                                          "x-ringfence-action: challenge.")
    gateway_trusted_proxies: str = Field("", description="Comma-separated addresses/CIDRs "
                                         "whose X-Forwarded-For is believed (the client is "
                                         "the nearest untrusted hop). Empty: the peer is "
                                         "the client.")
    http_check_port: int = Field(0, ge=0, le=65535, description="Port of the HTTP /v1/check "
                                 "endpoint (nginx auth_request, Traefik ForwardAuth), on the "
                                 "same host as gRPC. 0: off.")
    ratelimit_max_counters: int = Field(100_000, ge=1, description="Fixed-window counters "
                                        "the Envoy rate limit service keeps in memory (least "
                                        "recently used dropped first).")
    # StreamDecisions, the decision feed for enforcement-point caches (docs/decision-stream.md).
    decision_stream_heartbeat_s: float = Field(15.0, gt=0, le=3600, description="A decision "
                                               "stream with nothing to send sends a heartbeat "
                                               "this often, so clients can tell a dead stream.")
    decision_stream_max_entries: int = Field(100_000, ge=1, description="Active decisions "
                                             "held for stream snapshots; over this the one "
                                             "expiring first is dropped.")
    decision_stream_queue_size: int = Field(10_000, ge=1, description="Events waiting for one "
                                            "stream; a reader that falls further behind is cut "
                                            "off (ABORTED) and must resync.")
    decision_stream_max_subscribers: int = Field(1_000, ge=0, description="Decision streams "
                                                 "open at once; more are refused "
                                                 "(RESOURCE_EXHAUSTED). 0: StreamDecisions "
                                                 "off.")

    @field_validator("gateway_account_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        name = value.strip().lower()
        if not name or any(not (c.isalnum() or c in "-_.") or not c.isascii() for c in name):
            raise ValueError("must be an HTTP header name (letters, digits, '-', '_', '.')")
        return name

    @field_validator("gateway_challenge_status")
    @classmethod
    def _challenge_status(cls, value: int) -> int:
        # The 4xx codes Envoy's envoy.type.v3.StatusCode defines (it rejects others).
        envoy_4xx = {*range(400, 418), *range(421, 425), 426, 428, 429, 431}
        if value != 0 and value not in envoy_4xx:
            raise ValueError("must be 0 (let challenges through) or a 4xx status Envoy "
                             "knows (400-417, 421-424, 426, 428, 429, 431)")
        return value

    @field_validator("gateway_trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in (part.strip() for part in value.split(",")):
            if item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return value

    @field_validator("hash_key")
    @classmethod
    def _hex_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        try:
            key = bytes.fromhex(raw)
        except ValueError:
            raise ValueError("must be hexadecimal") from None
        if not 16 <= len(key) <= 64:
            raise ValueError("must be 32 to 128 hex digits")
        return value

    @model_validator(mode="after")
    def _tls_files_together(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and "
                             "tls_key_file")
        if self.metrics_port and self.workers > 1:
            raise ValueError("metrics_port with workers > 1 is not supported yet (each worker "
                             "would count alone): run one worker per pod and scale replicas")
        return self

    @model_validator(mode="after")
    def _backends_configured(self) -> Settings:
        if "postgres" in (self.event_log, self.label_store) and self.postgres_dsn is None:
            raise ValueError("event_log or label_store is postgres: set postgres_dsn")
        if self.event_log_ack == "committed" and self.event_log != "embedded":
            raise ValueError("event_log_ack=committed needs event_log=embedded (the postgres "
                             "log acknowledges once an event is queued)")
        if self.workers > 1 and self.store != "redis":
            raise ValueError("workers > 1 needs store=redis: embedded profiles live in one "
                             "process, so workers would disagree")
        if self.workers > 1 and self.port == 0:
            raise ValueError("workers > 1 needs a fixed port (0 would give each its own)")
        if self.workers > 1 and not self.persist and self.hash_key is None:
            raise ValueError("workers > 1 without persist needs hash_key (each worker would "
                             "generate its own key and hash identifiers differently)")
        return self

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Defaults < TOML ``config_file`` < env vars < ``overrides`` (e.g. CLI flags)."""
        first = cls(**overrides)
        if config_file is None:
            return first
        with config_file.open("rb") as f:
            from_file = tomllib.load(f)
        explicit = {name: getattr(first, name) for name in first.model_fields_set}
        return cls(**{**from_file, **explicit})
