"""bench/score_throughput.py runs end to end, tiny (a few hundred requests), so the benchmark
scripts do not rot: the load mode's ScoreBatch and Check pools against the fixed-window
server, and the soak mode against the real App with Score (open loop, RSS sampling,
buckets). Nothing here checks a figure: only that every phase ran, answered without errors
and wrote its JSON. The accounts mode is left out to keep this short (one more App start and
a prefill). Also the before/after replay digest (two runs of one tree agree) and the Score
CPU breakdown (every variant runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "score_throughput.py"
TINY_RUN = (
    "--rounds 1 --warmup 0.1 --measure 0.4 --start-delay 0.2 --pool 200 --accounts 200 "
    "--devices 60 --ips 100 --clients 1 --concurrency 2 --batch-size 4 --no-pin "
    "--score-setting clustering=false"
)


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY_RUN.split(), *args, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_load_mode_runs_batch_and_check_against_the_fixed_window_server(tmp_path):
    # Score and the real App are the soak test's; each server start costs seconds here.
    report = run_bench(tmp_path, "--skip-memory", "--servers", "fixed", "--rpcs", "batch,check")
    assert {r["rpc"] for r in report["load"]} == {"batch", "check"}
    assert all(r["completed"] > 0 and not r["errors"] for r in report["load"])


@pytest.mark.slow
def test_soak_mode_samples_rss_and_buckets_latency(tmp_path):
    soak_args = "--mode soak --minutes 0.02 --soak-rate 40 --rss-every 0.2 --bucket 0.6"
    soak = run_bench(tmp_path, *soak_args.split())["soak"]
    assert soak["errors_total"] == 0
    assert len(soak["buckets"]) == 2
    assert soak["open"]["completed"] > 0
    assert len(soak["open"]["rss"]) >= 3


@pytest.mark.slow
def test_replay_digest_is_the_same_for_the_same_tree():
    # The before/after check for changes that must not change decisions: two runs of one
    # tree must agree, or comparing two trees would mean nothing.
    def digest() -> str:
        done = subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "replay_digest.py"),
                "--requests",
                "600",
                "--place-every",
                "100",
                "--refit-every",
                "300",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        lines = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())
        assert {"responses", "errors", "events", "state", "all"} <= set(lines)
        return lines["all"]

    assert digest() == digest()


@pytest.mark.slow
def test_score_breakdown_runs_every_variant():
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "score_breakdown.py"),
            "--rounds",
            "1",
            "--warmup",
            "0.2",
            "--measure",
            "0.5",
            "--clients",
            "1",
            "--concurrency",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for variant in ("noop", "app-constant", "app-convert", "app", "app-steps"):
        assert f" {variant} " in done.stdout
    assert "app-steps steps, thread CPU" in done.stdout
