"""Plain values the client takes and returns: frozen dataclasses and enums mirroring risk.proto.

Nothing here imports protobuf; `_convert` is the only module that knows the wire types.
Datetimes must be timezone-aware (values read from the service are UTC).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import grpc

_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1


class Action(enum.IntEnum):
    """What the rate limiter should do. Values are the wire numbers of `ringfence.v1.Action`."""

    UNSPECIFIED = 0
    ALLOW = 1
    THROTTLE = 2
    CHALLENGE = 3
    BLOCK = 4


class TaskCategory(enum.IntEnum):
    """Kind of work a request asks for. Values are the wire numbers of ringfence.v1.TaskCategory."""

    UNSPECIFIED = 0
    CHAT = 1
    CODE = 2
    REASONING = 3
    EMBEDDING = 4
    OTHER = 5


class LimitScope(enum.IntEnum):
    """What a limit key counts. Values are the wire numbers of `ringfence.v1.LimitScope`."""

    UNSPECIFIED = 0
    ACCOUNT = 1
    CLUSTER = 2


class LimitUnit(enum.IntEnum):
    """Time unit of a suggested limit. Values are the wire numbers of `ringfence.v1.Limit.Unit`."""

    UNSPECIFIED = 0
    SECOND = 1
    MINUTE = 2
    HOUR = 3
    DAY = 4


class OnUnavailable(enum.Enum):
    """What `score`/`score_batch` do when the service cannot answer within the deadline."""

    ALLOW = "allow"
    """Fail open: return an ALLOW `Decision` with `fail_open=True` (the default)."""
    RAISE = "raise"
    """Raise `ServiceUnavailableError`."""


def _check_aware(owner: str, name: str, value: datetime | None) -> None:
    # A naive datetime would be read as UTC on the wire, silently shifting local times.
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{owner}.{name}: must be a timezone-aware datetime")


def _check_range(owner: str, name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValueError(f"{owner}.{name}: must be in [0, {maximum}], got {value}")


# --- inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """Device and client-stack fingerprint. Every field is optional; more give sharper linkage."""

    ja4: str = ""
    """JA4 TLS client fingerprint, e.g. "t13d1516h2_8daaf6152771_02713d6af862"."""
    ja3: str = ""
    """JA3 TLS client fingerprint (hash or full string)."""
    user_agent: str = ""
    """The User-Agent header."""
    header_names: tuple[str, ...] = ()
    """HTTP header names in the order the client sent them. At most 64."""
    sdk_name: str = ""
    """Client SDK name, e.g. "openai-python"."""
    sdk_version: str = ""
    """Client SDK version, e.g. "1.40.0"."""
    device_id: str = ""
    """A device id supplied by the client or an SDK (strongest identity when present)."""
    accept_language: str = ""
    """The Accept-Language header."""
    extra_fingerprints: Mapping[str, str] = field(default_factory=dict)
    """Other TLS/HTTP2 fingerprints keyed by kind, e.g. "ja4h", "http2_akamai". At most 16."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Free-form attributes (part of the fingerprint's canonical key). At most 32."""

    def __post_init__(self) -> None:
        # Copy caller-owned containers so later mutation of theirs cannot change this value.
        object.__setattr__(self, "header_names", tuple(self.header_names))
        object.__setattr__(self, "extra_fingerprints", dict(self.extra_fingerprints))
        object.__setattr__(self, "attributes", dict(self.attributes))


@dataclass(frozen=True)
class RequestContext:
    """The request itself, without its content."""

    event_time: datetime | None = None
    """When the request arrived; None means "now" by the server's clock."""
    endpoint: str = ""
    """The API endpoint, e.g. "/v1/chat/completions"."""
    model: str = ""
    """The model asked for."""
    task_category: TaskCategory = TaskCategory.UNSPECIFIED
    """Kind of work the request asks for."""
    input_tokens: int = 0
    """Prompt tokens (uint32)."""
    output_tokens: int = 0
    """Completion tokens asked for or produced (uint32)."""
    content_signature: int | None = None
    """A 64-bit signature of the prompt's template (e.g. a simhash); prompt text is never sent."""

    def __post_init__(self) -> None:
        _check_aware("RequestContext", "event_time", self.event_time)
        _check_range("RequestContext", "input_tokens", self.input_tokens, _UINT32_MAX)
        _check_range("RequestContext", "output_tokens", self.output_tokens, _UINT32_MAX)
        if self.content_signature is not None:
            _check_range("RequestContext", "content_signature", self.content_signature, _UINT64_MAX)


