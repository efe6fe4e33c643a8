"""Domain values to and from JSON for storage (decisions are kept per account)."""

from __future__ import annotations

import json
import math
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

_SEPARATORS = (",", ":")
_encode = json.JSONEncoder(separators=_SEPARATORS).encode


def _fields(d: Decision) -> list[tuple[str, Any]]:
    return [
        ("risk_score", d.risk_score),
        ("action", int(d.action)),
        ("policy_action", int(d.policy_action)),
        ("shadow", d.shadow),
        ("route_to_fallback", d.route_to_fallback),
        ("limit_key", d.limit_key),
        ("limit_scope", int(d.limit_scope)),
        ("limit", [d.suggested_limit.requests_per_unit, int(d.suggested_limit.unit)]),
        ("ttl", d.ttl_seconds),
        ("reasons", [[r.code, r.weight, r.message] for r in d.reasons]),
        ("policy_version", d.policy_version),
        ("decided_at", d.decided_at),
        ("model_version", d.model_version),
        ("degraded", d.degraded),
        ("cluster", [d.cluster.cluster_id, d.cluster.size] if d.cluster else None),
    ]


def decision_to_json(d: Decision) -> str:
    return json.dumps(dict(_fields(d)), separators=_SEPARATORS)


def decision_json_parts(d: Decision) -> tuple[str, str, str]:
    """``decision_to_json(d)`` cut around its limit key and its time: for any decision ``e``
    equal to ``d`` but in those two fields, ``decision_to_json(e) == head + json_string(
    e.limit_key) + mid + json_number(e.decided_at) + tail`` (see ``join_decision_json``).
    Many accounts share every other field, so the parts are computed once for all of them."""
    out: list[list[str]] = [[], [], []]
    part = 0
    for name, value in _fields(d):
        key = f"{_encode(name)}:"
        if name == "limit_key" or name == "decided_at":
            out[part].append(key)
            part += 1
        else:
            out[part].append(f"{key}{_encode(value)},")
    head, mid, tail = ("".join(p) for p in out)
    # Items are comma-separated: each value cut out is followed by its comma.
    return "{" + head, "," + mid, "," + tail[:-1] + "}"


def join_decision_json(parts: tuple[str, str, str], limit_key: str, decided_at: float) -> str:
    """The JSON of a decision from ``decision_json_parts`` and its own two fields."""
    head, mid, tail = parts
    number = (
        repr(decided_at)
        if type(decided_at) is float and math.isfinite(decided_at)
        else _encode(decided_at)
    )
    return f"{head}{_encode(limit_key)}{mid}{number}{tail}"


def decision_from_json(text: str) -> Decision:
    x = json.loads(text)
    return Decision(
        risk_score=x["risk_score"],
        action=Action(x["action"]),
        policy_action=Action(x["policy_action"]),
        shadow=x["shadow"],
        route_to_fallback=x["route_to_fallback"],
        limit_key=x["limit_key"],
        limit_scope=LimitScope(x["limit_scope"]),
        suggested_limit=Limit(x["limit"][0], LimitUnit(x["limit"][1])),
        ttl_seconds=x["ttl"],
        reasons=tuple(Reason(*r) for r in x["reasons"]),
        policy_version=x["policy_version"],
        decided_at=x["decided_at"],
        model_version=x["model_version"],
        degraded=x["degraded"],
        cluster=ClusterRef(*x["cluster"]) if x["cluster"] else None,
    )
