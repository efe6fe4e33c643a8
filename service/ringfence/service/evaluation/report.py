"""The self-contained HTML report of an evaluation: ringfence and the baselines side by side,
the issue's targets, per-campaign and collateral tables, and inline SVG charts."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from html import escape
from typing import Any

from ringfence.service.evaluation.metrics import RINGFENCE, Json
from ringfence.service.evaluation.svg import (
    PALETTE,
    Marker,
    Series,
    histogram,
    line_chart,
    scatter,
)

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1180px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
.met{color:#1a7f37;font-weight:bold}.miss{color:#c62828;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:12px}.note{color:#555;font-size:.9em}
"""


def _pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def _hours(v: float | None) -> str:
    return "never" if v is None else f"{v:.2f} h"


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{escape(str(c))}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _side_by_side(systems: Json) -> str:
    names = list(systems)

    def row(label: str, get: Any) -> list[str]:
        return [escape(label), *(get(systems[n]) for n in names)]

    def worst(s: Json) -> str:
        w = s["collateral"]["worst_group"]
        if w is None:
            return "none"
        return (f"{escape(w['group'])}: {w['enforced']}/{w['accounts']} accounts, "
                f"{_pct(w['not_allowed_share'])} of requests")

    rows = [
        row("attack accounts enforced (recall)", lambda s: _pct(s["accounts"]["recall"])),
        row("precision", lambda s: _pct(s["accounts"]["precision"])),
        row("benign account FPR", lambda s: _pct(s["accounts"]["fpr"], 2)),
        row("leakage (attack requests allowed)", lambda s: _pct(s["requests"]["leakage"])),
        row("enforced within 6 h of first request",
            lambda s: _pct(s["time_to_enforce_h"]["within_6h_share"])),
        row("time to enforce, median", lambda s: _hours(s["time_to_enforce_h"]["median"])),
        row("time to enforce, p90", lambda s: _hours(s["time_to_enforce_h"]["p90"])),
        row("median among enforced accounts",
            lambda s: _hours(s["time_to_enforce_h"]["median_of_enforced"])),
        row("benign accounts enforced", lambda s: str(s["accounts"]["fp"])),
        row("benign requests not allowed",
            lambda s: f"{s['requests']['benign_not_allowed']} "
                      f"({_pct(s['requests']['benign_not_allowed_share'], 2)})"),
        row("worst-hit benign shared-IP group", worst),
        row("all accounts enforced (any label)",
            lambda s: f"{s['all']['accounts_enforced']} of {s['all']['accounts']}"),
        row("all requests not allowed (any label)",
            lambda s: f"{s['all']['requests_not_allowed']} of {s['all']['requests']}"),
    ]
    return _table(["metric", *names], rows)


def _targets(targets: list[Json]) -> str:
    rows = []
    for t in targets:
        v, bound = t["value"], t["bound"]
        hours = "(h)" in t["metric"]
        shown = "n/a" if v is None else (f"{v:.2f} h" if hours else _pct(v, 2))
        target = f"{t['op']} {bound:g} h" if hours else f"{t['op']} {100 * bound:g}%"
        verdict = ('<span class="met">met</span>' if t["met"]
                   else '<span class="miss">not met</span>')
        rows.append([escape(t["scope"]), escape(t["metric"]), escape(target), shown, verdict])
    return _table(["scope", "metric", "target", "ringfence", ""], rows)


def _campaigns(systems: Json) -> str:
    names = list(systems)
    campaigns = list(systems[RINGFENCE]["campaigns"])
    head = ["campaign", "accounts", *(f"{n}: recall / leakage / 50% / 90% enforced"
                                      for n in names)]
    rows = []
    for cid in campaigns:
        first = systems[RINGFENCE]["campaigns"][cid]
        cells = [escape(cid), str(first["accounts"])]
        for n in names:
            c = systems[n]["campaigns"][cid]
            cells.append(f"{_pct(c['recall'])} / {_pct(c['leakage'])} / "
                         f"{_hours(c['hours_to_50pct'])} / {_hours(c['hours_to_90pct'])}")
        rows.append(cells)
    return _table(head, rows)


def _segments(systems: Json) -> str:
    names = list(systems)
    keys = list(systems[RINGFENCE]["segments"])
    rows = [[escape(k), str(systems[RINGFENCE]["segments"][k]["accounts"]),
             *(_pct(systems[n]["segments"][k]["enforced_share"]) for n in names)] for k in keys]
    return _table(["label:segment", "accounts", *(f"{n} enforced" for n in names)], rows)


def _groups(system: Json) -> str:
    rows = [[escape(g["group"]), str(g["accounts"]), str(g["enforced"]),
             _pct(g["enforced_share"]), str(g["requests"]), _pct(g["not_allowed_share"], 2)]
            for g in system["collateral"]["groups"]]
    if not rows:
        return "<p>No benign shared-IP group in the input.</p>"
    return _table(["group", "accounts", "enforced", "share", "requests",
                   "requests not allowed"], rows)