@dataclass(frozen=True)
class ScoreRequest:
    """What an API gateway knows about one request."""

    account_id: str
    """The account the request is billed to. Required; at most 256 characters."""
    client_ip: str
    """The client's IP address as the gateway saw it (IPv4 or IPv6). Required."""
    api_key_id: str = ""
    """The API key used, if the account has several."""
    org_id: str = ""
    """The organisation the account belongs to."""
    forwarded_for: tuple[str, ...] = ()
    """X-Forwarded-For chain, nearest proxy last. At most 16 addresses."""
    fingerprint: Fingerprint = field(default_factory=Fingerprint)
    """What the client looks like on the wire."""
    context: RequestContext = field(default_factory=RequestContext)
    """What the request asks for."""
    account_created_at: datetime | None = None
    """When the account was created, if known (sharpens the "new account" signal)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "forwarded_for", tuple(self.forwarded_for))
        _check_aware("ScoreRequest", "account_created_at", self.account_created_at)


# --- outputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """A suggested request budget for a limit key."""

    requests_per_unit: int = 0
    """How many requests the key may make per `unit`."""
    unit: LimitUnit = LimitUnit.UNSPECIFIED
    """The time unit of the budget."""


@dataclass(frozen=True)
class Reason:
    """Why a score is what it is."""

    code: str
    """Stable machine-readable code, e.g. "DEVICE_SHARED_BY_ACCOUNTS"."""
    weight: float = 0.0
    """This reason's contribution to the risk score, in [0, 1]."""
    message: str = ""
    """A short human-readable explanation."""


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster (ring of linked accounts) an account belongs to."""

    cluster_id: str
    """Stable id of the cluster."""
    size: int = 0
    """Number of accounts in the cluster."""


@dataclass(frozen=True)
class Decision:
    """A risk decision for one request."""

    risk_score: float = 0.0
    """Risk in [0, 1]."""
    action: Action = Action.ALLOW
    """The action to enforce. In shadow mode always ALLOW."""
    policy_action: Action = Action.ALLOW
    """The action the policy chose; differs from `action` only in shadow mode."""
    shadow: bool = False
    """True when the policy runs in shadow mode (decide and record, enforce nothing)."""
    route_to_fallback: bool = False
    """True when the request should be served by the fallback model."""
    limit_key: str = ""
    """What the limiter should count this request against, e.g. "account:alice"."""
    limit_scope: LimitScope = LimitScope.UNSPECIFIED
    """What `limit_key` counts: one account or a whole cluster."""
    suggested_limit: Limit = field(default_factory=Limit)
    """The budget the policy suggests for `limit_key`."""
    decision_ttl: timedelta = timedelta(0)
    """How long an enforcement point may cache this decision."""
    reasons: tuple[Reason, ...] = ()
    """Reasons, strongest first."""
    cluster: ClusterInfo | None = None
    """The account's cluster; None until clustering runs or when the account is in none."""
    model_version: str = ""
    """Version of the model that scored the request."""
    policy_version: str = ""
    """Version of the policy that chose the action."""
    degraded: bool = False
    """True when some input was unavailable and the score used less (always True if fail_open)."""
    decided_at: datetime | None = None
    """When the decision was made."""
    fail_open: bool = False
    """True only when the client made this decision itself because the service was unavailable.

    Never sent on the wire.
    """

    def __post_init__(self) -> None:
        object.__setattr__(self, "reasons", tuple(self.reasons))
        _check_aware("Decision", "decided_at", self.decided_at)


@dataclass(frozen=True)
class FieldViolation:
    """A request field that failed validation."""

    field: str
    """Path of the field, e.g. "requests[3].fingerprint.user_agent"."""
    description: str
    """What was wrong with it."""


