"""Metrics on tiny, hand-built decision sets whose answers are worked out in the comments."""

import json
import math

import pytest

from ringfence.service.evaluation.decisions import DecisionRecord, parse_decision
from ringfence.service.evaluation.events import EventFormatError
from ringfence.service.evaluation.metrics import evaluate_decisions, evaluate_file
from ringfence.service.evaluation.report import render_html
from ringfence.service.evaluation.stats import (
    adjusted_rand_index,
    auc,
    average_precision,
    percentile,
    pr_points,
    recall_at_fpr,
    roc_points,
)

H = 3600.0


@pytest.fixture
def incident(decision):
    """Campaign c1: a1 enforced 1 h after its first request, a2 after 2 h, a3 never, a4 at
    once. Benign: b1 (group g1) throttled once; b2 (g1), b3, b4 (g2) never. The baseline
    "per_account" enforces only a3."""
    ok, no = {"per_account": "ALLOW"}, {"per_account": "THROTTLE"}
    rows = [
        decision("a1", 0, label="attack", campaign="c1", score=0.2, baselines=ok),
        decision("b1", 0, group="g1", score=0.1),
        decision("a3", 0, label="attack", campaign="c1", score=0.3, baselines=no),
        decision("b4", 10, group="g2", score=0.05),
        decision("b1", 100, group="g1", action="THROTTLE", score=0.55,
                 reasons=["PREFIX_SHARED_BY_ACCOUNTS"]),
        decision("b2", 200, group="g1", score=0.2),
        decision("b3", 300, score=0.1),
        decision("a2", 1800, label="attack", campaign="c1", score=0.3, baselines=ok),
        decision("a1", H, label="attack", campaign="c1", action="THROTTLE", score=0.6,
                 baselines=ok, reasons=["ACCOUNT_MANY_IPS"]),
        decision("a4", H, label="attack", campaign="c1", action="THROTTLE", score=0.65,
                 baselines=ok),
        decision("a1", 2 * H, label="attack", campaign="c1", action="BLOCK", score=0.95,
                 baselines=ok),
        decision("b4", 2 * H, group="g2", score=0.05),
        decision("a2", 1800 + 2 * H, label="attack", campaign="c1", action="CHALLENGE",
                 score=0.75, baselines=ok),
        decision("a3", 10 * H, label="attack", campaign="c1", score=0.4, baselines=no),
    ]
    return evaluate_decisions(enumerate(rows, 1))


def test_account_precision_recall_and_fpr(incident):
    acc = incident["systems"]["ringfence"]["accounts"]
    assert (acc["tp"], acc["fn"], acc["fp"], acc["tn"]) == (3, 1, 1, 3)
    assert acc["precision"] == 0.75 and acc["recall"] == 0.75 and acc["fpr"] == 0.25


def test_time_to_enforce_counts_never_as_infinitely_late(incident):
    tte = incident["systems"]["ringfence"]["time_to_enforce_h"]
    # Delays 0, 1, 2, never: nearest-rank median = 2nd = 1 h; p90 = 4th = never.
    assert tte["median"] == 1.0 and tte["p90"] is None
    assert tte["median_of_enforced"] == 1.0 and tte["p90_of_enforced"] == 2.0
    assert tte["within_6h_share"] == 0.75


def test_campaign_hours_to_half_and_ninety_percent(incident):
    c1 = incident["systems"]["ringfence"]["campaigns"]["c1"]
    # Enforced at 1 h, 1 h, 2.5 h, never (campaign starts at 0).
    assert c1["hours_to_50pct"] == 1.0 and c1["hours_to_90pct"] is None
    assert c1["accounts"] == 4 and c1["enforced"] == 3


def test_enforcement_counts_cover_every_account_whatever_its_label(decision):
    rows = [decision("u1", 0, label=""), decision("u1", 5, label="", action="BLOCK"),
            decision("u2", 6, label=""), decision("b1", 7, action="THROTTLE")]
    everyone = evaluate_decisions(enumerate(rows, 1))["systems"]["ringfence"]["all"]
    assert everyone == {"accounts": 3, "accounts_enforced": 2, "requests": 4,
                        "requests_not_allowed": 2}


def test_leakage_is_the_share_of_attack_requests_allowed(incident):
    req = incident["systems"]["ringfence"]["requests"]
    assert (req["attack"], req["attack_allowed"], req["leakage"]) == (8, 4, 0.5)
    base = incident["systems"]["per_account"]
    assert base["requests"]["leakage"] == 0.75  # only a3's two requests were stopped
    assert base["accounts"]["recall"] == 0.25 and base["accounts"]["fp"] == 0


def test_collateral_names_the_worst_hit_group(incident):
    col = incident["systems"]["ringfence"]["collateral"]
    assert col["benign_accounts_enforced"] == 1
    assert col["worst_group"] == {"group": "g1", "accounts": 2, "enforced": 1,
                                  "enforced_share": 0.5, "requests": 3, "not_allowed": 1,
                                  "not_allowed_share": pytest.approx(1 / 3, abs=1e-6)}
    req = incident["systems"]["ringfence"]["requests"]
    assert req["benign_not_allowed"] == 1 and req["benign"] == 6


def test_targets_are_checked_against_ringfence(incident):
    by = {(t["scope"], t["metric"]): t for t in incident["targets"]}
    assert by[("ci", "leakage")]["value"] == 0.5 and not by[("ci", "leakage")]["met"]
    assert not by[("ci", "benign account FPR")]["met"]


