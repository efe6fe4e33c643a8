"""Protobuf ⇄ domain conversion. Requests are validated here: every problem becomes a
FieldViolation naming the field, and all of a request's problems are reported at once.

A request is first checked in one pass (all its strings at once); only a request that fails
that pass goes through the field-by-field check that names each problem, so a valid request
pays for the validation once and a bad one gets the same answer as ever.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from ringfence.service.core.analyst import ClusterReport, Explanation, ModelInfo
from ringfence.service.core.errors import FieldViolation, InvalidInput
from ringfence.service.core.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from ringfence.service.core.model import (
    AccountSummary,
    Decision,
    Fingerprint,
    IpAddress,
    Label,
    LabelTarget,
    LabelValue,
    Observation,
    Reason,
    RequestContext,
    TaskCategory,
)
from ringfence.v1 import risk_pb2 as pb

_MIN_TIMESTAMP = -62135596800  # 0001-01-01, the protobuf Timestamp range
_MAX_TIMESTAMP = 253402300799  # 9999-12-31


@dataclass(frozen=True, slots=True)
class Limits:
    """Input bounds that come from settings."""

    max_clock_skew_s: float = 300.0
    max_event_age_s: float = 7 * 86400.0


# Longest accepted value per string field (characters).
MAX_LEN = {
    "account_id": 256,
    "api_key_id": 256,
    "org_id": 256,
    "client_ip": 64,
    "ja4": 128,
    "ja3": 1024,
    "user_agent": 1024,
    "header_name": 128,
    "sdk_name": 128,
    "sdk_version": 64,
    "device_id": 256,
    "accept_language": 256,
    "map_key": 64,
    "extra_value": 1024,
    "attribute_value": 256,
    "endpoint": 256,
    "model": 128,
}
MAX_FORWARDED = 16
MAX_HEADERS = 64
MAX_EXTRA = 16
MAX_ATTRIBUTES = 32


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TASKS = {int(t): t for t in TaskCategory}


@functools.lru_cache(maxsize=4096)
def _parse_ip(value: str) -> IpAddress:
    """An address (an IPv4-mapped IPv6 one as IPv4); raises ValueError. Cached: clients come
    back from the same addresses, and parsing is pure Python."""
    ip = ipaddress.ip_address(value)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class _Check:
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def bad(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def text(self, field: str, value: str, limit_name: str, *, required: bool = False) -> str:
        limit = MAX_LEN[limit_name]
        if required and not value.strip():
            self.bad(field, "is required")
        elif len(value) > limit:
            self.bad(field, f"is {len(value)} characters long; at most {limit} are allowed")
        elif _CONTROL.search(value):
            self.bad(field, "contains control characters")
        return value

    def ip(self, field: str, value: str, *, required: bool) -> IpAddress | None:
        if not value:
            if required:
                self.bad(field, "is required")
            return None
        if len(value) > MAX_LEN["client_ip"]:
            self.bad(field, "is not an IPv4 or IPv6 address")
            return None
        try:
            return _parse_ip(value)
        except ValueError:
            self.bad(field, "is not an IPv4 or IPv6 address")
            return None

    def mapping(
        self, field: str, value: Mapping[str, str], max_entries: int, value_limit: str
    ) -> dict[str, str]:
        if len(value) > max_entries:
            self.bad(field, f"has {len(value)} entries; at most {max_entries} are allowed")
            return {}
        for key, item in value.items():
            self.text(f'{field}["{key[:64]}"]', key, "map_key", required=True)
            self.text(f'{field}["{key[:64]}"]', item, value_limit)
        return dict(value)

    def time(
        self, field: str, ts: Timestamp, now: float, limits: Limits, *, check_age: bool
    ) -> float | None:
        if not _MIN_TIMESTAMP <= ts.seconds <= _MAX_TIMESTAMP or not 0 <= ts.nanos < 10**9:
            self.bad(field, "is not a valid timestamp")
            return None
        t = ts.seconds + ts.nanos / 1e9
        if t > now + limits.max_clock_skew_s:
            self.bad(
                field,
                f"is {t - now:.0f} s in the future; at most "
                f"{limits.max_clock_skew_s:.0f} s of clock skew is allowed",
            )
            return None
        if check_age and t < now - limits.max_event_age_s:
            self.bad(
                field,
                f"is {now - t:.0f} s in the past; events older than "
                f"{limits.max_event_age_s:.0f} s are not accepted",
            )
            return None
        return t


def to_observation(req: pb.ScoreRequest, *, now: float, limits: Limits) -> Observation:
    """Validate and convert a ScoreRequest; raises InvalidInput naming every bad field."""
    obs = _valid_observation(req, now, limits)
    if obs is not None:
        return obs
    return _checked_observation(req, now=now, limits=limits)


_L = MAX_LEN


def _valid_observation(req: pb.ScoreRequest, now: float, limits: Limits) -> Observation | None:
    """The Observation of a request that passes every check, from one pass over it; None for
    any request that might not (``_checked_observation`` then names the problems). Every test
    here is one that ``_checked_observation`` makes, so both accept the same requests and build
    the same Observation from them."""
    account_id, api_key_id, org_id = req.account_id, req.api_key_id, req.org_id
    f = req.fingerprint
    x = req.context
    ja4, ja3, user_agent = f.ja4, f.ja3, f.user_agent
    sdk_name, sdk_version, device_id = f.sdk_name, f.sdk_version, f.device_id
    accept_language, endpoint, model = f.accept_language, x.endpoint, x.model
    header_names = tuple(f.header_names)
    extra = dict(f.extra_fingerprints)
    attributes = dict(f.attributes)
    if not (
        len(account_id) <= _L["account_id"]
        and len(api_key_id) <= _L["api_key_id"]
        and len(org_id) <= _L["org_id"]
        and len(ja4) <= _L["ja4"]
        and len(ja3) <= _L["ja3"]
        and len(user_agent) <= _L["user_agent"]
        and len(sdk_name) <= _L["sdk_name"]
        and len(sdk_version) <= _L["sdk_version"]
        and len(device_id) <= _L["device_id"]
        and len(accept_language) <= _L["accept_language"]
        and len(endpoint) <= _L["endpoint"]
        and len(model) <= _L["model"]
        and len(header_names) <= MAX_HEADERS
        and len(extra) <= MAX_EXTRA
        and len(attributes) <= MAX_ATTRIBUTES
        and account_id.strip()
    ):
        return None
    strings = [
        account_id,
        api_key_id,
        org_id,
        ja4,
        ja3,
        user_agent,
        sdk_name,
        sdk_version,
        device_id,
        accept_language,
        endpoint,
        model,
    ]
    if header_names:
        if max(map(len, header_names)) > _L["header_name"] or "" in map(str.strip, header_names):
            return None
        strings.extend(header_names)
    for mapping, value_limit in ((extra, _L["extra_value"]), (attributes, _L["attribute_value"])):
        if mapping:
            if (
                max(map(len, mapping)) > _L["map_key"]
                or "" in map(str.strip, mapping)
                or max(map(len, mapping.values())) > value_limit
            ):
                return None
            strings.extend(mapping)
            strings.extend(mapping.values())
    if _CONTROL.search("".join(strings)):
        return None
    raw_ip = req.client_ip
    if not raw_ip or len(raw_ip) > _L["client_ip"]:
        return None
    try:
        client_ip = _parse_ip(raw_ip)
        forwarded: tuple[IpAddress, ...] = ()
        if req.forwarded_for:
            if len(req.forwarded_for) > MAX_FORWARDED:
                return None
            forwarded = tuple(
                _parse_ip(v) if v and len(v) <= _L["client_ip"] else _no_ip()
                for v in req.forwarded_for
            )
    except ValueError:
        return None
    task = _TASKS.get(x.task_category)
    if task is None:
        return None
    event_time: float | None = now
    created_at: float | None = None
    if x.HasField("event_time") or req.HasField("account_created_at"):
        c = _Check()
        if x.HasField("event_time"):
            event_time = c.time("context.event_time", x.event_time, now, limits, check_age=True)
        if req.HasField("account_created_at"):
            created_at = c.time(
                "account_created_at", req.account_created_at, now, limits, check_age=False
            )
        if c.violations or event_time is None:
            return None
    context = RequestContext(
        event_time=event_time,
        endpoint=endpoint,
        model=model,
        task=task,
        input_tokens=x.input_tokens,
        output_tokens=x.output_tokens,
        content_signature=x.content_signature if x.HasField("content_signature") else None,
    )
    fingerprint = Fingerprint(
        ja4=ja4,
        ja3=ja3,
        user_agent=user_agent,
        header_names=header_names,
        sdk_name=sdk_name,
        sdk_version=sdk_version,
        device_id=device_id,
        accept_language=accept_language,
        extra_fingerprints=extra,
        attributes=attributes,
    )
    return Observation(
        account_id=account_id,
        client_ip=client_ip,
        context=context,
        fingerprint=fingerprint,
        api_key_id=api_key_id,
        org_id=org_id,
        forwarded_for=forwarded,
        account_created_at=created_at,
    )


def _no_ip() -> IpAddress:
    raise ValueError("not an address")


def _checked_observation(req: pb.ScoreRequest, *, now: float, limits: Limits) -> Observation:
    """Check every field of a request and name each problem (see ``_valid_observation``)."""
    c = _Check()
    account_id = c.text("account_id", req.account_id, "account_id", required=True)
    api_key_id = c.text("api_key_id", req.api_key_id, "api_key_id")
    org_id = c.text("org_id", req.org_id, "org_id")
    client_ip = c.ip("client_ip", req.client_ip, required=True)
    forwarded: list[IpAddress] = []
    if len(req.forwarded_for) > MAX_FORWARDED:
        c.bad(
            "forwarded_for",
            f"has {len(req.forwarded_for)} addresses; at most {MAX_FORWARDED} are allowed",
        )
    else:
        for i, value in enumerate(req.forwarded_for):
            ip = c.ip(f"forwarded_for[{i}]", value, required=True)
            if ip is not None:
                forwarded.append(ip)

    f = req.fingerprint
    headers: tuple[str, ...] = ()
    if len(f.header_names) > MAX_HEADERS:
        c.bad(
            "fingerprint.header_names",
            f"has {len(f.header_names)} names; at most {MAX_HEADERS} are allowed",
        )
    else:
        headers = tuple(
            c.text(f"fingerprint.header_names[{i}]", h, "header_name", required=True)
            for i, h in enumerate(f.header_names)
        )
    fingerprint = Fingerprint(
        ja4=c.text("fingerprint.ja4", f.ja4, "ja4"),
        ja3=c.text("fingerprint.ja3", f.ja3, "ja3"),
        user_agent=c.text("fingerprint.user_agent", f.user_agent, "user_agent"),
        header_names=headers,
        sdk_name=c.text("fingerprint.sdk_name", f.sdk_name, "sdk_name"),
        sdk_version=c.text("fingerprint.sdk_version", f.sdk_version, "sdk_version"),
        device_id=c.text("fingerprint.device_id", f.device_id, "device_id"),
        accept_language=c.text("fingerprint.accept_language", f.accept_language, "accept_language"),
        extra_fingerprints=c.mapping(
            "fingerprint.extra_fingerprints", f.extra_fingerprints, MAX_EXTRA, "extra_value"
        ),
        attributes=c.mapping(
            "fingerprint.attributes", f.attributes, MAX_ATTRIBUTES, "attribute_value"
        ),
    )

    x = req.context
    event_time: float | None = now
    if x.HasField("event_time"):
        event_time = c.time("context.event_time", x.event_time, now, limits, check_age=True)
    task = TaskCategory.UNSPECIFIED
    if x.task_category in TaskCategory._value2member_map_:
        task = TaskCategory(x.task_category)
    else:
        c.bad("context.task_category", f"unknown value {x.task_category}")
    created_at = None
    if req.HasField("account_created_at"):
        created_at = c.time(
            "account_created_at", req.account_created_at, now, limits, check_age=False
        )
    context = RequestContext(
        event_time=now if event_time is None else event_time,
        endpoint=c.text("context.endpoint", x.endpoint, "endpoint"),
        model=c.text("context.model", x.model, "model"),
        task=task,
        input_tokens=x.input_tokens,
        output_tokens=x.output_tokens,
        content_signature=x.content_signature if x.HasField("content_signature") else None,
    )
    if c.violations:
        raise InvalidInput(c.violations)
    assert client_ip is not None  # guaranteed by the required check above
    return Observation(
        account_id=account_id,
        client_ip=client_ip,
        context=context,
        fingerprint=fingerprint,
        api_key_id=api_key_id,
        org_id=org_id,
        forwarded_for=tuple(forwarded),
        account_created_at=created_at,
    )


def _timestamp(t: float) -> Timestamp:
    ts = Timestamp()
    seconds = math.floor(t)
    ts.seconds = seconds
    ts.nanos = min(999_999_999, round((t - seconds) * 1e9))
    return ts


def to_score_response(d: Decision) -> pb.ScoreResponse:
    # Sub-messages are filled in place: building them apart and copying them in costs more.
    response = pb.ScoreResponse(
        risk_score=d.risk_score,
        action=d.action,
        policy_action=d.policy_action,
        shadow=d.shadow,
        route_to_fallback=d.route_to_fallback,
        limit_key=d.limit_key,
        limit_scope=d.limit_scope,
        model_version=d.model_version,
        policy_version=d.policy_version,
        degraded=d.degraded,
    )
    limit = response.suggested_limit
    limit.requests_per_unit = d.suggested_limit.requests_per_unit
    limit.unit = d.suggested_limit.unit
    add_reason = response.reasons.add
    for r in d.reasons:
        add_reason(code=r.code, weight=r.weight, message=r.message)
    t = d.decided_at
    seconds = math.floor(t)
    decided_at = response.decided_at
    decided_at.seconds = seconds
    decided_at.nanos = min(999_999_999, round((t - seconds) * 1e9))
    ttl_nanos = round(d.ttl_seconds * 1e9)
    if ttl_nanos >= 0:
        response.decision_ttl.seconds, response.decision_ttl.nanos = divmod(ttl_nanos, 10**9)
    else:
        response.decision_ttl.FromNanoseconds(ttl_nanos)
    if d.cluster is not None:
        response.cluster.cluster_id = d.cluster.cluster_id
        response.cluster.size = d.cluster.size
    return response


def to_account_profile(s: AccountSummary) -> pb.AccountProfile:
    return pb.AccountProfile(
        account_id=s.account_id,
        first_seen=_timestamp(s.first_seen),
        last_seen=_timestamp(s.last_seen),
        total_requests=s.total_requests,
        requests=pb.WindowCounts(
            last_5m=s.requests.last_5m, last_1h=s.requests.last_1h, last_24h=s.requests.last_24h
        ),
        distinct_ips=s.distinct_ips,
        distinct_prefixes=s.distinct_prefixes,
        distinct_asns=s.distinct_asns,
        distinct_countries=s.distinct_countries,
        distinct_devices=s.distinct_devices,
        task_mix=[
            pb.TaskCount(task_category=int(task), requests=n)
            for task, n in sorted(s.task_mix.items())
        ],
        input_tokens=s.input_tokens,
        output_tokens=s.output_tokens,
        anonymized_share=s.anonymized_share,
    )


def _reasons(reasons: tuple[Reason, ...]) -> list[pb.Reason]:
    return [pb.Reason(code=r.code, weight=r.weight, message=r.message) for r in reasons]


def to_cluster(r: ClusterReport) -> pb.Cluster:
    c = r.profile
    return pb.Cluster(
        cluster_id=c.cluster_id,
        size=c.size,
        risk=r.assessment.risk,
        reasons=_reasons(r.assessment.reasons),
        daily_volume=c.daily_volume,
        baseline_daily_volume=c.baseline_daily_volume,
        new_account_share=c.new_account_share,
        anonymized_share=c.anonymized_share,
        device_diversity=c.device_diversity,
        shared_device_share=c.shared_device_share,
        shared_template_share=c.shared_signature_share,
        timing_sync=c.timing_sync,
        timing_regularity=c.timing_regularity,
        fitted_at=_timestamp(c.fitted_at),
        lineage=list(c.lineage),
        label=int(r.label) if r.label is not None else 0,
        daily_budget=r.daily_budget,
        enforced=r.enforced,
    )


def to_explanation(e: Explanation) -> pb.ExplainAccountResponse:
    response = pb.ExplainAccountResponse(
        profile=to_account_profile(e.summary),
        features=[pb.Feature(name=n, value=v) for n, v in e.features],
        feature_schema_version=FEATURE_SCHEMA_VERSION,
        membership_probability=e.probability,
        nearest_members=[pb.Neighbour(account_id=a, distance=d) for a, d in e.nearest],
    )
    if e.cluster is not None:
        response.cluster.CopyFrom(to_cluster(e.cluster))
    if e.last_decision is not None:
        response.last_decision.CopyFrom(to_score_response(e.last_decision))
    return response


def to_model_info(m: ModelInfo) -> pb.GetModelInfoResponse:
    response = pb.GetModelInfoResponse(
        clustering_enabled=m.enabled,
        model_version=m.version,
        fit_seconds=m.fit_seconds,
        accounts=m.accounts,
        clusters=m.clusters,
        noise_accounts=m.noise_accounts,
        pending_accounts=m.pending,
        feature_schema_version=FEATURE_SCHEMA_VERSION,
        feature_names=list(FEATURE_NAMES),
    )
    if m.version:
        response.fitted_at.CopyFrom(_timestamp(m.fitted_at))
    if m.params is not None:
        response.min_cluster_size = m.params.min_cluster_size
        response.min_samples = m.params.min_samples
        response.window_days = m.params.window_days
    return response


def to_label(req: pb.SubmitLabelRequest, *, now: float) -> Label:
    """Validate a SubmitLabelRequest; raises InvalidInput naming every bad field."""
    c = _Check()
    which = req.WhichOneof("target")
    target_id = ""
    if which is None:
        c.bad("target", "give account_id or cluster_id")
    else:
        target_id = c.text(which, getattr(req, which), "account_id", required=True)
    if req.label not in (pb.LABEL_VALUE_ABUSIVE, pb.LABEL_VALUE_BENIGN):
        c.bad("label", "must be LABEL_VALUE_ABUSIVE or LABEL_VALUE_BENIGN")
    author = c.text("author", req.author, "account_id")
    note = c.text("note", req.note, "extra_value")
    if c.violations:
        raise InvalidInput(c.violations)
    target = LabelTarget.ACCOUNT if which == "account_id" else LabelTarget.CLUSTER
    return Label(target, target_id, LabelValue(req.label), now, author, note)
