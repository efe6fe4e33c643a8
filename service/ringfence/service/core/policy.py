"""The scoring policy: signal weights, where signals saturate, thresholds, limits and TTLs.

Loaded from a TOML file (see docs/policy.md and ``policy.example.toml``); every key has a
default, so an empty file is the default policy. Unknown keys are errors, not silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ringfence.service.core.errors import FieldViolation, InvalidInput
from ringfence.service.core.model import Action


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Risk score at which each action starts (must increase: throttle ≤ challenge ≤ block)."""

    throttle: float = 0.5
    challenge: float = 0.7
    block: float = 0.9


@dataclass(frozen=True, slots=True)
class PerAction:
    allow: float
    throttle: float
    challenge: float
    block: float

    def __getitem__(self, action: Action) -> float:
        return float(getattr(self, action.name.lower()))


@dataclass(frozen=True, slots=True)
class Weights:
    """Each signal's largest contribution to the score (combined by noisy-OR)."""

    device_shared: float = 0.85
    prefix_shared: float = 0.35
    account_many_ips: float = 0.3
    account_many_asns: float = 0.3
    account_many_countries: float = 0.3
    account_many_devices: float = 0.3
    anonymized_ip: float = 0.25
    tor_exit: float = 0.4
    new_account: float = 0.15
    fingerprint_inconsistent: float = 0.35
    account_velocity: float = 0.5
    # Attributes — a new account, an anonymizing network (hosting, VPN, proxy), a client stack
    # many accounts share, heavy use — describe many honest users (a new backend on a cloud
    # host with a popular SDK, an agentic coding tool); together they add at most this much,
    # below the throttle threshold, so that enforcing takes evidence linking the account to
    # others or showing evasion (see scoring.ATTRIBUTE_CODES).
    attributes_cap: float = 0.45


@dataclass(frozen=True, slots=True)
class Ramps:
    """Where each count-based signal starts (strength 0) and saturates (strength 1)."""

    device_accounts_start: float = 2
    device_accounts_full: float = 20
    # A stack-only device key (no client device id) is shared by every user of the same
    # browser build or SDK; its sharing signal counts this much of a device id's.
    stack_only_factor: float = 0.3
    prefix_accounts_start: float = 20
    prefix_accounts_full: float = 200
    ips_start: float = 8
    ips_full: float = 32
    asns_start: float = 3
    asns_full: float = 8
    countries_start: float = 2
    countries_full: float = 5
    devices_start: float = 3
    devices_full: float = 10
    velocity_1h_start: float = 120
    velocity_1h_full: float = 600
    new_account_hours: float = 24


@dataclass(frozen=True, slots=True)
class ClusterWeights:
    """Cluster signals' largest contributions to a cluster's risk (noisy-OR)."""

    shared_devices: float = 0.7
    shared_templates: float = 0.6
    anonymized: float = 0.4
    new_accounts: float = 0.3
    created_together: float = 0.4
    synchronized: float = 0.4
    low_frequency_high_volume: float = 0.3


@dataclass(frozen=True, slots=True)
class ClusterPolicy:
    """How cluster risk enters an account's score and the limit key."""

    # Each cluster reason adds ``weight × its weight × (0.5 + 0.5 × membership probability)``.
    weight: float = 0.9
    # From this cluster risk on, the limit key is the cluster and the cluster shares one budget
    # (for members placed with at least ``min_probability``).
    enforce_risk: float = 0.5
    # ... and members placed at least this surely (HDBSCAN's membership probability; below it
    # the cluster neither adds to the account's score nor becomes its limit key)
    min_probability: float = 0.5
    # The cluster's daily budget: this many times the average account's daily requests
    # (the seeds' "three times the average").
    limit_multiplier: float = 3.0
    # A cluster found risky stays risky this long across refits (same stable id) even if a
    # refit measures it lower, so enforcement on a fleet does not flap with its composition.
    hold_hours: float = 24.0
    # A request carrying an identifier that a risky cluster has (nearly) to itself (a
    # "beacon": its device pool, client stack, address, /24 or prompt template) counts as a
    # member with this membership probability until it is placed (0 turns beacons off).
    beacon_probability: float = 0.5
    weights: ClusterWeights = field(default_factory=ClusterWeights)


