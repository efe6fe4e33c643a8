"""``ringfence report audit --month``: usage, actions, flagged accounts and their time to
enforcement, flagged clusters of the published model, labels — the same figures from the
SQLite log and from its Parquet export."""

from __future__ import annotations

import json

import pytest
from conftest import FLEET, KEY_HEX, job_settings, make_events

from ringfence.service.adapters.labels import SqliteLabelStore
from ringfence.service.cli import main
from ringfence.service.core.model import Label, LabelTarget, LabelValue
from ringfence.service.jobs.audit import audit
from ringfence.service.jobs.export import export_parquet
from ringfence.service.jobs.recluster import ReclusterOptions, recluster
from ringfence.service.jobs.sources import ParquetSource, SqliteSource

MAY = 1_779_000_000.0  # 2026-05-17


@pytest.fixture
def audited(data_dir, monkeypatch):
    monkeypatch.setenv("RINGFENCE_HASH_KEY", KEY_HEX)
    store = SqliteLabelStore(data_dir / "state.db")
    store.add(Label(LabelTarget.ACCOUNT, "fleet-3", LabelValue.ABUSIVE, MAY, "ana", "proxy pool"))
    store.add(Label(LabelTarget.ACCOUNT, "user-1", LabelValue.BENIGN, MAY - 60 * 86400, "bo", ""))
    store.close()
    recluster(job_settings(data_dir), SqliteSource(data_dir / "events.db"), ReclusterOptions())
    return data_dir


def test_monthly_audit_json_and_html(audited, capsys):
    out = audited / "audit"
    assert main(["report", "audit", "--month", "2026-05", "--data-dir", str(audited),
                 "--out", str(out)]) == 0
    assert "60 accounts flagged" in capsys.readouterr().out
    report = json.loads((out / "audit-2026-05.json").read_text())
    events = make_events()
    assert report["usage"]["requests"] == len(events)
    assert report["usage"]["accounts"] == 260
    assert report["usage"]["by_task"] == {"REASONING": 60 * 36, "CHAT": len(events) - 60 * 36}
    assert sum(d["requests"] for d in report["usage"]["days"]) == len(events)
    assert report["actions"]["served"]["THROTTLE"] == FLEET * 17
    assert report["actions"]["reasons_when_flagged"]["CLUSTER_SHARED_DEVICES"] == FLEET * 17

    flagged = report["flagged_accounts"]
    assert flagged["count"] == flagged["first_flagged_in_month"] == flagged["enforced"] == 60
    assert flagged["hours_to_flag"]["median"] == pytest.approx(38.0)
    assert flagged["hours_to_enforcement"]["max"] == pytest.approx(38.0)
    assert {a["account_id"] for a in flagged["accounts"]} == {f"fleet-{i}" for i in range(60)}

    clusters = report["clusters"]
    assert clusters["model_version"]
    top = clusters["flagged"][0]
    assert top["enforced_by_policy"] and top["members_flagged_in_month"] >= 54
    assert "CLUSTER_SHARED_DEVICES" in {r["code"] for r in top["reasons"]}
    assert [x["target_id"] for x in report["labels"]["in_month"]] == ["fleet-3"]
    assert report["labels"]["total"] == 2

    html = (out / "audit-2026-05.html").read_text()
    assert html.count("<svg") == 3 and top["cluster_id"] in html and "proxy pool" in html
    for external in ("<script", "<link", "<img", "src=", "url("):
        assert external not in html


def test_audit_reads_the_same_from_parquet(audited):
    settings = job_settings(audited)
    sqlite = audit(SqliteSource(audited / "events.db"), "2026-05", settings)
    export_parquet(SqliteSource(audited / "events.db"), str(audited / "pq" / "e.parquet"), None)
    parquet = audit(ParquetSource((str(audited / "pq"),)), "2026-05", settings)
    for report in (sqlite, parquet):
        report.pop("source"), report.pop("generated_at")
    assert parquet == sqlite


def test_audit_errors(audited, capsys):
    assert main(["report", "audit", "--month", "2026-01", "--data-dir", str(audited),
                 "--out", str(audited)]) == 2
    assert "no events in 2026-01" in capsys.readouterr().err
    assert main(["report", "audit", "--month", "May", "--data-dir", str(audited)]) == 2
    assert "give a month as YYYY-MM" in capsys.readouterr().err
