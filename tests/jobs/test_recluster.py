"""``ringfence recluster`` as an operator runs it: idempotent, resumable, clear one-line
errors, Parquet from any fsspec URL, the HTML cluster report."""

from __future__ import annotations

import io
import logging
import sqlite3

import pytest
from conftest import KEY_HEX, job_settings, make_events, partition_of, write_log

from ringfence.service.adapters.model_store import ModelStore
from ringfence.service.cli import main
from ringfence.service.jobs import recluster as recluster_module
from ringfence.service.jobs.engines import EmbeddedEngine
from ringfence.service.jobs.export import export_parquet
from ringfence.service.jobs.progress import Progress
from ringfence.service.jobs.recluster import ReclusterOptions, recluster
from ringfence.service.jobs.sources import ParquetSource, SqliteSource

KEY = bytes.fromhex(KEY_HEX)


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("RINGFENCE_HASH_KEY", KEY_HEX)
    monkeypatch.setenv("RINGFENCE_LOG_FORMAT", "text")


def test_rerun_on_the_same_events_publishes_nothing_and_force_keeps_ids(data_dir, key_env,
                                                                       capsys):
    args = ["recluster", "--data-dir", str(data_dir), "--partitions", "2"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("published m-")
    models = data_dir / "models"
    latest = (models / "LATEST").read_text()
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("up to date: ")
    assert (models / "LATEST").read_text() == latest
    assert len(list(models.glob("*.rfmodel"))) == 1
    assert not [p for p in (data_dir / "recluster-work").iterdir() if p.is_dir()]  # cleaned

    assert main([*args, "--force"]) == 0
    store = ModelStore(models, KEY)
    old, _ = store.load(models / latest)
    new, info = store.load_latest()
    assert info.previous == old.version != new.version
    assert {m.cluster_id for m in new.members.values()} == \
        {m.cluster_id for m in old.members.values()}


def test_an_interrupted_run_resumes_from_its_partitions(data_dir, monkeypatch):
    settings = job_settings(data_dir)
    source = SqliteSource(data_dir / "events.db")
    options = ReclusterOptions(partitions=3)

    def crash(snapshot):
        raise RuntimeError("killed during the fit")

    monkeypatch.setattr(recluster_module, "fit_model", crash)
    with pytest.raises(RuntimeError):
        recluster(settings, source, options)
    saved = list((data_dir / "recluster-work").glob("*/part-*.npz"))
    assert len(saved) == 3
    monkeypatch.undo()

    class NoAggregation(EmbeddedEngine):
        def run(self, tasks, on_result):
            assert not tasks, "every partition should come from the work dir"

    result = recluster(settings, source, options, NoAggregation())
    assert result.status == "published"
    assert result.reused_partitions == 3 and result.partitions == 3
    assert result.events == len(make_events())


def _one_line_error(capsys, argv, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_exits_non_zero_with_one_line(tmp_path, data_dir, key_env, capsys,
                                                monkeypatch):
    err = _one_line_error(capsys, ["recluster", "--data-dir", str(tmp_path / "nothing")])
    assert "event log" in err and "does not exist" in err
    err = _one_line_error(capsys, ["recluster", "--data-dir", str(data_dir), "--since",
                                   "2020-01-01", "--until", "2020-02-01"])
    assert "no events between 2020-01-01" in err
    err = _one_line_error(capsys, ["recluster", "--data-dir", str(data_dir), "--since", "45x"])
    assert "--since '45x'" in err

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    err = _one_line_error(capsys, ["recluster", "--data-dir", str(data_dir), "--events-db",
                                   str(garbage)])
    assert f"cannot read {garbage}" in err
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    err = _one_line_error(capsys, ["recluster", "--data-dir", str(data_dir), "--events-db",
                                   str(other)])
    assert "no events table" in err
    empty = write_log(tmp_path / "empty" / "events.db", [])
    err = _one_line_error(capsys, ["recluster", "--data-dir", str(data_dir), "--events-db",
                                   str(empty)])
    assert "no events in" in err

    bad_parquet = tmp_path / "bad.parquet"
    bad_parquet.write_bytes(b"PAR1 but not really")
    err = _one_line_error(capsys, ["recluster", "--data-dir", str(data_dir), "--parquet",
                                   str(bad_parquet)])
    assert "cannot read Parquet input" in err
    err = _one_line_error(capsys, ["recluster", "--data-dir", str(data_dir), "--parquet",
                                   str(tmp_path / "missing.parquet")])
    assert "does not exist" in err

    monkeypatch.delenv("RINGFENCE_HASH_KEY")
    err = _one_line_error(capsys, ["recluster", "--data-dir", str(data_dir)])
    assert "no hash key" in err
    assert not (data_dir / "hash.key").exists()  # the job never invents a key


def test_parquet_from_an_fsspec_url_gives_the_sqlite_clusters(data_dir):
    fsspec = pytest.importorskip("fsspec")
    source = SqliteSource(data_dir / "events.db")
    exported = export_parquet(source, "memory://ringfence-test/events/part-0.parquet", None)
    assert exported.events == len(make_events())
    try:
        a = recluster(job_settings(data_dir, model_dir=data_dir / "a"), source,
                      ReclusterOptions(partitions=2))
        b = recluster(job_settings(data_dir, model_dir=data_dir / "b"),
                      ParquetSource(("memory://ringfence-test/events",)),
                      ReclusterOptions(partitions=3))
    finally:
        fsspec.filesystem("memory").rm("/ringfence-test", recursive=True)
    assert a.fingerprint == b.fingerprint  # the same events, whatever the format
    ma, _ = ModelStore(data_dir / "a", KEY).load_latest()
    mb, _ = ModelStore(data_dir / "b", KEY).load_latest()
    assert partition_of(ma) == partition_of(mb)


def test_cluster_report_is_self_contained(data_dir, key_env, capsys):
    report = data_dir / "out" / "clusters.html"
    assert main(["recluster", "--data-dir", str(data_dir), "--report", str(report)]) == 0
    assert f"report: {report}" in capsys.readouterr().out
    html = report.read_text()
    model, _ = ModelStore(data_dir / "models", KEY).load_latest()
    fleet = model.members["fleet-0"].cluster_id
    assert html.count("<svg") == 3  # projection, requests per day, members per day
    assert fleet in html and "CLUSTER_SHARED_DEVICES" in html
    for external in ("<script", "<link", "<img", "src=", "url("):
        assert external not in html


def test_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise(caplog):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bar = Progress("recluster", 100, stream=tty)
    bar.advance(40)
    bar.close()
    assert "\r" in tty.getvalue() and "[############" in tty.getvalue()
    with caplog.at_level(logging.INFO, logger="ringfence.jobs"):
        lines = Progress("recluster", 100, stream=io.StringIO())
        lines.advance(40, "partition 1/2")
    assert "recluster: 40/100 events, partition 1/2" in caplog.text


def test_an_overlapping_run_stops_at_once(data_dir):
    from ringfence.service.jobs import JobError
    from ringfence.service.jobs.workdir import WorkDir

    with (WorkDir(data_dir / "recluster-work", "0" * 64).lock(),
          pytest.raises(JobError, match="another recluster is running") as err):
        recluster(job_settings(data_dir), SqliteSource(data_dir / "events.db"),
                  ReclusterOptions())
    assert err.value.exit_code == 1
    assert recluster(job_settings(data_dir), SqliteSource(data_dir / "events.db"),
                     ReclusterOptions()).status == "published"
