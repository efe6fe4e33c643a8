"""The CI-sized incident scenario end to end (simulate → in-process replay with clustering →
evaluate), with thresholds on detection quality. They sit just below what ringfence reaches on
this seed, so a regression fails them; docs/evaluation.md has the measured figures.

Measured (preset ``ci``, seed 7, clustering on, the replay on the service's default refit
schedule): recall 0.988, precision 1.000, benign FPR 0.0 (0/734), leakage 0.041, enforced within
6 h 0.955, median time to enforce 0.97 h, ROC AUC 0.993; per campaign leakage 0.025-0.032 for
emulator-farm, hosting-farm and resi-sdk, 0.077 for stealth (recall 0.961, within 6 h 0.868);
benign accounts inside attack clusters 15 (untied, so not enforced); without clustering on the
same events: recall 0.502, FPR 0.0, leakage 0.773, within 6 h 0.135. That meets the issue's
targets (≥0.95 within 6 h, FPR ≤0.005, leakage ≤0.05); the thresholds sit just below."""

import pytest

from ringfence.service.evaluation.baselines import default_baselines
from ringfence.service.evaluation.events import open_text, read_events
from ringfence.service.evaluation.metrics import evaluate_file
from ringfence.service.evaluation.replay import create_compared
from ringfence.service.evaluation.scenario import preset
from ringfence.service.evaluation.simulator import write_simulation


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ci")
    write_simulation(preset("ci"), root / "events.jsonl", root / "geo")
    with create_compared(geo_dir=root / "geo", policy=None,
                         baselines=default_baselines()) as replay, \
            open_text(root / "decisions.jsonl", "w") as out:
        for record in replay.run(read_events(root / "events.jsonl")):
            out.write(record.to_json() + "\n")
    return evaluate_file(root / "decisions.jsonl")


def test_scenario_has_the_intended_shape(evaluation):
    inp = evaluation["input"]
    assert inp["attack_accounts"] >= 240 and inp["benign_accounts"] >= 700
    assert 25_000 <= inp["decisions"] <= 40_000


def test_detection_quality_does_not_regress(evaluation):
    rf = evaluation["systems"]["ringfence"]
    assert rf["accounts"]["recall"] >= 0.97
    assert rf["accounts"]["precision"] >= 0.98
    assert rf["accounts"]["fpr"] <= 0.003  # at most 2 of 734 honest accounts
    assert rf["requests"]["leakage"] <= 0.05
    assert rf["time_to_enforce_h"]["within_6h_share"] >= 0.94
    assert rf["time_to_enforce_h"]["median"] <= 1.5
    for campaign in ("emulator-farm", "hosting-farm", "resi-sdk"):
        assert rf["campaigns"][campaign]["recall"] >= 0.97, campaign
        assert rf["campaigns"][campaign]["within_6h_share"] >= 0.95, campaign
        assert rf["campaigns"][campaign]["leakage"] <= 0.045, campaign
    assert rf["campaigns"]["stealth"]["recall"] >= 0.93
    assert rf["campaigns"]["stealth"]["within_6h_share"] >= 0.8
    assert rf["campaigns"]["stealth"]["leakage"] <= 0.1
    assert evaluation["curves"]["auc"] >= 0.98


def test_the_cluster_signal_does_the_work(evaluation):
    systems = evaluation["systems"]
    clustered, alone = systems["ringfence"], systems["ringfence_without_clustering"]
    assert clustered["accounts"]["recall"] >= alone["accounts"]["recall"] + 0.4
    assert clustered["requests"]["leakage"] <= alone["requests"]["leakage"] - 0.65
    assert clustered["time_to_enforce_h"]["within_6h_share"] >= \
        alone["time_to_enforce_h"]["within_6h_share"] + 0.75
    assert clustered["accounts"]["fpr"] <= alone["accounts"]["fpr"] + 0.003
    clusters = evaluation["clusters"]
    assert clusters["available"] and clusters["purity_of_attack_clusters"] >= 0.8
    # honest accounts HDBSCAN places beside a fleet: untied to its devices, templates and
    # sign-up batches, their membership stays below the policy's min_probability, so the
    # cluster neither scores nor limits them; measured 15
    assert clusters["benign_in_attack_clusters"] <= 20


def test_ringfence_beats_the_per_account_limit(evaluation):
    systems = evaluation["systems"]
    rf, per_account = systems["ringfence"], systems["account_100_per_day"]
    # The incident's lesson: a per-account limit never fires on ~26 queries a day.
    assert per_account["requests"]["leakage"] == 1.0
    assert rf["requests"]["leakage"] <= per_account["requests"]["leakage"] - 0.9
    assert rf["accounts"]["recall"] > per_account["accounts"]["recall"]
    # ... while it does throttle honest heavy users and backends.
    assert per_account["accounts"]["fpr"] > rf["accounts"]["fpr"]
