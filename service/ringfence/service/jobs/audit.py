"""``ringfence report audit --month 2026-06``: the monthly usage and protection audit, as JSON
(for tooling) and self-contained HTML (for people).

It covers usage patterns (requests, accounts and tokens per day and by task), what was
flagged and enforced (the events' actions and reason codes), how long each account ran before
its first enforcement, the clusters of the latest published model with their evidence and
their members' activity in the month, and the analysts' labels. All event figures are SQL
aggregates run on the source's own engine (SQLite, DuckDB over Parquet, PostgreSQL).
"""

from __future__ import annotations

import datetime
import json
import logging
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringfence.service.core.model import Action, Label, LabelTarget, LabelValue, TaskCategory
from ringfence.service.jobs import JobError
from ringfence.service.jobs.sources import EventSource
from ringfence.service.jobs.window import Window, iso, month_window
from ringfence.service.settings import Settings

log = logging.getLogger(__name__)

Json = dict[str, Any]
_WHERE = "WHERE event_time >= ? AND event_time <= ?"


@dataclass(frozen=True, slots=True)
class AuditFiles:
    json_path: Path
    html_path: Path
    report: Json


def _day(d: int) -> str:
    return datetime.datetime.fromtimestamp(d * 86400, datetime.UTC).strftime("%Y-%m-%d")


def _name(enum: type[Action] | type[TaskCategory], value: int | None) -> str:
    try:
        return enum(int(value or 0)).name
    except ValueError:
        return f"UNKNOWN_{value}"


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def usage(source: EventSource, w: Window) -> Json:
    days: dict[int, Json] = {}
    for d, n, accounts, tin, tout in source.query(
            f"SELECT {{day}} AS d, count(*), count(DISTINCT account_id), sum(input_tokens), "
            f"sum(output_tokens) FROM {{events}} {_WHERE} GROUP BY d ORDER BY d",
            (w.since, w.until)):
        days[int(d)] = {"day": _day(int(d)), "requests": int(n), "accounts": int(accounts),
                        "input_tokens": int(tin or 0), "output_tokens": int(tout or 0),
                        "by_task": {}}
    by_task: Counter[str] = Counter()
    for d, task, n in source.query(
            f"SELECT {{day}} AS d, task, count(*) FROM {{events}} {_WHERE} GROUP BY d, task",
            (w.since, w.until)):
        name = _name(TaskCategory, task)
        days[int(d)]["by_task"][name] = int(n)
        by_task[name] += int(n)
    total, accounts = source.query(
        f"SELECT count(*), count(DISTINCT account_id) FROM {{events}} {_WHERE}",
        (w.since, w.until))[0]
    rows = [days[d] for d in sorted(days)]
    peak = max(rows, key=lambda r: r["requests"]) if rows else None
    return {"requests": int(total), "accounts": int(accounts), "active_days": len(rows),
            "requests_per_day": round(int(total) / len(rows), 1) if rows else 0.0,
            "peak_day": peak and {"day": peak["day"], "requests": peak["requests"]},
            "by_task": dict(by_task.most_common()), "days": rows}


def actions(source: EventSource, w: Window) -> Json:
    served: Counter[str] = Counter()
    decided: Counter[str] = Counter()
    shadowed = 0
    for action, policy_action, n in source.query(
            f"SELECT action, policy_action, count(*) FROM {{events}} {_WHERE} "
            "GROUP BY action, policy_action", (w.since, w.until)):
        served[_name(Action, action)] += int(n)
        decided[_name(Action, policy_action)] += int(n)
        if action != policy_action:
            shadowed += int(n)
    reasons: Counter[str] = Counter()
    enforced_reasons: Counter[str] = Counter()
    for codes, flagged, n in source.query(
            f"SELECT {{reasons}} AS r, CASE WHEN policy_action > 1 THEN 1 ELSE 0 END AS f, "
            f"count(*) FROM {{events}} {_WHERE} GROUP BY r, f", (w.since, w.until)):
        for code in (codes or "").split(","):
            if code:
                reasons[code] += int(n)
                if flagged:
                    enforced_reasons[code] += int(n)
    return {"served": dict(served.most_common()), "policy": dict(decided.most_common()),
            "shadow_mode_differences": shadowed, "reasons": dict(reasons.most_common()),
            "reasons_when_flagged": dict(enforced_reasons.most_common())}


