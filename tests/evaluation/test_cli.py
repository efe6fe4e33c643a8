"""The simulate → replay → evaluate commands through ``register``, and their bad-input paths:
one clear line on stderr, a non-zero exit, never a traceback."""

import argparse
import json

import pytest

from ringfence.service.evaluation.cli import register


def run(*argv):
    parser = argparse.ArgumentParser(prog="ringfence")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_newcomer_walkthrough(tmp_path, capsys):
    events, decisions = tmp_path / "sim" / "events.jsonl", tmp_path / "sim" / "decisions.jsonl"
    assert run("simulate", "-o", events, "--scale", "0.1", "--days", "0.5", "--seed", "5") == 0
    summary = json.loads(capsys.readouterr().err)
    assert summary["events"] > 300 and summary["attack_accounts"] > 0
    assert (tmp_path / "sim" / "geo" / "GeoLite2-ASN.mmdb").is_file()
    assert run("replay", events, "--geo-dir", tmp_path / "sim" / "geo", "-o", decisions) == 0
    stats = json.loads(capsys.readouterr().err)
    assert stats["decisions"] == summary["events"] == len(decisions.read_text().splitlines())
    assert run("evaluate", decisions) == 0
    out = capsys.readouterr().out
    assert "* ringfence" in out and "account_100_per_day" in out and "ip_300_per_hour" in out
    report = json.loads((tmp_path / "sim" / "report.json").read_text())
    assert set(report["systems"]) == {"ringfence", "account_100_per_day", "ip_300_per_hour",
                                      "ringfence_without_clustering"}
    html = (tmp_path / "sim" / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html and "<script" not in html


def test_gzip_files_and_a_policy_file(tmp_path, capsys):
    events, decisions = tmp_path / "e.jsonl.gz", tmp_path / "d.jsonl.gz"
    policy = tmp_path / "policy.toml"
    policy.write_text('version = "strict-1"\n[thresholds]\nthrottle = 0.3\n')
    assert run("simulate", "-o", events, "--scale", "0.1", "--days", "0.3") == 0
    assert run("replay", events, "-o", decisions, "--policy", policy, "--no-clustering",
               "--account-limit", "5", "--ip-limit", "50") == 0
    assert run("evaluate", decisions, "-o", tmp_path / "report") == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(report["systems"]) == {"ringfence", "account_5_per_day", "ip_50_per_hour"}
    capsys.readouterr()


@pytest.mark.parametrize(("command", "content", "message"), [
    ("replay", None, "events file not found"),
    ("replay", "", "no events in the input"),
    ("replay", '{"accountId": "a", "clientIp": "10.0.0.1", "context": {"eventTime": '
               '"2026-04-22T00:00:00Z"}}\n{"accountId": \n', ":2: not valid JSON"),
    ("replay", '{"accountId": "a", "clientIp": "nope", "context": {"eventTime": '
               '"2026-04-22T00:00:00Z"}}\n', ":1: invalid request: client_ip: is not an IPv4"),
    ("evaluate", None, "decisions file not found"),
    ("evaluate", "\n", "no decisions in the input"),
    ("evaluate", '{"account": "a", "t": 1, "score": 0.1, "policy_action": "ALLOW"}\n[]\n',
     ":2: not a JSON object"),
])
def test_bad_input_is_one_line_on_stderr(tmp_path, capsys, command, content, message):
    path = tmp_path / "input.jsonl"
    if content is not None:
        path.write_text(content)
    args = [command, path, "-o", tmp_path / "out.jsonl"] if command == "replay" else [
        command, path]
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith(f"ringfence {command}: ")
    assert "Traceback" not in err and err.count("\n") == 1


def test_broken_gzip_and_bad_policy_are_reported(tmp_path, capsys):
    fake = tmp_path / "e.jsonl.gz"
    fake.write_text("this is not gzip\n")
    assert run("replay", fake, "-o", tmp_path / "d.jsonl") == 2
    assert "cannot read or write a file" in capsys.readouterr().err
    events = tmp_path / "e.jsonl"
    events.write_text('{"accountId": "a", "clientIp": "10.0.0.1", "context": {"eventTime": '
                      '"2026-04-22T00:00:00Z"}}\n')
    policy = tmp_path / "p.toml"
    policy.write_text("[thresholds]\nthrottle = 2\n")
    assert run("replay", events, "-o", tmp_path / "d.jsonl", "--policy", policy) == 2
    assert "invalid policy: thresholds" in capsys.readouterr().err
    policy.write_text("[thresholds\n")
    assert run("replay", events, "-o", tmp_path / "d.jsonl", "--policy", policy) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert run("replay", events, "-o", tmp_path / "d.jsonl", "--geo-dir", tmp_path / "no") == 2
    assert "geo directory not found" in capsys.readouterr().err


def test_unreachable_target_exits_1(tmp_path, capsys):
    events = tmp_path / "e.jsonl"
    events.write_text('{"accountId": "a", "clientIp": "10.0.0.1", "context": {"eventTime": '
                      '"2026-04-22T00:00:00Z"}}\n')
    assert run("replay", events, "-o", tmp_path / "d.jsonl", "--target", "127.0.0.1:1",
               "--speed", "1000") == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    for argv in (["simulate", "-o", "x", "--scale", "0"], ["simulate", "-o", "x", "--preset",
                                                            "huge"], ["replay"]):
        with pytest.raises(SystemExit) as exc:
            run(*argv)
        assert exc.value.code == 2
    capsys.readouterr()
