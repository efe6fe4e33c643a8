"""Detection metrics from a decisions file, for ringfence and each baseline side by side.

Definitions (also in docs/evaluation.md):
- An account is *enforced* by a system from its first request that system answered with
  anything but ALLOW. For ringfence that is ``policy_action`` (equal to ``action`` unless the
  policy runs in shadow mode, so shadow replays are evaluated as if enforcing).
- Precision, recall and FPR count accounts: attack accounts enforced / all attack accounts;
  benign accounts enforced / all benign accounts.
- Time to enforce: from an attack account's first request to its enforcement; accounts never
  enforced count as infinitely late, so the median is "never" when fewer than half are.
- A campaign starts at its first request; "hours to 50%/90%" is when that share of all its
  accounts had been enforced. "Within 6 h" counts accounts enforced within 6 h of their own
  first request (for accounts present at the start: within 6 h of the campaign's start).
- Leakage: share of attack requests answered ALLOW.
- Collateral: benign accounts enforced and benign requests not allowed; per shared-IP group.
Memory is O(accounts + hours), never O(requests)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringfence.service.evaluation.decisions import (
    DecisionRecord,
    parse_decision,
    read_decision_objects,
)
from ringfence.service.evaluation.events import EventFormatError
from ringfence.service.evaluation.stats import (
    adjusted_rand_index,
    auc,
    average_precision,
    percentile,
    pr_points,
    recall_at_fpr,
    roc_points,
    thin,
)

RINGFENCE = "ringfence"
ALLOW = "ALLOW"
HOUR = 3600.0
SCORE_BINS = 20
CURVE_POINTS = 300
MAP_POINTS = 4000
TTE_WINDOW_H = 6.0

Json = dict[str, Any]


@dataclass(slots=True)
class _Account:
    label: str
    campaign: str
    group: str
    segment: str
    first: float
    requests: int = 0
    max_score: float = 0.0
    enforced_at: list[float] = field(default_factory=list)  # per system; inf = never
    allowed: list[int] = field(default_factory=list)  # per system
    cluster: str = ""
    xy: tuple[float, float] | None = None


class Evaluator:
    """Folds decision records in one at a time; ``result()`` computes every metric."""

    def __init__(self, source: str = "<decisions>") -> None:
        self.source = source
        self.systems: list[str] = []
        self.accounts: dict[str, _Account] = {}
        self.decisions = 0
        self.start = math.inf
        self.end = -math.inf
        self.req_total: Counter[str] = Counter()  # by label
        self.req_allowed: list[Counter[str]] = []  # per system, by label
        self.campaign_requests: Counter[str] = Counter()
        self.campaign_allowed: list[Counter[str]] = []
        self.hist: dict[str, list[int]] = {}
        self.reasons: dict[str, Counter[str]] = {"attack": Counter(), "benign": Counter()}
        self.new_enforced: list[dict[str, Counter[int]]] = []  # system -> label -> hour
        self.attack_seen: Counter[int] = Counter()

    def _systems(self, r: DecisionRecord, line: int) -> tuple[str, ...]:
        """ringfence's policy action, then each baseline's verdict (same baselines on every
        line)."""
        names = [RINGFENCE, *(name for name, _ in r.baselines)]
        if not self.systems:
            self.systems = names
            n = len(names)
            self.req_allowed = [Counter() for _ in range(n)]
            self.campaign_allowed = [Counter() for _ in range(n)]
            self.new_enforced = [{"attack": Counter(), "benign": Counter()} for _ in range(n)]
        elif names != self.systems:
            raise EventFormatError(self.source, line, f"baselines {names[1:]} differ from the "
                                                      f"first line's {self.systems[1:]}")
        return (r.policy_action, *(verdict for _, verdict in r.baselines))

    def add(self, line: int, d: Json) -> None:
        r = parse_decision(d, line, self.source)
        actions = self._systems(r, line)
        t = r.event_time
        self.decisions += 1
        self.start = min(self.start, t)
        self.end = max(self.end, t)
        hour = int(t // HOUR)
        a = self.accounts.get(r.account)
        n = len(self.systems)
        if a is None:
            a = _Account(r.label, r.campaign, r.group, r.segment, t,
                         enforced_at=[math.inf] * n, allowed=[0] * n)
            self.accounts[r.account] = a
            if r.label == "attack":
                self.attack_seen[hour] += 1
        a.first = min(a.first, t)
        a.requests += 1
        a.max_score = max(a.max_score, r.score)
        if r.cluster:
            a.cluster = r.cluster
        if r.xy is not None:
            a.xy = r.xy
        self.req_total[r.label] += 1
        if r.label == "attack":
            self.campaign_requests[r.campaign] += 1
        if r.label:
            bins = self.hist.setdefault(r.label, [0] * SCORE_BINS)
            bins[min(SCORE_BINS - 1, max(0, int(r.score * SCORE_BINS)))] += 1
        for s, action in enumerate(actions):
            if action == ALLOW:
                a.allowed[s] += 1
                self.req_allowed[s][r.label] += 1
                if r.label == "attack":
                    self.campaign_allowed[s][r.campaign] += 1
            elif t < a.enforced_at[s]:
                if a.enforced_at[s] == math.inf and r.label:
                    self.new_enforced[s][r.label][hour] += 1
                a.enforced_at[s] = t
        if actions[0] != ALLOW and r.label:
            self.reasons[r.label].update(r.reasons)

    # Results ------------------------------------------------------------------------------
    def result(self) -> Json:
        if not self.decisions:
            raise ValueError("no decisions")
        labelled = [a for a in self.accounts.values() if a.label]
        attack = [a for a in labelled if a.label == "attack"]
        benign = [a for a in labelled if a.label == "benign"]
        out: Json = {
            "input": {
                "decisions": self.decisions, "accounts": len(self.accounts),
                "attack_accounts": len(attack), "benign_accounts": len(benign),
                "unlabelled_accounts": len(self.accounts) - len(labelled),
                "attack_requests": self.req_total["attack"],
                "benign_requests": self.req_total["benign"],
                "start": self.start, "end": self.end,
                "hours": round((self.end - self.start) / HOUR, 2),
            },
            "systems": {name: self._system(s, attack, benign)
                        for s, name in enumerate(self.systems)},
            "curves": self._curves(labelled),
            "score_histograms": self._histograms(labelled),
            "timeline": self._timeline(),
            "reasons_when_enforced": {label: dict(c.most_common(12))
                                      for label, c in self.reasons.items()},
            "clusters": self._clusters(labelled),
            "map": self._map(labelled),
        }
        out["targets"] = targets(out["systems"][RINGFENCE])
        return out

    def _system(self, s: int, attack: list[_Account], benign: list[_Account]) -> Json:
        tp = sum(1 for a in attack if a.enforced_at[s] < math.inf)
        fp = sum(1 for a in benign if a.enforced_at[s] < math.inf)
        fn, tn = len(attack) - tp, len(benign) - fp
        delays = [(a.enforced_at[s] - a.first) / HOUR for a in attack]
        enforced_delays = [d for d in delays if d < math.inf]
        attack_req, benign_req = self.req_total["attack"], self.req_total["benign"]
        attack_allowed = self.req_allowed[s]["attack"]
        benign_allowed = self.req_allowed[s]["benign"]
        everyone = self.accounts.values()
        allowed_all = sum(self.req_allowed[s].values())
        return {
            # Whatever the labels (also for unlabelled logs): what would have been enforced.
            "all": {"accounts": len(self.accounts),
                    "accounts_enforced": sum(1 for a in everyone if a.enforced_at[s] < math.inf),
                    "requests": self.decisions,
                    "requests_not_allowed": self.decisions - allowed_all},
            "accounts": {"tp": tp, "fp": fp, "tn": tn, "fn": fn,
                         "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
                         "fpr": _ratio(fp, fp + tn)},
            "requests": {"attack": attack_req, "attack_allowed": attack_allowed,
                         "leakage": _ratio(attack_allowed, attack_req),
                         "benign": benign_req, "benign_not_allowed": benign_req - benign_allowed,
                         "benign_not_allowed_share": _ratio(benign_req - benign_allowed,
                                                            benign_req)},
            "time_to_enforce_h": {
                "median": _finite(percentile(delays, 50)), "p90": _finite(percentile(delays, 90)),
                "median_of_enforced": _finite(percentile(enforced_delays, 50)),
                "p90_of_enforced": _finite(percentile(enforced_delays, 90)),
                "enforced": len(enforced_delays), "accounts": len(delays),
                "within_6h_share": _ratio(sum(1 for d in delays if d <= TTE_WINDOW_H),
                                          len(delays)),
            },
            "campaigns": self._campaigns(s, attack),
            "collateral": self._collateral(s, benign),
            "segments": _segments(s, [*attack, *benign]),
        }

    def _campaigns(self, s: int, attack: list[_Account]) -> Json:
        by: dict[str, list[_Account]] = {}
        for a in attack:
            by.setdefault(a.campaign, []).append(a)
        out: Json = {}
        for cid, accounts in sorted(by.items()):
            start = min(a.first for a in accounts)
            times = sorted(a.enforced_at[s] for a in accounts)
            n = len(accounts)

            def hours_to(share: float, times: list[float] = times, n: int = n,
                         start: float = start) -> float | None:
                k = max(1, math.ceil(share * n))
                return _finite((times[k - 1] - start) / HOUR)

            requests = self.campaign_requests[cid]
            out[cid or "(none)"] = {
                "accounts": n, "enforced": sum(1 for t in times if t < math.inf),
                "recall": _ratio(sum(1 for t in times if t < math.inf), n),
                "requests": requests,
                "leakage": _ratio(self.campaign_allowed[s][cid], requests),
                "hours_to_50pct": hours_to(0.5), "hours_to_90pct": hours_to(0.9),
                "within_6h_share": _ratio(sum(
                    1 for a in accounts if a.enforced_at[s] - a.first <= TTE_WINDOW_H * HOUR), n),
            }
        return out

    def _collateral(self, s: int, benign: list[_Account]) -> Json:
        groups: dict[str, list[_Account]] = {}
        for a in benign:
            if a.group:
                groups.setdefault(a.group, []).append(a)
        rows = []
        for gid, accounts in groups.items():
            if len(accounts) < 2:
                continue
            enforced = sum(1 for a in accounts if a.enforced_at[s] < math.inf)
            requests = sum(a.requests for a in accounts)
            blocked = sum(a.requests - a.allowed[s] for a in accounts)
            rows.append({"group": gid, "accounts": len(accounts), "enforced": enforced,
                         "enforced_share": _ratio(enforced, len(accounts)),
                         "requests": requests, "not_allowed": blocked,
                         "not_allowed_share": _ratio(blocked, requests)})
        rows.sort(key=lambda r: (-(r["enforced_share"] or 0), -(r["not_allowed_share"] or 0),
                                 -r["accounts"], r["group"]))
        enforced = sum(1 for a in benign if a.enforced_at[s] < math.inf)
        return {"benign_accounts_enforced": enforced,
                "benign_accounts_enforced_share": _ratio(enforced, len(benign)),
                "worst_group": rows[0] if rows and rows[0]["enforced"] else None,
                "groups": rows[:10]}

    def _curves(self, labelled: list[_Account]) -> Json:
        scored = [(a.max_score, a.label == "attack") for a in labelled]
        roc = roc_points(scored)
        pr = pr_points(scored)
        if not roc:
            return {"available": False, "reason": "needs both attack and benign accounts"}
        return {"available": True, "score": "per-account maximum risk score",
                "auc": round(auc(roc), 6), "average_precision": round(average_precision(pr), 6),
                "recall_at_fpr": {"0.001": recall_at_fpr(roc, 0.001),
                                  "0.01": recall_at_fpr(roc, 0.01)},
                "roc": [[round(x, 6), round(y, 6)] for x, y, _ in thin(roc, CURVE_POINTS)],
                "pr": [[round(x, 6), round(y, 6)] for x, y, _ in thin(pr, CURVE_POINTS)]}

    def _histograms(self, labelled: list[_Account]) -> Json:
        per_account: dict[str, list[int]] = {}
        for a in labelled:
            bins = per_account.setdefault(a.label, [0] * SCORE_BINS)
            bins[min(SCORE_BINS - 1, int(a.max_score * SCORE_BINS))] += 1
        return {"edges": [i / SCORE_BINS for i in range(SCORE_BINS + 1)],
                "requests": self.hist, "account_max": per_account}

    def _timeline(self) -> Json:
        if self.start == math.inf:
            return {}
        first, last = int(self.start // HOUR), int(self.end // HOUR)
        hours = list(range(first, last + 1))
        seen, total = [], 0
        for h in hours:
            total += self.attack_seen[h]
            seen.append(total)
        out: Json = {"start_hour": first, "attack_accounts_seen": seen, "attack_enforced": {},
                     "benign_enforced": {}}
        for s, name in enumerate(self.systems):
            for label, key in (("attack", "attack_enforced"), ("benign", "benign_enforced")):
                running, series = 0, []
                for h in hours:
                    running += self.new_enforced[s][label][h]
                    series.append(running)
                out[key][name] = series
        return out

    def _clusters(self, labelled: list[_Account]) -> Json:
        clustered = [a for a in labelled if a.cluster]
        if not clustered:
            return {"available": False,
                    "reason": "no decision carries a cluster id (clustering is not enabled)"}
        attack = [a for a in labelled if a.label == "attack"]
        truth = [a.campaign for a in attack]
        # An unclustered attack account is its own singleton: it was linked to nobody.
        predicted = [a.cluster or f"unclustered:{i}" for i, a in enumerate(attack)]
        members: dict[str, Counter[str]] = {}
        for a in clustered:
            members.setdefault(a.cluster, Counter())[a.campaign if a.label == "attack"
                                                     else "benign"] += 1
        majority = total = benign_in_attack = 0
        for counts in members.values():
            if sum(v for k, v in counts.items() if k != "benign") == 0:
                continue
            top_class, top = counts.most_common(1)[0]
            majority += top
            total += sum(counts.values())
            if top_class != "benign":
                benign_in_attack += counts["benign"]
        return {"available": True, "clusters": len(members),
                "clustered_accounts": len(clustered),
                "ari_attack_vs_campaign": round(adjusted_rand_index(truth, predicted), 6)
                if attack else None,
                "purity_of_attack_clusters": _ratio(majority, total),
                "benign_in_attack_clusters": benign_in_attack}

    def _map(self, labelled: list[_Account]) -> Json:
        placed = [a for a in labelled if a.xy is not None]
        if not placed:
            return {"available": False,
                    "reason": "decisions carry no per-account 2-D coordinates (\"xy\"); the "
                              "clustering work adds them"}
        step = max(1, math.ceil(len(placed) / MAP_POINTS))
        return {"available": True, "points": [
            [round(a.xy[0], 4), round(a.xy[1], 4), a.campaign if a.label == "attack"
             else "benign", a.cluster] for a in placed[::step] if a.xy is not None]}


def _segments(s: int, accounts: Iterable[_Account]) -> Json:
    by: dict[str, list[int]] = {}
    for a in accounts:
        row = by.setdefault(f"{a.label}:{a.segment or '-'}", [0, 0])
        row[0] += 1
        row[1] += a.enforced_at[s] < math.inf
    return {k: {"accounts": n, "enforced": e, "enforced_share": _ratio(e, n)}
            for k, (n, e) in sorted(by.items())}


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 6) if b else None


def _finite(x: float) -> float | None:
    """JSON has no infinity: "never" (or no data) is null."""
    return round(x, 4) if math.isfinite(x) else None


# The detection targets, checked against the ringfence column.
CI_TARGETS = (
    ("campaign accounts enforced within 6 h", ">=", 0.95),
    ("benign account FPR", "<=", 0.005),
    ("leakage", "<=", 0.05),
)
FULL_SCALE_TARGETS = (
    ("campaign accounts enforced (recall)", ">=", 0.99),
    ("median time to enforce (h)", "<=", 1.0),
    ("benign account FPR", "<=", 0.001),
    ("leakage", "<=", 0.01),
)


def targets(system: Json) -> list[Json]:
    values = {
        "campaign accounts enforced within 6 h": system["time_to_enforce_h"]["within_6h_share"],
        "campaign accounts enforced (recall)": system["accounts"]["recall"],
        "median time to enforce (h)": system["time_to_enforce_h"]["median"],
        "benign account FPR": system["accounts"]["fpr"],
        "leakage": system["requests"]["leakage"],
    }
    out = []
    for scope, table in (("ci", CI_TARGETS), ("full_scale", FULL_SCALE_TARGETS)):
        for name, op, bound in table:
            value = values[name]
            met = value is not None and (value >= bound if op == ">=" else value <= bound)
            out.append({"scope": scope, "metric": name, "op": op, "bound": bound,
                        "value": value, "met": met})
    return out


def evaluate_decisions(records: Iterable[tuple[int, Json]], source: str = "<decisions>",
                       ) -> Json:
    """Every metric of a stream of (line number, decision object)."""
    evaluator = Evaluator(source)
    for line, d in records:
        evaluator.add(line, d)
    return evaluator.result()


def evaluate_file(path: Path | str) -> Json:
    return evaluate_decisions(read_decision_objects(path), str(path))


Evaluation = Json
"""The evaluation as a JSON-ready mapping (see docs/evaluation.md for the keys)."""