def flagged_accounts(source: EventSource, w: Window) -> Json:
    """Accounts the policy flagged (THROTTLE or stricter) in the month; the delay from each
    account's first event in the log to its first flagged / enforced (served) decision."""
    in_month = {a: (int(n), float(risk or 0.0)) for a, n, risk in source.query(
        f"SELECT account_id, count(*), max(risk_score) FROM {{events}} {_WHERE} "
        "AND policy_action > 1 GROUP BY account_id", (w.since, w.until))}
    accounts: list[Json] = []
    if in_month:
        history = source.query(
            "SELECT account_id, min(event_time), "
            "min(CASE WHEN policy_action > 1 THEN event_time END), "
            "min(CASE WHEN action > 1 THEN event_time END), max(policy_action), count(*) "
            "FROM {events} WHERE event_time <= ? GROUP BY account_id "
            "HAVING max(policy_action) > 1", (w.until,))
        for account, first, flagged, enforced, worst, n in history:
            if account not in in_month:
                continue
            flagged_n, risk = in_month[account]
            accounts.append({
                "account_id": account, "first_seen": iso(first),
                "first_flagged": iso(flagged),
                "first_enforced": iso(enforced) if enforced is not None else None,
                "hours_to_flag": round((flagged - first) / 3600, 2),
                "hours_to_enforcement": (round((enforced - first) / 3600, 2)
                                         if enforced is not None else None),
                "first_flagged_in_month": flagged >= w.since,
                "worst_action": _name(Action, worst), "flagged_requests": flagged_n,
                "requests_before_month_end": int(n), "max_risk": round(risk, 4)})
    accounts.sort(key=lambda a: (a["first_flagged"], a["account_id"]))
    new = [a for a in accounts if a["first_flagged_in_month"]]
    to_flag = [a["hours_to_flag"] for a in new]
    to_enforce = [a["hours_to_enforcement"] for a in new if a["hours_to_enforcement"] is not None]
    return {
        "count": len(accounts), "first_flagged_in_month": len(new),
        "enforced": sum(1 for a in accounts if a["first_enforced"] is not None),
        "hours_to_flag": _spread(to_flag), "hours_to_enforcement": _spread(to_enforce),
        "accounts": accounts}


def _spread(values: Sequence[float]) -> Json:
    return {"accounts": len(values),
            "median": statistics.median(values) if values else None,
            "p90": _percentile(values, 0.9), "max": max(values) if values else None}


