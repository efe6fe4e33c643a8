"""The audit report as one self-contained HTML page (inline SVG, no external assets), rendered
from the same JSON document the audit writes."""

from __future__ import annotations

import datetime
from html import escape
from typing import Any

from ringfence.service.jobs.html import Raw, items, line_chart, page, table

Json = dict[str, Any]
MAX_LISTED = 200


def _epoch_day(day: str) -> float:
    moment = datetime.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
    return moment.timestamp() / 86400


def _date(x: float) -> str:
    return datetime.datetime.fromtimestamp(x * 86400, datetime.UTC).strftime("%m-%d")


def _hours(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.1f} h"


def _usage(u: Json) -> list[str]:
    days = u["days"]
    x = [_epoch_day(d["day"]) for d in days]
    tasks = list(u["by_task"])
    charts = [
        line_chart("Requests per day", [("requests", list(zip(x, [d["requests"] for d in days],
                                                                strict=True)))],
                   x_label="day (UTC)", y_label="requests", x_format=_date),
        line_chart("Active accounts per day", [("accounts", list(zip(
            x, [d["accounts"] for d in days], strict=True)))], x_label="day (UTC)",
            y_label="accounts", x_format=_date),
        line_chart("Requests per day by task", [(t, [(xi, d["by_task"].get(t, 0)) for xi, d in
                                                     zip(x, days, strict=True)])
                                                for t in tasks],
                   x_label="day (UTC)", y_label="requests", x_format=_date),
    ]
    peak = u["peak_day"] or {"day": "n/a", "requests": 0}
    return [
        "<h2>Usage</h2>",
        table(["", ""], [("requests", u["requests"]), ("accounts", u["accounts"]),
                         ("days with traffic", u["active_days"]),
                         ("requests per day (mean)", u["requests_per_day"]),
                         ("peak day", f"{peak['day']} ({peak['requests']:,} requests)")]),
        table(["task", "requests", "share"],
              [(t, n, f"{n / max(u['requests'], 1):.1%}") for t, n in u["by_task"].items()]),
        Raw('<div class="charts">' + "".join(charts) + "</div>"),
        table(["day", "requests", "accounts", "input tokens", "output tokens"],
              [(d["day"], d["requests"], d["accounts"], d["input_tokens"], d["output_tokens"])
               for d in days]),
    ]


def _actions(a: Json) -> list[str]:
    names = sorted(set(a["served"]) | set(a["policy"]))
    return [
        "<h2>Actions taken</h2>",
        table(["action", "served (enforced)", "decided by the policy"],
              [(n, a["served"].get(n, 0), a["policy"].get(n, 0)) for n in names]),
        f'<p class="note">Requests whose served action differs from the policy\'s (shadow '
        f"mode): {a['shadow_mode_differences']:,}.</p>",
        table(["reason code", "requests", "of which flagged"],
              [(code, n, a["reasons_when_flagged"].get(code, 0))
               for code, n in a["reasons"].items()]),
    ]


def _flagged(f: Json) -> list[str]:
    listed = f["accounts"][:MAX_LISTED]
    more = len(f["accounts"]) - len(listed)
    return [
        "<h2>Accounts flagged and time to enforcement</h2>",
        table(["", ""], [
            ("accounts flagged (THROTTLE or stricter) this month", f["count"]),
            ("… first flagged this month", f["first_flagged_in_month"]),
            ("… enforced (a non-ALLOW action served)", f["enforced"]),
            ("first activity → first flag: median / p90 / max",
             " / ".join(_hours(f["hours_to_flag"][k]) for k in ("median", "p90", "max"))),
            ("first activity → first enforcement: median / p90 / max",
             " / ".join(_hours(f["hours_to_enforcement"][k]) for k in ("median", "p90",
                                                                       "max")))]),
        table(["account", "first seen", "first flagged", "first enforced", "hours to flag",
               "hours to enforcement", "worst action", "flagged requests", "max risk"],
              [(a["account_id"], a["first_seen"], a["first_flagged"],
                a["first_enforced"] or "never", _hours(a["hours_to_flag"]),
                _hours(a["hours_to_enforcement"]), a["worst_action"], a["flagged_requests"],
                a["max_risk"]) for a in listed]),
        f'<p class="note">{more:,} more in the JSON report.</p>' if more > 0 else "",
    ]


def _clusters(c: Json) -> list[str]:
    head = ["<h2>Clusters flagged</h2>"]
    if c.get("model_version") is None:
        return [*head, f'<p class="note">{escape(str(c.get("note", "no model")))}</p>']
    rows = [(x["cluster_id"], x["size"], x["risk"], "yes" if x["enforced_by_policy"] else "no",
             x["members_active_in_month"], x["members_flagged_in_month"],
             x["requests_in_month"],
             items([f"{r['code']} ({r['weight']:.2f}): {r['message']}" for r in x["reasons"]]
                   or ["no cluster-level signal"])) for x in c["flagged"]]
    return [*head, f'<p class="note">Model {escape(c["model_version"])} (fitted '
                   f'{c["model_fitted_at"]}, {c["clusters_in_model"]} clusters).</p>',
            table(["cluster", "size", "risk", "enforced", "members active", "members flagged",
                   "requests this month", "evidence"], rows)
            if rows else Raw("<p>No cluster reached the enforcement threshold.</p>")]


def _labels(lb: Json) -> list[str]:
    return ["<h2>Labels</h2>",
            f'<p class="note">{lb["total"]:,} labels in all'
            + (f" ({escape(lb['note'])})" if lb.get("note") else "") + ".</p>",
            table(["kind", "labels"], list(lb["by_kind"].items())),
            table(["created", "target", "id", "verdict", "author", "note"],
                  [(x["created_at"], x["target"], x["target_id"], x["value"], x["author"],
                    x["note"]) for x in lb["in_month"]]) if lb["in_month"]
            else Raw("<p>No labels were added this month.</p>")]


def render(report: Json) -> str:
    intro = Raw(f'<p class="note">{report["since"]} .. {report["until"]} · source '
                f"{escape(report['source'])} · generated {report['generated_at']}</p>")
    sections = [intro, *_usage(report["usage"]), *_actions(report["actions"]),
                *_flagged(report["flagged_accounts"]), *_clusters(report["clusters"]),
                *_labels(report["labels"])]
    return page(f"ringfence audit — {report['month']}", sections)