def _charts(ev: Json) -> str:
    out = []
    tl = ev["timeline"]
    if tl:
        start = tl["start_hour"]
        seen = tl["attack_accounts_seen"]
        hours = list(range(len(seen)))
        series = [Series("attack accounts seen", list(zip(hours, seen, strict=True)), "#999",
                         dashed=True)]
        for i, (name, values) in enumerate(tl["attack_enforced"].items()):
            series.append(Series(f"enforced by {name}", list(zip(hours, values, strict=True)),
                                 PALETTE[i]))
        out.append(line_chart("Attack accounts enforced over time", series,
                              x_label=f"hours since {_when(start * 3600)}", y_label="accounts"))
        series = [Series(f"{name}", list(zip(hours, values, strict=True)), PALETTE[i])
                  for i, (name, values) in enumerate(tl["benign_enforced"].items())]
        out.append(line_chart("Benign accounts enforced over time (collateral)", series,
                              x_label="hours", y_label="accounts"))
    hist = ev["score_histograms"]
    for key, title in (("requests", "Risk score per request, by label"),
                       ("account_max", "Per-account maximum risk score, by label")):
        series = []
        for label, color in (("benign", "#1f77b4"), ("attack", "#d62728")):
            counts = hist[key].get(label)
            if counts:
                total = sum(counts) or 1
                series.append(Series(label, [(i, c / total) for i, c in enumerate(counts)],
                                     color))
        out.append(histogram(title, hist["edges"], series, x_label="risk score",
                             y_label="share of the label"))
    curves = ev["curves"]
    if curves.get("available"):
        markers = [Marker(f"{name} (baseline)", s["accounts"]["fpr"] or 0.0,
                          s["accounts"]["recall"] or 0.0, PALETTE[(i + 1) % len(PALETTE)])
                   for i, (name, s) in enumerate(ev["systems"].items()) if name != RINGFENCE]
        out.append(line_chart(
            f"ROC over per-account max score (AUC {curves['auc']:.3f})",
            [Series("ringfence", [(x, y) for x, y in curves["roc"]], PALETTE[0]),
             Series("chance", [(0, 0), (1, 1)], "#bbb", dashed=True)],
            x_label="benign accounts enforced (FPR)", y_label="attack accounts enforced (TPR)",
            x_range=(0, 1), y_range=(0, 1), markers=markers))
        out.append(line_chart(
            f"Precision-recall (AP {curves['average_precision']:.3f})",
            [Series("ringfence", [(x, y) for x, y in curves["pr"]], PALETTE[0])],
            x_label="recall", y_label="precision", x_range=(0, 1), y_range=(0, 1)))
    return f'<div class="charts">{"".join(out)}</div>'


def _clusters(ev: Json) -> str:
    c = ev["clusters"]
    if not c["available"]:
        return f"<p>Not available: {escape(c['reason'])}.</p>"
    rows = [["clusters", str(c["clusters"])], ["clustered accounts", str(c["clustered_accounts"])],
            ["ARI, attack accounts: cluster vs campaign", str(c["ari_attack_vs_campaign"])],
            ["purity of clusters holding attack accounts", _pct(c["purity_of_attack_clusters"])],
            ["benign accounts in attack-majority clusters", str(c["benign_in_attack_clusters"])]]
    return _table(["", "value"], rows)


def _map(ev: Json) -> str:
    m = ev["map"]
    if not m["available"]:
        return f"<p>Not available: {escape(m['reason'])}.</p>"
    return scatter("Accounts in the clustering space (2-D)",
                   [(p[0], p[1], p[2]) for p in m["points"]], x_label="x", y_label="y")


def _reasons(ev: Json) -> str:
    rows = []
    for label, counts in ev["reasons_when_enforced"].items():
        for code, n in counts.items():
            rows.append([escape(label), escape(code), str(n)])
    if not rows:
        return "<p>No request was enforced.</p>"
    return _table(["label", "reason code", "enforced requests carrying it"], rows)


def render_html(ev: Json, title: str = "ringfence evaluation") -> str:
    inp = ev["input"]
    systems = ev["systems"]
    return "".join([
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{inp['decisions']:,} decisions, {inp['accounts']:,} accounts "
        f"({inp['attack_accounts']:,} attack, {inp['benign_accounts']:,} benign, "
        f"{inp['unlabelled_accounts']:,} unlabelled), {_when(inp['start'])} to "
        f"{_when(inp['end'])} ({inp['hours']} h).</p>",
        "<p class=\"note\">An account counts as <b>enforced</b> by a system from its first "
        "request that system answered with anything but ALLOW (ringfence: the policy action, "
        "so shadow-mode replays count). Baselines are fixed-window limits computed on the same "
        "events.</p>",
        "<h2>ringfence and the baselines, side by side</h2>", _side_by_side(systems),
        "<h2>Targets (issue 3)</h2>", _targets(ev["targets"]),
        "<h2>Per campaign</h2>", _campaigns(systems),
        "<h2>Charts</h2>", _charts(ev),
        "<h2>Collateral: benign shared-IP groups (ringfence)</h2>", _groups(systems[RINGFENCE]),
        "<h2>By segment</h2>", _segments(systems),
        "<h2>Reasons on enforced requests (ringfence)</h2>", _reasons(ev),
        "<h2>Cluster purity</h2>", _clusters(ev),
        "<h2>Map of accounts</h2>", _map(ev),
        "</body></html>\n",
    ])
