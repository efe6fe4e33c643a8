"""Gateway checks: one HTTP request as a gateway sees it → a decision → allow or deny.

Shared by the Envoy ext_authz servicer (api/envoy.py) and the HTTP ``/v1/check`` adapter for
nginx ``auth_request`` and Traefik ForwardAuth (api/http_check.py). Both only translate their
wire format to a ``GatewayRequest`` and a ``Verdict`` back; the header mapping, the client
address, fail-open behaviour and the x-ringfence-* answer live here (docs/envoy.md documents
them). Requests are validated by the same code as ``Score`` (a ScoreRequest is built from the
headers and passed through ``to_observation``).

Fail-open rules: a request that cannot be scored (no account, invalid input, an unexpected
error) is allowed with an ``x-ringfence-skipped`` or ``x-ringfence-error`` header, never
answered with an error status; only a configured ``missing_account = "deny"`` denies (400).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ringfence.service.api.convert import (
    MAX_EXTRA,
    MAX_FORWARDED,
    MAX_HEADERS,
    MAX_LEN,
    Limits,
    to_observation,
)
from ringfence.service.core.engine import RiskEngine
from ringfence.service.core.errors import InvalidInput
from ringfence.service.core.model import Action, Decision, IpAddress, Observation
from ringfence.service.core.ports import Clock
from ringfence.v1 import risk_pb2 as pb

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Request headers read (names lower-case). The account header is configurable.
DEFAULT_ACCOUNT_HEADER = "x-ringfence-account"
API_KEY_HEADER = "x-ringfence-api-key-id"
ORG_HEADER = "x-ringfence-org"
DEVICE_ID_HEADER = "x-ringfence-device-id"
SDK_HEADER = "x-ringfence-sdk"  # "name/version", e.g. "openai-python/1.40.0"
MODEL_HEADER = "x-ringfence-model"
TASK_HEADER = "x-ringfence-task"  # chat | code | reasoning | embedding | other
SIGNATURE_HEADER = "x-ringfence-content-signature"  # u64, decimal or 0x-hex
CREATED_HEADER = "x-ringfence-account-created"  # unix seconds
EXTRA_FINGERPRINT_PREFIX = "x-ringfence-fp-"  # x-ringfence-fp-<kind>: extra_fingerprints[kind]
JA4_HEADER = "x-ja4"
JA3_HEADER = "x-ja3"
FORWARDED_FOR_HEADER = "x-forwarded-for"
# Where the original path is when the check request is a sub-request (Traefik, nginx).
ORIGINAL_URI_HEADERS = ("x-forwarded-uri", "x-original-uri")

# Answer headers. On allow they are set (overwritten) on the request going upstream, and the
# ones not set are removed, so a client cannot forge them; on deny only x-ringfence-action is
# sent to the client (never the score or the limit key: no oracle, no cluster ids).
SCORE = "x-ringfence-score"
ACTION = "x-ringfence-action"
LIMIT_KEY = "x-ringfence-limit-key"
SHADOW = "x-ringfence-shadow"
POLICY_ACTION = "x-ringfence-policy-action"
FALLBACK = "x-ringfence-fallback"
SKIPPED = "x-ringfence-skipped"
ERROR = "x-ringfence-error"
ANSWER_HEADERS = (SCORE, ACTION, LIMIT_KEY, SHADOW, POLICY_ACTION, FALLBACK, SKIPPED, ERROR)

# Headers added by proxies rather than the client: left out of the header-order fingerprint.
_INFRA_PREFIXES = (":", "x-ringfence-", "x-envoy-", "x-forwarded-", "x-amzn-")
_INFRA_NAMES = frozenset({JA4_HEADER, JA3_HEADER, "x-real-ip", "x-request-id", "forwarded",
                          "via", "x-original-uri", "x-original-method", "traceparent",
                          "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
                          "x-b3-parentspanid", "x-b3-sampled", "x-cloud-trace-context"})

# What a request costs against a shared budget, by the enforced action: the ratelimit
# filter's hits_addend can charge risky requests more.
HITS_ADDEND = {Action.ALLOW: 1, Action.THROTTLE: 2, Action.CHALLENGE: 4, Action.BLOCK: 8}
_TASKS = {"chat": 1, "code": 2, "reasoning": 3, "embedding": 4, "other": 5}
# ScoreRequest field → the header (or attribute) it came from, for error messages.
_SOURCES = {
    "client_ip": "source address", "api_key_id": API_KEY_HEADER, "org_id": ORG_HEADER,
    "fingerprint.device_id": DEVICE_ID_HEADER, "context.model": MODEL_HEADER,
    "account_created_at": CREATED_HEADER, "context.endpoint": "path",
}


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """How gateway requests are read and answered (from settings ``gateway_*``)."""

    account_header: str = DEFAULT_ACCOUNT_HEADER
    # A request without an account cannot be scored: "allow" lets it through with
    # x-ringfence-skipped (Envoy's fail-open convention); "deny" answers 400.
    missing_account: Literal["allow", "deny"] = "allow"
    # HTTP status a CHALLENGE is denied with; 0 lets it through with x-ringfence-action.
    challenge_status: int = 403
    # Peers whose X-Forwarded-For is believed (the gateway, a load balancer in front of it).
    trusted_proxies: tuple[IpNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayRequest:
    """One HTTP request as the gateway saw it."""

    peer: str  # the address that connected to the gateway ("" if unknown)
    headers: tuple[tuple[str, str], ...]  # lower-case names, values, in the order received
    path: str = ""  # without the query string
    header_order_known: bool = True  # False when the transport lost the order (a map)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Allow (``status == 200``) or deny with ``status``.

    On allow, ``headers`` are set on the request going upstream and ``headers_to_remove``
    removed from it; on deny, ``headers`` and ``body`` go to the client. ``metadata`` is what
    the ratelimit filter and access logs can read (Envoy: dynamic metadata, key "ringfence").
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    body: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.status == 200


def parse_trusted_proxies(value: str) -> tuple[IpNetwork, ...]:
    """Comma-separated CIDRs or addresses → networks; raises ValueError naming a bad one."""
    networks = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _ip(value: str) -> IpAddress | None:
    """An address from a header or socket: tolerates "[v6]:port", "v4:port" and zones."""
    text = value.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def forwarded_chain(header: str) -> list[IpAddress]:
    """X-Forwarded-For entries that are addresses, client first (unparseable ones skipped).
    Only the nearest 64 hops are read: the client-written left end can be arbitrarily long."""
    parts = header.split(",")[-64:]
    return [ip for ip in (_ip(part) for part in parts) if ip is not None]


def client_address(peer: str, chain: list[IpAddress],
                   trusted: tuple[IpNetwork, ...]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy — then the nearest
    X-Forwarded-For entry (from the right) that is not a trusted proxy itself."""
    peer_ip = _ip(peer) if peer else None
    if peer_ip is None:
        return peer  # validation names it
    if not any(peer_ip in net for net in trusted):
        return str(peer_ip)
    client = peer_ip
    for hop in reversed(chain):
        client = hop
        if not any(hop in net for net in trusted):
            break
    return str(client)


