"""Domain values to and from JSON for storage (decisions are kept per account)."""

from __future__ import annotations

import json
from typing import Any

from ringfence.service.core.model import (
    Action,
    ClusterRef,
    Decision,
    Limit,
    LimitScope,
    LimitUnit,
    Reason,
)


def decision_to_json(d: Decision) -> str:
    data: dict[str, Any] = {
        "risk_score": d.risk_score, "action": int(d.action),
        "policy_action": int(d.policy_action), "shadow": d.shadow,
        "route_to_fallback": d.route_to_fallback, "limit_key": d.limit_key,
        "limit_scope": int(d.limit_scope),
        "limit": [d.suggested_limit.requests_per_unit, int(d.suggested_limit.unit)],
        "ttl": d.ttl_seconds, "reasons": [[r.code, r.weight, r.message] for r in d.reasons],
        "policy_version": d.policy_version, "decided_at": d.decided_at,
        "model_version": d.model_version, "degraded": d.degraded,
        "cluster": [d.cluster.cluster_id, d.cluster.size] if d.cluster else None,
    }
    return json.dumps(data, separators=(",", ":"))


def decision_from_json(text: str) -> Decision:
    x = json.loads(text)
    return Decision(
        risk_score=x["risk_score"], action=Action(x["action"]),
        policy_action=Action(x["policy_action"]), shadow=x["shadow"],
        route_to_fallback=x["route_to_fallback"], limit_key=x["limit_key"],
        limit_scope=LimitScope(x["limit_scope"]),
        suggested_limit=Limit(x["limit"][0], LimitUnit(x["limit"][1])),
        ttl_seconds=x["ttl"], reasons=tuple(Reason(*r) for r in x["reasons"]),
        policy_version=x["policy_version"], decided_at=x["decided_at"],
        model_version=x["model_version"], degraded=x["degraded"],
        cluster=ClusterRef(*x["cluster"]) if x["cluster"] else None,
    )
