"""Settings: built once at start from defaults < TOML file < ``RINGFENCE_*`` env vars < flags,
then passed down by constructors. Nothing else reads the environment."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
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
    clustering: bool = Field(True, description="Cluster accounts with HDBSCAN and score "
                             "clusters; false scores accounts alone.")
    cluster_min_cluster_size: int = Field(10, ge=2, description="Smallest group of accounts "
                                          "that forms a cluster.")
    cluster_min_samples: int = Field(5, ge=1, description="HDBSCAN min_samples: higher is "
                                     "more conservative.")
    cluster_window_days: float = Field(7.0, gt=0, description="Accounts active in this window "
                                       "are clustered.")
    cluster_refit_interval_s: float = Field(900.0, gt=0, description="Refit at least this "
                                            "often.")
    cluster_refit_min_gap_s: float = Field(60.0, ge=0, description="Never refit more often "
                                           "than this.")
    cluster_refit_pending: int = Field(500, ge=1, description="Refit early once this many "
                                       "new or changed accounts wait to be placed.")
    cluster_assign_interval_s: float = Field(1.0, gt=0, description="How often waiting "
                                             "accounts are placed into the current clusters.")
    event_log_sync: Literal["NORMAL", "FULL"] = Field("NORMAL", description="SQLite "
                                                      "synchronous mode of the event log.")
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
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["json", "text"] = Field("json", description="Log line format.")

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