def clusters(source: EventSource, w: Window, settings: Settings, flagged: Json) -> Json:
    """Clusters of the latest published model whose risk reaches the enforcement threshold
    or that have members flagged this month, with their members' activity in the month."""
    from ringfence.service.adapters.model_store import ModelArtifactError, ModelStore
    from ringfence.service.core.cluster_profiles import assess_cluster
    from ringfence.service.jobs.recluster import job_key, model_dir
    from ringfence.service.jobs.reports import cluster_weights, policy_of

    try:
        found = ModelStore(model_dir(settings), job_key(settings)).load_latest()
    except (JobError, ModelArtifactError) as exc:
        return {"model_version": None, "note": f"no usable published model: {exc}",
                "flagged": []}
    if found is None:
        return {"model_version": None, "note": f"no model published in {model_dir(settings)}",
                "flagged": []}
    model, info = found
    policy = policy_of(settings)
    weights = cluster_weights(settings)
    active = {a: int(n) for a, n in source.query(
        f"SELECT account_id, count(*) FROM {{events}} {_WHERE} GROUP BY account_id",
        (w.since, w.until))}
    flagged_ids = {a["account_id"] for a in flagged["accounts"]}
    by_cluster: dict[str, list[str]] = {}
    for account, assignment in model.members.items():
        by_cluster.setdefault(assignment.cluster_id, []).append(account)
    out = []
    for cid, profile in model.clusters.items():
        assessment = assess_cluster(weights, profile)
        members = by_cluster.get(cid, [])
        hit = sum(1 for m in members if m in flagged_ids)
        if assessment.risk < policy.cluster.enforce_risk and not hit:
            continue
        out.append({
            "cluster_id": cid, "size": profile.size, "risk": round(assessment.risk, 4),
            "enforced_by_policy": assessment.risk >= policy.cluster.enforce_risk,
            "members_active_in_month": sum(1 for m in members if m in active),
            "members_flagged_in_month": hit,
            "requests_in_month": sum(active.get(m, 0) for m in members),
            "lineage": list(profile.lineage),
            "reasons": [{"code": r.code, "weight": r.weight, "message": r.message}
                        for r in assessment.reasons]})
    out.sort(key=lambda c: (-c["risk"], -c["size"], c["cluster_id"]))
    return {"model_version": info.version, "model_fitted_at": iso(info.created_at),
            "clusters_in_model": len(model.clusters), "flagged": out}


def load_labels(settings: Settings) -> tuple[list[Label], str]:
    if settings.label_store == "postgres":
        from ringfence.service.adapters.postgres_labels import PostgresLabelStore
        from ringfence.service.core.errors import NotReady

        try:
            dsn = settings.postgres_dsn.get_secret_value() if settings.postgres_dsn else ""
            return PostgresLabelStore(dsn, schema=settings.postgres_schema).all(), ""
        except NotReady as exc:
            return [], str(exc)
    path = settings.data_dir / "state.db"
    if not path.exists():
        return [], f"{path} does not exist"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT target, target_id, value, created_at, author, note "
                                "FROM labels ORDER BY id").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [], f"cannot read labels from {path}: {exc}"
    return [Label(LabelTarget(t), tid, LabelValue(v), at, author, note)
            for t, tid, v, at, author, note in rows], ""


def labels(settings: Settings, w: Window) -> Json:
    found, note = load_labels(settings)
    totals: Counter[str] = Counter(f"{lb.target.name}:{lb.value.name}" for lb in found)
    month = [{"target": lb.target.name, "target_id": lb.target_id, "value": lb.value.name,
              "created_at": iso(lb.created_at), "author": lb.author, "note": lb.note}
             for lb in found if w.since <= lb.created_at <= w.until]
    return {"total": len(found), "by_kind": dict(totals.most_common()),
            "in_month": month, **({"note": note} if note else {})}


def audit(source: EventSource, month: str, settings: Settings) -> Json:
    w = month_window(month)
    report: Json = {"month": month, "since": iso(w.since), "until": iso(w.until),
                    "source": source.name, "generated_at": iso(time.time())}
    report["usage"] = usage(source, w)
    if not report["usage"]["requests"]:
        raise JobError(f"no events in {month} in {source.name}")
    report["actions"] = actions(source, w)
    report["flagged_accounts"] = flagged_accounts(source, w)
    report["clusters"] = clusters(source, w, settings, report["flagged_accounts"])
    report["labels"] = labels(settings, w)
    return report


def write_audit(report: Json, json_path: Path, html_path: Path) -> AuditFiles:
    from ringfence.service.jobs.audit_html import render
    from ringfence.service.jobs.files import write_atomic

    try:
        write_atomic(json_path, json.dumps(report, indent=2).encode())
        write_atomic(html_path, render(report).encode())
    except OSError as exc:
        raise JobError(f"cannot write the audit report: {exc}") from None
    return AuditFiles(json_path, html_path, report)