def _clean(value: str, limit_name: str) -> str:
    """A client-controlled header value made acceptable: control characters become spaces
    and it is cut to the field's limit (so an odd header cannot make a request unscorable)."""
    text = "".join(" " if ord(c) < 32 or c == "\x7f" else c for c in value).strip()
    return text[:MAX_LEN[limit_name]]


def _header_names(request: GatewayRequest, account_header: str) -> list[str]:
    if not request.header_order_known:
        return []
    names = [name for name, _ in request.headers
             if name and name != account_header and name not in _INFRA_NAMES
             and not name.startswith(_INFRA_PREFIXES)]
    return [_clean(n, "header_name") for n in names[:MAX_HEADERS]]


class Gateway:
    """Scores gateway requests with the engine and answers allow/deny."""

    def __init__(self, engine: RiskEngine, clock: Clock, limits: Limits,
                 config: GatewayConfig,
                 on_decision: Callable[[Decision], None] | None = None) -> None:
        self._engine = engine
        self._clock = clock
        self._limits = limits
        self.config = config
        self._on_decision = on_decision  # observer hook (metrics)

    def check(self, request: GatewayRequest, *, transport: str) -> Verdict:
        """The verdict for one request; never raises (failures allow, see module doc)."""
        headers = _joined(request.headers)
        if not headers.get(self.config.account_header, "").strip():
            return self._no_account()
        try:
            decision = self._score(self.observation(request, headers))
        except InvalidInput as exc:
            sources = {**_SOURCES, "account_id": self.config.account_header}
            fields = sorted({sources.get(v.field, v.field) for v in exc.violations})
            log.warning("gateway request not scored: invalid input; allowed",
                        extra={"transport": transport, "fields": fields})
            return _fail_open(f"invalid_input: {','.join(fields)}", "invalid_input")
        except Exception:
            log.exception("gateway request not scored: unexpected error; allowed",
                          extra={"transport": transport})
            return _fail_open("internal", "internal")
        return verdict(decision, self.config)

    @property
    def shadow(self) -> bool:
        return self._engine.policy.shadow

    def score(self, request: GatewayRequest) -> Decision:
        """Score a request that carries an account (raises InvalidInput)."""
        return self._score(self.observation(request, _joined(request.headers)))

    def _score(self, obs: Observation) -> Decision:
        decision = self._engine.score(obs)
        if self._on_decision is not None:
            self._on_decision(decision)
        return decision

    def observation(self, request: GatewayRequest, headers: Mapping[str, str]) -> Observation:
        """Validate and convert the request's headers (raises InvalidInput).

        Only what the gateway itself vouches for can make a request invalid (the source
        address, the account, api key and org headers). Values a client can influence are
        cleaned and cut to size, and optional ones that do not parse are ignored, so that
        sending odd headers never turns scoring off (a fail-open would be an evasion).
        """
        c = self.config
        chain = forwarded_chain(headers.get(FORWARDED_FOR_HEADER, ""))
        sdk_name, _, sdk_version = headers.get(SDK_HEADER, "").strip().rpartition("/")
        if not sdk_name:  # no "/": the whole value is the name
            sdk_name, sdk_version = sdk_version, ""
        path = request.path
        for name in ORIGINAL_URI_HEADERS:
            if headers.get(name):
                path = headers[name]
                break
        extra = [(name.removeprefix(EXTRA_FINGERPRINT_PREFIX), value)
                 for name, value in headers.items()
                 if name.startswith(EXTRA_FINGERPRINT_PREFIX)]
        req = pb.ScoreRequest(
            account_id=headers[c.account_header].strip(),
            api_key_id=headers.get(API_KEY_HEADER, "").strip(),
            org_id=headers.get(ORG_HEADER, "").strip(),
            client_ip=client_address(request.peer, chain, c.trusted_proxies),
            forwarded_for=[str(ip) for ip in chain[-MAX_FORWARDED:]],
            fingerprint=pb.DeviceFingerprint(
                ja4=_clean(headers.get(JA4_HEADER, ""), "ja4"),
                ja3=_clean(headers.get(JA3_HEADER, ""), "ja3"),
                user_agent=_clean(headers.get("user-agent", ""), "user_agent"),
                accept_language=_clean(headers.get("accept-language", ""), "accept_language"),
                device_id=_clean(headers.get(DEVICE_ID_HEADER, ""), "device_id"),
                sdk_name=_clean(sdk_name, "sdk_name"),
                sdk_version=_clean(sdk_version, "sdk_version"),
                header_names=_header_names(request, c.account_header),
                extra_fingerprints={_clean(kind, "map_key"): _clean(value, "extra_value")
                                    for kind, value in extra[:MAX_EXTRA] if kind.strip()},
            ),
            context=pb.RequestContext(
                endpoint=_clean(path.partition("?")[0], "endpoint"),
                model=_clean(headers.get(MODEL_HEADER, ""), "model"),
                task_category=_TASKS.get(headers.get(TASK_HEADER, "").strip().lower(), 0),
            ),
        )
        signature = _unsigned64(headers.get(SIGNATURE_HEADER, ""))
        if signature is not None:
            req.context.content_signature = signature
        now = self._clock.now()
        created = _unix_seconds(headers.get(CREATED_HEADER, ""))
        if created is not None and created <= now + self._limits.max_clock_skew_s:
            req.account_created_at.FromNanoseconds(round(created * 1e9))
        return to_observation(req, now=now, limits=self._limits)

    def _no_account(self) -> Verdict:
        if self.config.missing_account == "deny":
            return Verdict(400, headers=(("content-type", "application/json"),
                                         (SKIPPED, "no_account")),
                           body=_json({"error": "account_required"}),
                           metadata={"skipped": "no_account"})
        return _allow(((SKIPPED, "no_account"),), {"skipped": "no_account"})