@dataclass(frozen=True, slots=True)
class FallbackPolicy:
    """The global guard: recommend the fallback model when the day's volume nears the peak."""

    peak_fraction: float = 0.8  # from this share of the historical daily peak on
    min_history_days: int = 3  # complete days of history before a peak means anything
    history_days: int = 90  # the peak is the busiest of this many past days


def _ttl_default() -> PerAction:
    return PerAction(allow=30, throttle=300, challenge=300, block=3600)


def _limit_default() -> PerAction:
    return PerAction(allow=60, throttle=10, challenge=5, block=0)


@dataclass(frozen=True, slots=True)
class Policy:
    version: str = "default-1"
    # Shadow mode: decide and record, but always answer ALLOW (the decision is in policy_action).
    shadow: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)
    weights: Weights = field(default_factory=Weights)
    ramps: Ramps = field(default_factory=Ramps)
    ttl_seconds: PerAction = field(default_factory=_ttl_default)
    # Suggested requests per minute for the limit key, by action.
    limit_per_minute: PerAction = field(default_factory=_limit_default)
    cluster: ClusterPolicy = field(default_factory=ClusterPolicy)
    fallback: FallbackPolicy = field(default_factory=FallbackPolicy)

    def action_for(self, score: float) -> Action:
        t = self.thresholds
        if score >= t.block:
            return Action.BLOCK
        if score >= t.challenge:
            return Action.CHALLENGE
        if score >= t.throttle:
            return Action.THROTTLE
        return Action.ALLOW

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policy:
        """Build a policy from parsed TOML; raises InvalidInput naming every bad key."""
        violations: list[FieldViolation] = []
        policy = _build(cls, cls(), data, "", violations)
        t = policy.thresholds
        if not 0 < t.throttle <= t.challenge <= t.block <= 1:
            violations.append(FieldViolation(
                "thresholds", "must satisfy 0 < throttle <= challenge <= block <= 1"))
        for name in (f.name for f in fields(Weights)):
            if not 0 <= getattr(policy.weights, name) <= 1:
                violations.append(FieldViolation(f"weights.{name}", "must be in [0, 1]"))
        for name in (f.name for f in fields(ClusterWeights)):
            if not 0 <= getattr(policy.cluster.weights, name) <= 1:
                violations.append(FieldViolation(f"cluster.weights.{name}", "must be in [0, 1]"))
        for name in ("weight", "enforce_risk", "min_probability", "beacon_probability"):
            if not 0 <= getattr(policy.cluster, name) <= 1:
                violations.append(FieldViolation(f"cluster.{name}", "must be in [0, 1]"))
        if violations:
            raise InvalidInput(violations)
        return policy


def _build(cls: type, default: Any, data: Mapping[str, Any], path: str,
           violations: list[FieldViolation]) -> Any:
    known = {f.name: f for f in fields(cls)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}{key}"
        if key not in known:
            violations.append(FieldViolation(where, "unknown policy key"))
            continue
        current = getattr(default, key)
        if hasattr(current, "__dataclass_fields__"):
            if not isinstance(value, Mapping):
                violations.append(FieldViolation(where, "must be a table"))
                continue
            changes[key] = _build(type(current), current, value, f"{where}.", violations)
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                violations.append(FieldViolation(where, "must be true or false"))
            else:
                changes[key] = value
        elif isinstance(current, int | float):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                violations.append(FieldViolation(where, "must be a non-negative number"))
            else:
                changes[key] = type(current)(value) if isinstance(current, float) else value
        elif isinstance(current, str):
            if not isinstance(value, str) or not value:
                violations.append(FieldViolation(where, "must be a non-empty string"))
            else:
                changes[key] = value
    return replace(default, **changes)
