"""The one place where settings choose the storage backends (docs/storage.md).

Profiles: embedded (memory + SQLite) or Redis behind a local fallback. Event log and labels:
embedded (SQLite) or PostgreSQL. Each opener returns an object that also has ``close``; the
composition root registers it on its exit stack.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol

from ringfence.service.adapters.embedded_store import EmbeddedProfileStore
from ringfence.service.adapters.event_log import NullEventLog, SqliteEventLog
from ringfence.service.adapters.labels import MemoryLabelStore, SqliteLabelStore
from ringfence.service.core.ports import EventLog, LabelStore, ProfileStore
from ringfence.service.settings import Settings

log = logging.getLogger(__name__)


class ManagedProfileStore(ProfileStore, Protocol):
    """A ProfileStore the app also checkpoints, purges and closes."""

    def begin_checkpoint(self) -> int: ...

    def checkpoint(self, limit: int | None = None) -> int: ...

    def purge(self, before: float) -> int: ...

    def close(self) -> None: ...


class ManagedEventLog(EventLog, Protocol):
    def purge(self, before: float) -> None: ...

    def committed(self) -> Awaitable[None] | None:
        """Done once the events appended so far are committed (event_log_ack=committed)."""
        ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class ManagedLabelStore(LabelStore, Protocol):
    def close(self) -> None: ...


def _dsn(settings: Settings) -> str:
    if settings.postgres_dsn is None:  # the settings validator already requires it
        raise ValueError("postgres_dsn is not set")
    return settings.postgres_dsn.get_secret_value()


def open_profile_store(settings: Settings, data_dir: Path | None) -> ManagedProfileStore:
    if settings.store == "embedded":
        return EmbeddedProfileStore(
            data_dir / "state.db" if data_dir else None,
            max_accounts=settings.max_accounts_in_memory,
            max_shared=settings.max_shared_in_memory)
    # Imported here so the embedded default does not need the redis package loaded.
    from ringfence.service.adapters.redis_store import RedisProfileStore, connect
    from ringfence.service.adapters.resilient import CircuitBreaker, ResilientProfileStore

    if settings.hash_key is None:
        log.warning("store=redis without hash_key: replicas that generated their own keys "
                    "hash devices and prefixes differently and will not agree")
    shared = RedisProfileStore(
        connect(settings.redis_url, timeout_s=settings.redis_timeout_s),
        prefix=settings.redis_prefix, ttl_s=settings.retention_days * 86400,
        max_active=settings.max_accounts_in_memory)
    # The fallback is memory-only: it serves an outage, and Redis is the state of record.
    local = EmbeddedProfileStore(None, max_accounts=settings.redis_local_max_accounts,
                                 max_shared=settings.redis_local_max_accounts)
    return ResilientProfileStore(
        shared, local, breaker=CircuitBreaker(settings.redis_probe_interval_s),
        slow_s=settings.redis_timeout_s)


def open_event_log(settings: Settings, data_dir: Path | None) -> ManagedEventLog:
    if settings.event_log == "postgres":
        from ringfence.service.adapters.postgres_log import PostgresEventLog

        return PostgresEventLog(_dsn(settings), schema=settings.postgres_schema,
                                spill_path=data_dir / "events.db" if data_dir else None)
    if data_dir is None:
        return NullEventLog()
    return SqliteEventLog(data_dir / "events.db", synchronous=settings.event_log_sync,
                          ack=settings.event_log_ack)


def open_label_store(settings: Settings, data_dir: Path | None) -> ManagedLabelStore:
    if settings.label_store == "postgres":
        from ringfence.service.adapters.postgres_labels import PostgresLabelStore

        return PostgresLabelStore(_dsn(settings), schema=settings.postgres_schema)
    return SqliteLabelStore(data_dir / "state.db") if data_dir else MemoryLabelStore()
