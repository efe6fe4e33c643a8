"""The ``simulate``, ``replay`` and ``evaluate`` subcommands (hooked into ``ringfence`` by
``register``). Handlers return an exit code: 0 done, 2 bad input (the message names the file,
line and field), 1 the server could not be used. Input problems never print a traceback."""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import IO

from ringfence.service.adapters.geoip import GeoIpError
from ringfence.service.app import load_policy
from ringfence.service.core.errors import InvalidInput
from ringfence.service.evaluation.baselines import default_baselines
from ringfence.service.evaluation.events import EventFormatError, open_text, read_events
from ringfence.service.evaluation.metrics import RINGFENCE, evaluate_file
from ringfence.service.evaluation.remote import MAX_CHUNK, RemoteError, RemoteReplay
from ringfence.service.evaluation.replay import DecisionRecord, create_compared
from ringfence.service.evaluation.report import render_html
from ringfence.service.evaluation.scenario import PRESETS, preset
from ringfence.service.evaluation.simulator import write_simulation

Handler = Callable[[argparse.Namespace], int]


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``simulate``, ``replay`` and ``evaluate`` to a ``ringfence`` subparsers object."""
    sim = subparsers.add_parser(
        "simulate", help="write labelled, incident-shaped traffic (JSON Lines) and its .mmdb set",
        description="Writes a seeded simulation: honest populations and attack campaigns shaped "
                    "like the incident, one ScoreRequest (protobuf JSON) per line plus label, "
                    "campaign, group and segment. See docs/evaluation.md.")
    sim.add_argument("-o", "--output", required=True,
                     help="events file ('-' for stdout; a .gz name compresses)")
    sim.add_argument("--preset", choices=sorted(PRESETS), default="ci",
                     help="ci: ~1,000 honest + 240 fleet accounts over 2 days (default); "
                          "incident: 25,000 fleet accounts, 28.8M fleet queries, 45 days")
    sim.add_argument("--scale", type=_positive(float), default=1.0,
                     help="multiply every account count of the preset (e.g. 0.05 = 1/20)")
    sim.add_argument("--days", type=_positive(float), help="simulated days (preset's default)")
    sim.add_argument("--seed", type=int, help="random seed (preset's default)")
    sim.add_argument("--geo-dir", type=Path,
                     help="where to write the .mmdb set (default: 'geo' beside the output)")
    sim.set_defaults(func=_simulate)

    rep = subparsers.add_parser(
        "replay", help="score events through ringfence in event time and record every decision",
        description="Feeds events through the whole scoring pipeline in process with a clock set "
                    "to each event's time (or, with --target, to a running server over gRPC) "
                    "and writes one decision per line, with the baselines' verdicts.")
    rep.add_argument("events", help="events file (JSON Lines, .gz or '-')")
    rep.add_argument("-o", "--output", required=True, help="decisions file ('-' for stdout)")
    rep.add_argument("--geo-dir", type=Path,
                     help="directory of .mmdb files (e.g. the one simulate wrote)")
    rep.add_argument("--policy", type=Path, help="policy TOML (default policy if not given)")
    rep.add_argument("--skip-invalid", action="store_true",
                     help="skip (and count) events the server would reject instead of stopping")
    rep.add_argument("--account-limit", type=_positive(int), default=100,
                     help="per-account baseline: requests per UTC day (default 100)")
    rep.add_argument("--ip-limit", type=_positive(int), default=300,
                     help="per-IP baseline: requests per hour (default 300)")
    rep.add_argument("--no-clustering", action="store_true",
                     help="score accounts alone (in process; clustering is on by default)")
    rep.add_argument("--no-compare", action="store_true",
                     help="do not also score ringfence without clustering for comparison")
    rep.add_argument("--target", help="host:port of a running server: replay over gRPC "
                                      "(times shifted to now, paced; see --speed)")
    rep.add_argument("--speed", type=_positive(float), default=1.0,
                     help="with --target: simulated seconds per wall second (default 1)")
    rep.add_argument("--chunk", type=_positive(int), default=500,
                     help=f"with --target: requests per ScoreBatch (1..{MAX_CHUNK})")
    rep.set_defaults(func=_replay)

    ev = subparsers.add_parser(
        "evaluate", help="detection metrics and an HTML report from a decisions file",
        description="Computes per-account precision/recall/FPR, ROC/PR, time to enforce, "
                    "leakage, collateral and cluster purity for ringfence and the baselines, "
                    "and writes report.json and report.html.")
    ev.add_argument("decisions", help="decisions file written by replay")
    ev.add_argument("-o", "--output-dir", type=Path,
                    help="where to write report.json and report.html (default: beside the "
                         "decisions file)")
    ev.set_defaults(func=_evaluate)


def _fail(command: str, message: str, code: int = 2) -> int:
    print(f"ringfence {command}: {message}", file=sys.stderr)
    return code


def _guarded(command: str, run: Callable[[], int]) -> int:
    """Turns every expected input problem into one line on stderr and an exit code."""
    try:
        return run()
    except EventFormatError as exc:
        return _fail(command, str(exc))
    except RemoteError as exc:
        return _fail(command, str(exc), 1)
    except InvalidInput as exc:
        return _fail(command, f"invalid policy: {exc}")
    except tomllib.TOMLDecodeError as exc:
        return _fail(command, f"policy file is not valid TOML: {exc}")
    except GeoIpError as exc:
        return _fail(command, str(exc))
    except FileNotFoundError as exc:
        return _fail(command, f"file not found: {exc.filename or exc}")
    except UnicodeDecodeError:
        return _fail(command, "input is not UTF-8 text")
    except (OSError, EOFError) as exc:  # unreadable files, bad or truncated gzip
        return _fail(command, f"cannot read or write a file: {exc}")
    except ValueError as exc:
        return _fail(command, str(exc))


def _simulate(args: argparse.Namespace) -> int:
    def run() -> int:
        config = preset(args.preset)
        if args.scale != 1.0:
            config = config.scaled(args.scale)
        if args.days is not None:
            config = config.with_days(args.days)
        if args.seed is not None:
            config = replace(config, seed=args.seed)
        out = args.output
        geo_dir = args.geo_dir or (Path("geo") if out == "-" else Path(out).parent / "geo")
        if out != "-":
            Path(out).parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        summary = write_simulation(config, out, geo_dir)
        seconds = time.perf_counter() - started
        print(json.dumps({"events_file": out, "geo_dir": str(geo_dir), **summary.to_dict(),
                          "seconds": round(seconds, 2),
                          "events_per_second": round(summary.events / seconds) if seconds
                          else None}), file=sys.stderr)
        return 0
    return _guarded("simulate", run)


def _replay(args: argparse.Namespace) -> int:
    def run() -> int:
        if args.events != "-" and not Path(args.events).is_file():
            return _fail("replay", f"events file not found: {args.events}")
        if args.target and args.chunk > MAX_CHUNK:
            return _fail("replay", f"--chunk must be at most {MAX_CHUNK}")
        baselines = default_baselines(args.account_limit, args.ip_limit)
        events = read_events(args.events)
        started = time.perf_counter()
        count = 0
        if args.output != "-":
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        if args.target:
            remote = RemoteReplay(args.target, speed=args.speed, chunk=args.chunk,
                                  baselines=baselines, skip_invalid=args.skip_invalid,
                                  source=args.events)
            with open_text(args.output, "w") as out:
                count = _write(remote.run(events), out)
            skipped = remote.errors
        else:
            policy = load_policy(args.policy)
            with create_compared(geo_dir=args.geo_dir, policy=policy, baselines=baselines,
                                 clustering=not args.no_clustering,
                                 compare=not args.no_compare) as replay, \
                    open_text(args.output, "w") as out:
                count = _write(replay.run(events, skip_invalid=args.skip_invalid,
                                          source=args.events), out)
                skipped = replay.invalid
        seconds = time.perf_counter() - started
        print(json.dumps({"decisions_file": args.output, "decisions": count,
                          "skipped_invalid": skipped, "seconds": round(seconds, 2),
                          "events_per_second": round(count / seconds) if seconds else None}),
              file=sys.stderr)
        return 0
    return _guarded("replay", run)


def _write(records: Iterable[DecisionRecord], out: IO[str]) -> int:
    count = 0
    for record in records:
        out.write(record.to_json() + "\n")
        count += 1
    return count


def _evaluate(args: argparse.Namespace) -> int:
    def run() -> int:
        path = Path(args.decisions)
        if args.decisions != "-" and not path.is_file():
            return _fail("evaluate", f"decisions file not found: {args.decisions}")
        ev = evaluate_file(args.decisions)
        out_dir = args.output_dir or (Path(".") if args.decisions == "-" else path.parent)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(ev, indent=1) + "\n")
        (out_dir / "report.html").write_text(render_html(ev))
        for name, s in ev["systems"].items():
            acc, req, tte = s["accounts"], s["requests"], s["time_to_enforce_h"]
            marker = "*" if name == RINGFENCE else " "
            median = "never" if tte["median"] is None else f"{tte['median']:.2f} h"
            print(f"{marker} {name:24} recall {_fmt(acc['recall'])}  FPR {_fmt(acc['fpr'], 2)}  "
                  f"leakage {_fmt(req['leakage'])}  TTE median {median}")
        print(f"wrote {out_dir / 'report.json'} and {out_dir / 'report.html'}")
        return 0
    return _guarded("evaluate", run)


def _fmt(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"