def _joined(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Header name → value, repeated headers joined with ", " (RFC 9110)."""
    out: dict[str, str] = {}
    for name, value in headers:
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _unsigned64(value: str) -> int | None:
    """A u64 in decimal or 0x-hex; None when absent or not one."""
    text = value.strip()
    try:
        number = int(text, 16) if text[:2].lower() == "0x" else int(text, 10)
    except ValueError:
        return None
    return number if 0 <= number < 2**64 else None


def _unix_seconds(value: str) -> float | None:
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and 0 <= seconds < 253402300799 else None


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def _allow(headers: tuple[tuple[str, str], ...], metadata: Mapping[str, Any]) -> Verdict:
    set_names = {name for name, _ in headers}
    return Verdict(200, headers=headers,
                   headers_to_remove=tuple(h for h in ANSWER_HEADERS if h not in set_names),
                   metadata=metadata)


def _fail_open(error_header: str, error: str) -> Verdict:
    return _allow(((ERROR, error_header),), {"error": error})


def verdict(d: Decision, config: GatewayConfig) -> Verdict:
    """A decision as an allow/deny answer with x-ringfence-* headers and metadata."""
    action = d.action.name.lower()
    metadata: dict[str, Any] = {
        "risk_score": round(d.risk_score, 6),
        "action": action,
        "policy_action": d.policy_action.name.lower(),
        "shadow": d.shadow,
        "limit_key": d.limit_key,
        "limit_scope": d.limit_scope.name.lower(),
        # The shape Envoy's rate_limits[].limit.dynamic_metadata override expects.
        "limit": {"requests_per_unit": d.suggested_limit.requests_per_unit,
                  "unit": d.suggested_limit.unit.name},
        "hits_addend": HITS_ADDEND[d.action],
        "decision_ttl_s": d.ttl_seconds,
        "route_to_fallback": d.route_to_fallback,
        "reasons": ",".join(r.code for r in d.reasons[:3]),
        "policy_version": d.policy_version,
        "degraded": d.degraded,
    }
    if d.cluster is not None:
        metadata["cluster_id"] = d.cluster.cluster_id
    if d.action is Action.BLOCK:
        retry = max(1, math.ceil(d.ttl_seconds))
        return Verdict(429, headers=(("content-type", "application/json"),
                                     ("retry-after", str(retry)), (ACTION, action)),
                       body=_json({"error": "rate_limited", "action": action,
                                   "retry_after_s": retry}),
                       metadata=metadata)
    if d.action is Action.CHALLENGE and config.challenge_status:
        return Verdict(config.challenge_status,
                       headers=(("content-type", "application/json"), (ACTION, action)),
                       body=_json({"error": "challenge_required", "action": action}),
                       metadata=metadata)
    headers = [(SCORE, f"{d.risk_score:.4f}"), (ACTION, action), (LIMIT_KEY, d.limit_key)]
    if d.shadow:
        headers += [(SHADOW, "1"), (POLICY_ACTION, d.policy_action.name.lower())]
    if d.route_to_fallback:
        headers.append((FALLBACK, "1"))
    return _allow(tuple(headers), metadata)