@dataclass(frozen=True)
class ItemError:
    """The error of one `score_batch` item; the other items are unaffected."""

    code: grpc.StatusCode
    """The status code, e.g. `grpc.StatusCode.INVALID_ARGUMENT`."""
    message: str = ""
    """A human-readable description."""
    field_violations: tuple[FieldViolation, ...] = ()
    """The fields that failed validation, if any."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "field_violations", tuple(self.field_violations))


@dataclass(frozen=True)
class WindowCounts:
    """Request counts over sliding windows (bucketed, so a window may cover one bucket less)."""

    last_5m: int = 0
    """Requests in the last 5 minutes."""
    last_1h: int = 0
    """Requests in the last hour."""
    last_24h: int = 0
    """Requests in the last 24 hours."""


@dataclass(frozen=True)
class TaskCount:
    """How many requests of one task category an account made."""

    task_category: TaskCategory
    """The kind of work."""
    requests: int = 0
    """How many requests asked for it."""


@dataclass(frozen=True)
class AccountProfile:
    """An account's live profile. Raw IPs and device ids are never returned, only counts."""

    account_id: str
    """The account."""
    first_seen: datetime | None = None
    """When the account was first seen."""
    last_seen: datetime | None = None
    """When the account was last seen."""
    total_requests: int = 0
    """All requests ever scored for the account."""
    requests: WindowCounts = field(default_factory=WindowCounts)
    """Recent request counts."""
    distinct_ips: int = 0
    """Distinct IP addresses in the last 24 h."""
    distinct_prefixes: int = 0
    """Distinct network prefixes in the last 24 h."""
    distinct_asns: int = 0
    """Distinct autonomous systems in the last 24 h."""
    distinct_countries: int = 0
    """Distinct countries in the last 24 h."""
    distinct_devices: int = 0
    """Distinct devices in the last 24 h."""
    task_mix: tuple[TaskCount, ...] = ()
    """Requests per task category."""
    input_tokens: int = 0
    """Input tokens over the profile's lifetime."""
    output_tokens: int = 0
    """Output tokens over the profile's lifetime."""
    anonymized_share: float = 0.0
    """Share of requests from hosting, VPN, proxy or Tor addresses, in [0, 1]."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "task_mix", tuple(self.task_mix))
        _check_aware("AccountProfile", "first_seen", self.first_seen)
        _check_aware("AccountProfile", "last_seen", self.last_seen)


@dataclass(frozen=True)
class AccountInfo:
    """What `get_account` returns."""

    profile: AccountProfile
    """The account's live profile."""
    last_decision: Decision | None = None
    """The last decision made for the account; None if none is stored."""


@dataclass(frozen=True)
class ActiveDecision:
    """A decision an enforcement point may apply by itself until it expires.

    What `DecisionCache.lookup` returns, as the service's `StreamDecisions` sent it.
    """

    limit_key: str
    """The key the limiter counts against, as in `Decision.limit_key`: "account:<id>" or
    "cluster:<id>". One active decision per key."""
    action: Action
    """The action to enforce (THROTTLE or stricter)."""
    scope: LimitScope = LimitScope.UNSPECIFIED
    """What `limit_key` counts: one account or a whole cluster."""
    subject_id: str = ""
    """The account id or cluster id alone (`limit_key` without its scope prefix)."""
    risk_score: float = 0.0
    """Risk in [0, 1] of the decision that set or last extended this one."""
    suggested_limit: Limit = field(default_factory=Limit)
    """The budget the policy suggests for `limit_key`."""
    ttl: timedelta = timedelta(0)
    """Time the decision had left when the service sent it; a cache drops it this long after
    receiving it."""
    expires_at: datetime | None = None
    """When the decision expires, by the service's clock."""
    decided_at: datetime | None = None
    """When the decision was made."""
    reason_codes: tuple[str, ...] = ()
    """Reason codes, strongest first (the messages come with `Client.score` answers)."""
    model_version: str = ""
    """Version of the model that scored the request."""
    policy_version: str = ""
    """Version of the policy that chose the action."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason_codes", tuple(self.reason_codes))
        _check_aware("ActiveDecision", "expires_at", self.expires_at)
        _check_aware("ActiveDecision", "decided_at", self.decided_at)
