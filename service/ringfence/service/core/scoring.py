"""Signals from the live profiles, IP enrichment and fingerprint analysis, combined into a
risk score with reasons, then mapped to an action, a limit key and a TTL by the policy.

Each signal has a strength in [0, 1] and a policy weight; contributions ``weight × strength``
combine by noisy-OR (``1 - Π(1 - c)``), so the score stays in [0, 1], grows with every signal
and no single weak signal can reach the block threshold alone. Attributes that describe the
account rather than link it to others (``ATTRIBUTE_CODES``) add at most
``Weights.attributes_cap`` together, below the throttle threshold: enforcing takes evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringfence.service.core import fingerprint as fp
from ringfence.service.core.model import (
    Action,
    ClusterContext,
    ClusterRef,
    Decision,
    DeviceAnalysis,
    IpInfo,
    LabelValue,
    Limit,
    LimitScope,
    LimitUnit,
    Linkage,
    Reason,
)
from ringfence.service.core.policy import Policy

MIN_REASON_WEIGHT = 0.01

# Reasons that describe the account rather than link it to others or show evasion; their
# combined contribution is capped by ``Weights.attributes_cap``.
ATTRIBUTE_CODES = frozenset(
    {"ACCOUNT_NEW", "IP_ANONYMIZED", "STACK_SHARED_BY_ACCOUNTS", "ACCOUNT_HIGH_VELOCITY"}
)

_FP_TEXT = {
    fp.FP_BROWSER_UA_SCRIPT_TLS: "browser user agent on a script library's TLS stack",
    fp.FP_BROWSER_UA_WITH_SDK: "browser user agent sent by an API SDK",
    fp.FP_HEADERS_CONTRADICT_UA: "client-hint headers contradict the claimed browser",
    fp.FP_MISSING_BROWSER_HEADERS: "headers every browser sends are missing",
    fp.FP_NO_USER_AGENT: "no user agent",
}


def ramp(x: float, start: float, full: float) -> float:
    """0 at or below ``start``, 1 at or above ``full``, linear between."""
    if x <= start:
        return 0.0
    if x >= full:
        return 1.0
    return (x - start) / (full - start)


@dataclass(frozen=True, slots=True)
class Assessment:
    score: float
    reasons: tuple[Reason, ...]


def assess(
    policy: Policy, link: Linkage, ip: IpInfo, device: DeviceAnalysis, now: float
) -> Assessment:
    """Score one request from its linkage, IP and device analysis."""
    w, r = policy.weights, policy.ramps
    found: list[Reason] = []

    # A reason's text is formatted only when the reason is kept (most signals are below the
    # threshold on most requests): ``text.format(*args)`` gives what an f-string would.
    def add(code: str, weight: float, strength: float, text: str, *args: object) -> None:
        c = weight * strength
        if c >= MIN_REASON_WEIGHT:
            found.append(Reason(code, round(c, 4), text.format(*args) if args else text))

    share = ramp(link.device_accounts, r.device_accounts_start, r.device_accounts_full)
    if device.has_device_id:
        add(
            "DEVICE_SHARED_BY_ACCOUNTS",
            w.device_shared,
            share,
            "device id used by {} accounts in 24 h",
            link.device_accounts,
        )
    else:
        add(
            "STACK_SHARED_BY_ACCOUNTS",
            w.device_shared * r.stack_only_factor,
            share,
            "client stack (TLS, headers, user agent) used by {} accounts in 24 h",
            link.device_accounts,
        )
    add(
        "PREFIX_SHARED_BY_ACCOUNTS",
        w.prefix_shared,
        ramp(link.prefix_accounts, r.prefix_accounts_start, r.prefix_accounts_full),
        "network prefix used by {} accounts in 24 h",
        link.prefix_accounts,
    )
    add(
        "ACCOUNT_MANY_IPS",
        w.account_many_ips,
        ramp(link.account_ips, r.ips_start, r.ips_full),
        "account used {} IP addresses in 24 h",
        link.account_ips,
    )
    add(
        "ACCOUNT_MANY_ASNS",
        w.account_many_asns,
        ramp(link.account_asns, r.asns_start, r.asns_full),
        "account used {} networks (ASNs) in 24 h",
        link.account_asns,
    )
    add(
        "ACCOUNT_MANY_COUNTRIES",
        w.account_many_countries,
        ramp(link.account_countries, r.countries_start, r.countries_full),
        "account connected from {} countries in 24 h",
        link.account_countries,
    )
    add(
        "ACCOUNT_MANY_DEVICES",
        w.account_many_devices,
        ramp(link.account_devices, r.devices_start, r.devices_full),
        "account used {} devices in 24 h",
        link.account_devices,
    )
    last_1h = link.account_requests.last_1h
    add(
        "ACCOUNT_HIGH_VELOCITY",
        w.account_velocity,
        ramp(last_1h, r.velocity_1h_start, r.velocity_1h_full),
        "{} requests in the last hour",
        last_1h,
    )
    if ip.is_tor:
        add("IP_TOR_EXIT", w.tor_exit, 1.0, "request from a Tor exit node")
    elif ip.anonymized:
        kinds = [
            name
            for name, flag in (
                ("hosting", ip.is_hosting),
                ("VPN", ip.is_vpn),
                ("public proxy", ip.is_public_proxy),
                ("residential proxy", ip.is_residential_proxy),
            )
            if flag
        ] or ["anonymizer"]
        # The account's history matters: one request via a VPN is weaker than all of them.
        add(
            "IP_ANONYMIZED",
            w.anonymized_ip,
            max(0.5, link.account_anonymized_share),
            "request from a {} address",
            "/".join(kinds),
        )
    created = (
        link.account_created_at if link.account_created_at is not None else link.account_first_seen
    )
    age_hours = max(0.0, now - created) / 3600
    if age_hours < r.new_account_hours:
        add(
            "ACCOUNT_NEW",
            w.new_account,
            1 - age_hours / r.new_account_hours,
            "account is {:.1f} h old",
            age_hours,
        )
    for code in device.inconsistencies:
        add(code, w.fingerprint_inconsistent, 1.0, _FP_TEXT.get(code, code))

    return _combine(found, w.attributes_cap)


def _combine(reasons: list[Reason], attributes_cap: float) -> Assessment:
    """Noisy-OR of the reasons' weights, with the attributes' part capped."""
    keep_evidence = keep_attributes = 1.0
    for reason in reasons:
        if reason.code in ATTRIBUTE_CODES:
            keep_attributes *= 1 - reason.weight
        else:
            keep_evidence *= 1 - reason.weight
    attributes = min(1 - keep_attributes, attributes_cap)
    score = 1 - keep_evidence * (1 - attributes)
    reasons.sort(key=lambda x: (-x.weight, x.code))
    return Assessment(score=round(min(1.0, max(0.0, score)), 6), reasons=tuple(reasons))


def with_cluster(
    policy: Policy,
    base: Assessment,
    cluster: ClusterContext | None,
    cluster_label: LabelValue | None,
) -> Assessment:
    """Add the account's cluster: each cluster reason counts ``cluster.weight × its weight ×
    membership``, where membership is ``0.5 + 0.5 × probability`` (HDBSCAN's probability is
    relative to the cluster's densest point, so a member at the fringe still counts half).
    A cluster labelled benign adds nothing, nor does a cluster below ``cluster.enforce_risk``
    (a group that is not risky as a whole — the customers of one VPN, an office — must not
    raise its members' scores with its milder signals), nor membership below
    ``cluster.min_probability`` (an account at the fringe of a fleet's cluster is as often an
    honest neighbour as a member)."""
    if (
        cluster is None
        or cluster_label is LabelValue.BENIGN
        or cluster.risk < policy.cluster.enforce_risk
        or cluster.probability < policy.cluster.min_probability
    ):
        return base
    scale = policy.cluster.weight * (0.5 + 0.5 * cluster.probability)
    extra = [
        Reason(
            r.code,
            round(r.weight * scale, 4),
            f"cluster {cluster.cluster_id} ({cluster.size} accounts): {r.message}",
        )
        for r in cluster.reasons
        if r.weight * scale >= MIN_REASON_WEIGHT
    ]
    if not extra:
        return base
    return _combine([*base.reasons, *extra], policy.weights.attributes_cap)


def decide(
    policy: Policy,
    account_id: str,
    assessment: Assessment,
    *,
    now: float,
    degraded: bool,
    route_to_fallback: bool = False,
    cluster: ClusterContext | None = None,
    model_version: str = "",
    account_label: LabelValue | None = None,
    cluster_label: LabelValue | None = None,
) -> Decision:
    """Map an assessment to the action, limit key, suggested limit and TTL.

    Labels override the score: an abusive account or cluster is blocked, a benign account is
    allowed. A risky cluster (risk ≥ ``cluster.enforce_risk``, membership ≥
    ``cluster.min_probability``, not labelled benign) becomes the limit key, with one daily
    budget for the whole cluster.
    """
    score, reasons = assessment.score, assessment.reasons
    policy_action = policy.action_for(score)
    if account_label is LabelValue.ABUSIVE or (
        cluster is not None and cluster_label is LabelValue.ABUSIVE
    ):
        target = "account" if account_label is LabelValue.ABUSIVE else "cluster"
        reasons = (
            Reason(
                f"LABEL_ABUSIVE_{target.upper()}", 1.0, f"an analyst labelled this {target} abusive"
            ),
            *reasons,
        )
        score, policy_action = 1.0, Action.BLOCK
    elif account_label is LabelValue.BENIGN:
        reasons = (
            Reason("LABEL_BENIGN_ACCOUNT", 0.0, "an analyst labelled this account benign"),
            *reasons,
        )
        policy_action = Action.ALLOW
    action = Action.ALLOW if policy.shadow else policy_action
    enforce_cluster = (
        cluster is not None
        and cluster_label is not LabelValue.BENIGN
        and account_label is not LabelValue.BENIGN
        and (
            cluster_label is LabelValue.ABUSIVE
            or (
                cluster.risk >= policy.cluster.enforce_risk
                and cluster.probability >= policy.cluster.min_probability
            )
        )
    )
    if enforce_cluster and cluster is not None:
        limit_key = f"cluster:{cluster.cluster_id}"
        scope = LimitScope.CLUSTER
        budget = 0 if action is Action.BLOCK else cluster.daily_budget
        limit = Limit(budget, LimitUnit.DAY)
    else:
        limit_key = f"account:{account_id}"
        scope = LimitScope.ACCOUNT
        limit = Limit(int(policy.limit_per_minute[action]), LimitUnit.MINUTE)
    return Decision(
        risk_score=score,
        action=action,
        policy_action=policy_action,
        shadow=policy.shadow,
        route_to_fallback=route_to_fallback,
        limit_key=limit_key,
        limit_scope=scope,
        suggested_limit=limit,
        ttl_seconds=policy.ttl_seconds[action],
        reasons=reasons,
        policy_version=policy.version,
        decided_at=now,
        model_version=model_version,
        cluster=ClusterRef(cluster.cluster_id, cluster.size) if cluster else None,
        degraded=degraded,
    )
