"""Frozen values of the domain: what a request says, what we learn about it, what we decide."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TaskCategory(enum.IntEnum):
    """Kind of work a request asks for (numbers match the wire enum)."""

    UNSPECIFIED = 0
    CHAT = 1
    CODE = 2
    REASONING = 3
    EMBEDDING = 4
    OTHER = 5


class Action(enum.IntEnum):
    """What the rate limiter should do, mildest first (numbers match the wire enum)."""

    ALLOW = 1
    THROTTLE = 2
    CHALLENGE = 3
    BLOCK = 4


class LimitScope(enum.IntEnum):
    ACCOUNT = 1
    CLUSTER = 2


class LimitUnit(enum.IntEnum):
    SECOND = 1
    MINUTE = 2
    HOUR = 3
    DAY = 4


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The client's device and stack fingerprint, as sent (validated, not yet canonical)."""

    ja4: str = ""
    ja3: str = ""
    user_agent: str = ""
    header_names: tuple[str, ...] = ()
    sdk_name: str = ""
    sdk_version: str = ""
    device_id: str = ""
    accept_language: str = ""
    extra_fingerprints: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The request itself, without content. ``event_time`` is epoch seconds."""

    event_time: float
    endpoint: str = ""
    model: str = ""
    task: TaskCategory = TaskCategory.UNSPECIFIED
    input_tokens: int = 0
    output_tokens: int = 0
    content_signature: int | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One validated scoring request."""

    account_id: str
    client_ip: IpAddress
    context: RequestContext
    fingerprint: Fingerprint = Fingerprint()
    api_key_id: str = ""
    org_id: str = ""
    forwarded_for: tuple[IpAddress, ...] = ()
    account_created_at: float | None = None


@dataclass(frozen=True, slots=True)
class IpInfo:
    """What enrichment knows about an IP. ``prefix`` is the /24 (v4) or /64 (v6) network;
    ``wide_prefix`` is the /16 (v4) or /48 (v6) network."""

    version: int
    prefix: str
    wide_prefix: str
    asn: int | None = None
    as_org: str = ""
    country: str = ""
    city: str = ""
    isp: str = ""
    connection_type: str = ""
    is_hosting: bool = False
    is_vpn: bool = False
    is_public_proxy: bool = False
    is_residential_proxy: bool = False
    is_tor: bool = False
    is_anonymous: bool = False
    degraded: bool = False  # a configured database failed to answer for this lookup

    @property
    def anonymized(self) -> bool:
        """True for addresses that hide the real client (hosting, VPN, proxies, Tor)."""
        return (self.is_hosting or self.is_vpn or self.is_public_proxy
                or self.is_residential_proxy or self.is_tor or self.is_anonymous)


class ClientKind(enum.Enum):
    """What kind of software the fingerprint says the client is."""

    BROWSER = "browser"
    SCRIPT = "script"  # an HTTP library or command-line tool
    SDK = "sdk"  # a vendor SDK
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DeviceAnalysis:
    """A fingerprint made canonical: a stable device key plus what the parts say.

    ``device_key`` identifies the device (the client-supplied device id when present, else the
    whole stack); ``stack_key`` identifies the software stack alone (TLS + headers + UA family).
    Both are hex digests, never raw values. ``inconsistencies`` are reason codes.
    """

    device_key: str
    stack_key: str
    has_device_id: bool
    client_kind: ClientKind
    ua_family: str = ""
    ua_major: str = ""
    os_family: str = ""
    inconsistencies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reason:
    """A stable code, its contribution to the score in [0, 1], and a short human text."""

    code: str
    weight: float
    message: str


@dataclass(frozen=True, slots=True)
class Limit:
    requests_per_unit: int
    unit: LimitUnit


@dataclass(frozen=True, slots=True)
class ClusterRef:
    cluster_id: str
    size: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request."""

    risk_score: float
    action: Action
    policy_action: Action
    shadow: bool
    route_to_fallback: bool
    limit_key: str
    limit_scope: LimitScope
    suggested_limit: Limit
    ttl_seconds: float
    reasons: tuple[Reason, ...]
    policy_version: str
    decided_at: float
    model_version: str = ""
    cluster: ClusterRef | None = None
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class WindowCounts:
    last_5m: int
    last_1h: int
    last_24h: int


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """An account's live profile as an analyst sees it: counts only, no raw identifiers."""

    account_id: str
    first_seen: float
    last_seen: float
    total_requests: int
    requests: WindowCounts
    distinct_ips: int
    distinct_prefixes: int
    distinct_asns: int
    distinct_countries: int
    distinct_devices: int
    task_mix: Mapping[TaskCategory, int]
    input_tokens: int
    output_tokens: int
    anonymized_share: float


@dataclass(frozen=True, slots=True)
class Linkage:
    """What the live profiles say about one request right after recording it (24 h windows)."""

    account_first_seen: float
    account_created_at: float | None
    account_requests: WindowCounts
    account_ips: int
    account_prefixes: int
    account_asns: int
    account_countries: int
    account_devices: int
    account_anonymized_share: float
    device_accounts: int
    device_first_seen: float
    prefix_accounts: int
    identity_changed: bool = False  # the request brought the account a new identifier
    degraded: bool = False  # answered from this process's local state (shared store down)


@dataclass(frozen=True, slots=True)
class ScoredEvent:
    """One scored request as the event log keeps it: identifiers as keyed hashes only."""

    event_time: float
    account_id: str
    api_key_id: str
    org_id: str
    ip_hash: str
    prefix_hash: str
    asn: int | None
    country: str
    anonymized: bool
    hosting: bool
    proxy: bool
    tor: bool
    device_key: str
    stack_key: str
    ja4_hash: str
    client_kind: str
    ua_family: str
    os_family: str
    sdk_name: str
    endpoint: str
    model: str
    task: int
    input_tokens: int
    output_tokens: int
    content_signature: int | None
    account_created_at: float | None
    risk_score: float
    action: int
    policy_action: int
    reasons: tuple[str, ...]
    policy_version: str


class LabelValue(enum.IntEnum):
    ABUSIVE = 1
    BENIGN = 2


class LabelTarget(enum.IntEnum):
    ACCOUNT = 1
    CLUSTER = 2


@dataclass(frozen=True, slots=True)
class Label:
    """An analyst's verdict on an account or a cluster."""

    target: LabelTarget
    target_id: str
    value: LabelValue
    created_at: float
    author: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class ClusterContext:
    """What the scorer knows about the cluster an account was placed in."""

    cluster_id: str
    size: int
    probability: float  # how surely the account belongs to it
    risk: float  # the cluster's own risk
    reasons: tuple[Reason, ...]  # the cluster's reasons, strongest first
    daily_budget: int  # requests per day the whole cluster is suggested
