"""The ports the core needs from the outside world, as Protocols."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ringfence.service.core.model import (
    AccountSummary,
    Decision,
    IpAddress,
    IpInfo,
    Label,
    Linkage,
    ScoredEvent,
)
from ringfence.service.core.profiles import AccountEvent, AccountProfile


class Clock(Protocol):
    """Wall-clock time in epoch seconds; injected so tests and replays control it."""

    def now(self) -> float: ...


class GeoIp(Protocol):
    """IP enrichment. Must never raise for a valid address: on failure it returns an IpInfo
    with only the prefixes filled in and ``degraded=True``."""

    def lookup(self, ip: IpAddress) -> IpInfo: ...


class ProfileStore(Protocol):
    """Live profiles per account, device key and IP prefix, plus each account's last decision.

    ``record`` must be atomic per request: it updates the three profiles and returns what they
    say afterwards. Implementations: embedded (memory + SQLite), Redis (later).
    """

    def record(self, account_id: str, device_key: str, prefix_key: str, event: AccountEvent,
               created_at: float | None) -> Linkage: ...

    def account_summary(self, account_id: str, now: float) -> AccountSummary | None: ...

    def save_decision(self, account_id: str, decision: Decision) -> None: ...

    def last_decision(self, account_id: str) -> Decision | None: ...

    def account_profile(self, account_id: str) -> AccountProfile | None: ...

    def active_accounts(self) -> Iterator[tuple[str, AccountProfile]]:
        """The accounts held for clustering (the embedded store: those in memory)."""
        ...

    def save_meta(self, key: str, value: str) -> None: ...

    def load_meta(self, key: str) -> str | None: ...


class LabelStore(Protocol):
    """Analyst labels, kept for good (they calibrate the policy later)."""

    def add(self, label: Label) -> None: ...

    def all(self) -> list[Label]: ...


class EventLog(Protocol):
    """Durable append-only log of scored requests (identifiers already keyed-hashed)."""

    def append(self, event: ScoredEvent) -> None: ...