def test_reasons_and_segments(incident):
    assert incident["reasons_when_enforced"]["benign"] == {"PREFIX_SHARED_BY_ACCOUNTS": 1}
    assert incident["reasons_when_enforced"]["attack"] == {"ACCOUNT_MANY_IPS": 1}


def test_clusters_not_available_without_cluster_ids(incident):
    assert incident["clusters"]["available"] is False
    assert incident["map"]["available"] is False
    html = render_html(incident)
    assert html.count("<svg") >= 5
    assert "ringfence" in html and "per_account" in html
    assert "Not available" in html


def test_cluster_purity_and_ari_against_campaigns(decision):
    """Campaign A: x1, x2 in K1; campaign B: y1 in K2, y2 unclustered. Benign z1 in K1,
    z2 in K3. ARI over attack accounts: [A,A,B,B] vs [K1,K1,K2,own] = 4/7."""
    rows = [
        decision("x1", 0, label="attack", campaign="A", cluster="K1", xy=[0.0, 0.0]),
        decision("x2", 1, label="attack", campaign="A", cluster="K1", xy=[0.1, 0.0]),
        decision("y1", 2, label="attack", campaign="B", cluster="K2", xy=[1.0, 1.0]),
        decision("y2", 3, label="attack", campaign="B"),
        decision("z1", 4, cluster="K1", xy=[0.0, 0.2]),
        decision("z2", 5, cluster="K3", xy=[5.0, 5.0]),
    ]
    ev = evaluate_decisions(enumerate(rows, 1))
    c = ev["clusters"]
    assert c["available"] and c["clusters"] == 3 and c["clustered_accounts"] == 5
    assert c["ari_attack_vs_campaign"] == pytest.approx(4 / 7, abs=1e-6)
    assert c["purity_of_attack_clusters"] == 0.75  # K1: 2 of 3, K2: 1 of 1
    assert c["benign_in_attack_clusters"] == 1
    assert ev["map"]["available"] and len(ev["map"]["points"]) == 5
    assert "Accounts in the clustering space" in render_html(ev)


@pytest.mark.parametrize(("truth", "predicted", "expected"), [
    ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),
    ([0, 0, 1, 1], [1, 1, 0, 0], 1.0),
    ([0, 0, 1, 1], [0, 0, 1, 2], 4 / 7),
    ([0, 0, 1, 2], [0, 0, 1, 1], 4 / 7),
    ([0, 0, 1, 1], [0, 1, 0, 1], -0.5),
    ([0, 0, 0, 0], [0, 1, 2, 3], 0.0),
    ([0, 0, 0, 0], [1, 1, 1, 1], 1.0),
])
def test_adjusted_rand_index_matches_known_values(truth, predicted, expected):
    assert adjusted_rand_index(truth, predicted) == pytest.approx(expected)


def test_adjusted_rand_index_agrees_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    truth = [i % 5 for i in range(200)]
    predicted = [(i * 7) % 9 if i % 3 else i % 5 for i in range(200)]
    assert adjusted_rand_index(truth, predicted) == pytest.approx(
        sklearn_metrics.adjusted_rand_score(truth, predicted))


def test_roc_pr_and_percentiles_on_known_examples():
    scored = [(0.9, True), (0.6, False), (0.4, True), (0.1, False)]
    roc = roc_points(scored)
    assert auc(roc) == pytest.approx(0.75)  # 3 of 4 attack/benign pairs ordered right
    assert average_precision(pr_points(scored)) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert recall_at_fpr(roc, 0.0) == 0.5
    assert auc(roc_points([(0.9, True), (0.1, False)])) == 1.0
    assert percentile([4, 1, 3, 2], 50) == 2 and percentile([5], 90) == 5
    assert percentile([1, math.inf], 90) == math.inf and math.isnan(percentile([], 50))


def test_bad_decision_files_name_the_line(tmp_path, decision, write_jsonl):
    path = tmp_path / "d.jsonl"
    path.write_text('{"account": "a"}\nnot json\n')
    with pytest.raises(EventFormatError, match=r"d.jsonl:1: t must be a finite number"):
        evaluate_file(path)
    write_jsonl(path, [decision("a", 0), {**decision("b", 1), "policy_action": "MAYBE"}])
    with pytest.raises(EventFormatError, match=r":2: policy_action must be one of"):
        evaluate_file(path)
    write_jsonl(path, [decision("a", 0), decision("b", 1, baselines={})])
    with pytest.raises(EventFormatError, match=r":2: baselines \[\] differ"):
        evaluate_file(path)
    path.write_text("{}\n{bad\n")
    with pytest.raises(EventFormatError, match=r":1: account must be a non-empty string"):
        evaluate_file(path)
    path.write_text("\n\n")
    with pytest.raises(EventFormatError, match="no decisions"):
        evaluate_file(path)


def test_decision_records_round_trip():
    record = DecisionRecord(
        account="a", event_time=1776816000.125, score=0.61, action="ALLOW",
        policy_action="THROTTLE", reasons=("IP_ANONYMIZED",), cluster="k1", label="attack",
        campaign="c", group="", segment="c", baselines=(("account_100_per_day", "ALLOW"),),
        xy=(0.5, -1.0))
    assert parse_decision(json.loads(record.to_json()), 1) == record
