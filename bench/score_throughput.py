"""Load, tracked-accounts and soak figures for ringfence's request path (not a test).

Three modes, each bounded in phases and seconds, each printing figures (``--json`` writes them
all) and checking nothing:

* ``load`` (the default; ``make bench``): closed loop against three servers on the same
  grpc.aio settings, each in its own process, loaded by several client processes over
  127.0.0.1: a no-op servicer, a plain per-account fixed-window limiter (the baseline a user
  would otherwise run) and the real App; for Score, ScoreBatch (``--batch-size`` items a call)
  and Envoy's ext_authz Check. Rounds alternate the server order so drift on a shared machine
  hits all of them; the summary gives ratios to the no-op and to the fixed-window server. Then
  an open loop (fixed send rate) against Score at half its best closed-loop throughput, and
  memory per tracked account in process (bench/account_memory.py).
* ``accounts``: the real App preloaded with 10k, 100k (and, if asked, 1M) tracked accounts
  (synthetic requests fed through its engine before it serves), then the closed loop on Score:
  throughput and CPU per request at each size (should stay flat), RSS per tracked account.
* ``soak``: the real App at about half of its closed-loop Score throughput (open loop) for
  ``--minutes``: RSS sampled every few seconds and its least-squares slope after warm-up,
  errors, and latency percentiles per minute.

Run: ``make bench`` / ``make soak`` (or ``.venv/bin/python bench/score_throughput.py --help``);
docs/benchmarks.md has the figures and what each one means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from statistics import median
from typing import Any

import account_memory
import loadgen
from harness import (
    Children,
    Server,
    client_group,
    drive,
    machine,
    pct,
    recv,
    rss_bytes,
    running_server,
    slope_per_minute,
)
from servers import KINDS, stalls_between

from ringfence.service.settings import Settings

TARGET_RATIO = 0.6
TARGET_P99_HALF_LOAD_MS = 5.0
TARGET_BYTES_PER_ACCOUNT = 2048
KIND_NAMES = {"noop": "no-op", "fixed": "fixed-window", "score": "ringfence"}
MiB = 2**20


def _csv(choices: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {choices}")
        return list(dict.fromkeys(items))

    return parse


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(x)) for x in text.replace("_", "").split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 10000,100000: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("tracked-account counts must be at least 1")
    return sizes


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option; the module docstring kept as written."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=_HelpFormatter,
        epilog="Examples: make bench (load); make soak (10 min); --mode accounts "
        "--tracked 10000,100000,1000000; smoke runs: --rounds 1 --warmup 1 --measure 2 "
        "--skip-memory, --mode soak --minutes 1.",
    )
    p.add_argument(
        "--mode",
        choices=("load", "accounts", "soak"),
        default="load",
        help="load: no-op vs fixed-window vs ringfence for Score/ScoreBatch/Check "
        "(+ open loop + memory); accounts: Score cost with 10k/100k/1M tracked "
        "accounts; soak: --minutes at half of max throughput",
    )
    g = p.add_argument_group("closed loop (all modes)")
    g.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds; each starts fresh server processes, in alternating order",
    )
    g.add_argument("--warmup", type=float, default=4.0, help="seconds before measuring")
    g.add_argument("--measure", type=float, default=12.0, help="measurement window, seconds")
    g.add_argument("--clients", type=int, default=2, help="client processes")
    g.add_argument("--concurrency", type=int, default=16, help="calls in flight per client process")
    g.add_argument(
        "--start-delay",
        type=float,
        default=1.0,
        help="seconds between releasing the clients and their common start time",
    )
    g = p.add_argument_group("load mode")
    g.add_argument(
        "--rpcs",
        type=_csv(tuple(loadgen.METHODS)),
        default=list(loadgen.METHODS),
        help="RPCs to load: score (Score), batch (ScoreBatch), check (Envoy Check)",
    )
    g.add_argument(
        "--servers",
        type=_csv(KINDS),
        default=list(KINDS),
        help="noop, fixed (per-account fixed-window limiter), score (the real App)",
    )
    g.add_argument("--batch-size", type=int, default=16, help="ScoreBatch items per call")
    g.add_argument(
        "--open-rate",
        type=float,
        default=None,
        help="open loop req/s in all (default: half of Score's best closed loop)",
    )
    g.add_argument("--open-measure", type=float, default=15.0, help="open loop window, seconds")
    g.add_argument("--skip-open", action="store_true", help="no open loop")
    g.add_argument(
        "--open-noop",
        action="store_true",
        help="also run the open loop against a no-op server at the same rate: "
        "the latency floor of gRPC and this harness on this machine",
    )
    g.add_argument(
        "--skip-throughput", action="store_true", help="no closed or open loop (memory only)"
    )
    g = p.add_argument_group("memory per tracked account, in process (load mode)")
    g.add_argument("--memory-accounts", type=int, default=100_000)
    g.add_argument(
        "--traced-accounts",
        type=int,
        default=5_000,
        help="further accounts fed under tracemalloc (0: skip)",
    )
    g.add_argument("--skip-memory", action="store_true")
    g = p.add_argument_group("accounts mode")
    g.add_argument(
        "--tracked",
        type=_sizes,
        default=[10_000, 100_000],
        help="tracked accounts preloaded into the server, comma-separated (e.g. "
        "10000,100000,1000000; 1M takes several GB and minutes of prefill)",
    )
    g = p.add_argument_group("soak mode")
    g.add_argument("--minutes", type=float, default=10.0, help="soak duration")
    g.add_argument(
        "--soak-rate",
        type=float,
        default=None,
        help="req/s in all (default: half of a closed-loop Score measurement "
        "on the same server, --warmup + --measure seconds first)",
    )
    g.add_argument("--rss-every", type=float, default=5.0, help="RSS sampling period, seconds")
    g.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds at the start left out of the RSS slope (default: a third "
        "of the soak, at most 120)",
    )
    g.add_argument(
        "--bucket",
        type=float,
        default=60.0,
        help="seconds per latency/error bucket (one line each)",
    )
    g = p.add_argument_group("workload")
    g.add_argument("--accounts", type=int, default=10_000)
    g.add_argument("--devices", type=int, default=3_000)
    g.add_argument("--ips", type=int, default=4_000)
    g.add_argument(
        "--pool",
        type=int,
        default=20_000,
        help="distinct pre-serialized requests per client process and RPC",
    )
    g.add_argument("--seed", type=int, default=7, help="population seed")
    g = p.add_argument_group("process placement and output")
    g.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin each server to the first usable CPU and the clients to the "
        "others (needs 2+ CPUs): one core per server, steadier figures",
    )
    g.add_argument(
        "--server-cpus",
        type=_cpus,
        default=None,
        metavar="LIST",
        help="pin every server to these CPUs (e.g. 0,1 or 0-1) instead of the first usable "
        "one; the clients get --client-cpus, or every other usable CPU",
    )
    g.add_argument(
        "--client-cpus",
        type=_cpus,
        default=None,
        metavar="LIST",
        help="pin the client processes to these CPUs (with --server-cpus)",
    )
    g.add_argument(
        "--score-setting",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        type=_setting,
        help="a Settings field for the ringfence server, e.g. clustering=false (repeatable)",
    )
    g.add_argument(
        "--stall-monitor",
        action="store_true",
        help="record event-loop stalls in the servers and where the loop was",
    )
    g.add_argument("--json", type=Path, default=None, help="also write all figures here")
    args = p.parse_args(argv)
    for name in (
        "rounds",
        "clients",
        "concurrency",
        "accounts",
        "devices",
        "ips",
        "pool",
        "batch_size",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.measure <= 0 or args.open_measure <= 0 or args.start_delay < 0:
        p.error("--warmup/--start-delay must be >= 0 and --measure/--open-measure > 0")
    if args.minutes <= 0 or args.rss_every <= 0 or args.bucket <= 0:
        p.error("--minutes, --rss-every and --bucket must be > 0")
    return args


def _cpus(text: str) -> frozenset[int]:
    """``0,1`` or ``2-9`` or a mix, as taskset -c takes them."""
    out: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return frozenset(out)


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or name not in Settings.model_fields:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with a Settings field name, got {text!r}"
        )
    return name, value


# ---------------------------------------------------------------- shared set-up


class Bench:
    """What every mode needs: the child processes, CPU placement, the base client spec."""

    def __init__(self, args: argparse.Namespace, children: Children, data_root: Path) -> None:
        self.args = args
        self.children = children
        self.data_root = data_root
        usable = sorted(os.sched_getaffinity(0))
        self.server_cpus = {usable[0]} if args.pin and len(usable) > 1 else None
        self.client_cpus = frozenset(usable[1:]) if self.server_cpus else None
        if args.server_cpus:
            self.server_cpus = set(args.server_cpus)
            self.client_cpus = frozenset(args.client_cpus or set(usable) - self.server_cpus)
        self.spec = loadgen.LoadSpec(
            mode="closed",
            warmup_s=args.warmup,
            measure_s=args.measure,
            concurrency=args.concurrency,
            pool_size=args.pool,
            population_seed=args.seed,
            accounts=args.accounts,
            devices=args.devices,
            ips=args.ips,
            batch_size=args.batch_size,
        )
        self.phase_s = args.start_delay + args.warmup + args.measure
        self._servers = 0

    def settings(self, kind: str, **overrides: Any) -> Settings:
        self._servers += 1
        extra = {**overrides, **dict(self.args.score_setting)} if kind == "score" else {}
        return Settings(
            **{
                **extra,
                "host": "127.0.0.1",
                "port": 0,
                "persist": True,
                "data_dir": self.data_root / f"{kind}-{self._servers}",
            }
        )

    @contextlib.contextmanager
    def server(
        self, kind: str, lifetime_s: float, prefill: int = 0, **overrides: Any
    ) -> Iterator[Server]:
        with running_server(
            self.children,
            kind,
            self.settings(kind, **overrides),
            lifetime_s + 300,
            self.server_cpus,
            self.args.stall_monitor,
            prefill=prefill,
            start_timeout_s=120 + prefill * 0.004,
        ) as server:
            yield server

    def clients(self, rpcs: tuple[str, ...]) -> Any:
        return client_group(
            self.children, replace(self.spec, rpcs=rpcs), self.args.clients, self.client_cpus
        )


def _ordered(items: list[Any], rnd: int) -> list[Any]:
    """Odd rounds in the given order, even rounds reversed: drift hits every item alike."""
    return list(items) if rnd % 2 else list(reversed(items))


def _drop_samples(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if not k.startswith("_")}


# ---------------------------------------------------------------- load mode


def load(b: Bench, report: dict[str, Any]) -> None:
    args = b.args
    rpcs = tuple(args.rpcs)
    rows: list[dict[str, Any]] = []
    report["load"] = rows
    lifetime = len(rpcs) * b.phase_s + args.open_measure + args.warmup + 60
    want_open = not args.skip_open and "score" in args.servers and "score" in rpcs
    print(
        f"\nClosed loop: {args.clients} client processes × {args.concurrency} calls in "
        f"flight, {args.warmup:g} s warm-up + {args.measure:g} s window per phase; "
        f"ScoreBatch {args.batch_size} items a call; latencies in ms (per call):",
        flush=True,
    )
    with b.clients(rpcs) as group:
        for rnd in range(1, args.rounds + 1):
            for kind in _ordered(args.servers, rnd):
                phase_started = time.monotonic()
                mine: list[dict[str, Any]] = []
                with b.server(kind, lifetime) as server:
                    for rpc in rpcs:
                        r = drive(
                            group, server, replace(b.spec, rpc=rpc), start_delay_s=args.start_delay
                        )
                        r.update(kind=kind, round=rnd)
                        print_closed(r)
                        mine.append(r)
                    if want_open and kind == "score" and rnd == args.rounds:
                        best = max(
                            r["rps"]
                            for r in [*rows, *mine]
                            if r["kind"] == "score" and r["rpc"] == "score"
                        )
                        rate = args.open_rate or best / 2
                        open_spec = replace(
                            b.spec,
                            rpc="score",
                            mode="open",
                            measure_s=args.open_measure,
                            rate=rate / args.clients,
                        )
                        report["open"] = drive(
                            group, server, open_spec, start_delay_s=args.start_delay
                        )
                        report["open"]["best_score_rps"] = best
                for r in mine:
                    r["server_stats"] = server.stats
                if (
                    kind == "score"
                    and "open" in report
                    and server.stats.get("timed_stalls") is not None
                    and "server_stalls" not in report["open"]
                ):
                    report["open"]["server_stalls"] = stalls_between(
                        server.stats, *report["open"]["window_monotonic"]
                    )
                for key in ("timed_stalls", "timed_samples"):
                    server.stats.pop(key, None)
                rows.extend(mine)
                if server.stats:
                    print_stats(server.stats)
                print(
                    f"      ({KIND_NAMES[kind]} server: "
                    f"{time.monotonic() - phase_started:.0f} s with process start and stop)",
                    flush=True,
                )
        if "open" in report:
            print_open(report["open"])
        if "open" in report and args.open_noop:
            open_spec = replace(
                b.spec,
                rpc="score",
                mode="open",
                measure_s=args.open_measure,
                rate=report["open"]["target_rps"] / args.clients,
            )
            with b.server("noop", lifetime) as server:
                report["open_noop"] = drive(
                    group, server, open_spec, start_delay_s=args.start_delay
                )
            print_open(report["open_noop"], "no-op")


# ---------------------------------------------------------------- accounts mode


def accounts(b: Bench, report: dict[str, Any]) -> None:
    """Score with N tracked accounts preloaded, N from --tracked; a no-op phase each round
    shows how the machine drifted. Clustering is off unless --score-setting turns it on: a
    refit over N accounts (minutes at 200k, docs/benchmarks-clustering.md) would land in the
    window and measure the refit, not the request path. The in-memory bounds are raised above
    N so no tracked account is evicted."""
    args = b.args
    rows: list[dict[str, Any]] = []
    report["accounts"] = rows
    print(
        f"\nTracked accounts: the ringfence server is preloaded with N synthetic accounts "
        f"(one request each through to_observation + engine.score, own device and /24; "
        f"then checkpointed, flushed and gc'd), then Score in a closed loop "
        f"({args.clients} clients × {args.concurrency}, {args.warmup:g} + {args.measure:g} "
        f"s). Clustering off unless --score-setting clustering=true.",
        flush=True,
    )
    with b.clients(("score",)) as group:
        for rnd in range(1, args.rounds + 1):
            for size in [0, *_ordered(args.tracked, rnd)]:
                kind = "score" if size else "noop"
                bound = max(1_000_000, int(size * 1.2) + args.accounts * 2)
                started = time.monotonic()
                with b.server(
                    kind,
                    b.phase_s + 60,
                    prefill=size,
                    **{
                        "clustering": False,
                        "max_accounts_in_memory": bound,
                        "max_shared_in_memory": bound,
                    },
                ) as server:
                    ready_s = time.monotonic() - started
                    r = drive(
                        group, server, replace(b.spec, rpc="score"), start_delay_s=args.start_delay
                    )
                    r["rss_after_phase"] = rss_bytes(server.pid)
                r.update(
                    kind=kind,
                    round=rnd,
                    tracked=size,
                    ready_s=ready_s,
                    **server.ready,
                    server_stats=server.stats,
                )
                rows.append(r)
                print_tracked(r)


# ---------------------------------------------------------------- soak mode


def soak(b: Bench, report: dict[str, Any]) -> None:
    args = b.args
    duration = args.minutes * 60
    settle = args.settle if args.settle is not None else min(120.0, duration / 3)
    out: dict[str, Any] = {
        "minutes": args.minutes,
        "settle_s": settle,
        "rss_every_s": args.rss_every,
        "bucket_s": args.bucket,
    }
    report["soak"] = out
    with b.clients(("score",)) as group, b.server("score", b.phase_s + duration + 60) as server:
        if args.soak_rate:
            rate = args.soak_rate
        else:
            closed = drive(
                group, server, replace(b.spec, rpc="score"), start_delay_s=args.start_delay
            )
            closed.update(kind="score", round=1)
            print("\nClosed loop on the soak's server, to find its max:")
            print_closed(closed)
            out["closed"] = closed
            rate = closed["rps"] / 2
        out["rate"] = rate
        print(
            f"\nSoak: open loop against ringfence Score at {rate:.0f} req/s for "
            f"{args.minutes:g} min; server RSS every {args.rss_every:g} s, slope after "
            f"{settle:g} s; one line per {args.bucket:g} s:",
            flush=True,
        )
        spec = replace(
            b.spec,
            rpc="score",
            mode="open",
            warmup_s=0.0,
            measure_s=duration,
            rate=rate / args.clients,
        )
        r = drive(
            group,
            server,
            spec,
            start_delay_s=args.start_delay,
            rss_every_s=args.rss_every,
            keep_samples=True,
        )
    if server.stats.get("timed_stalls") is not None:
        r["server_stalls"] = stalls_between(server.stats, *r["window_monotonic"])
    r["server_stats"] = _untimed(server.stats)
    out["open"] = r
    out["buckets"] = buckets(r, duration, args.bucket)
    rss = r["rss"]
    steady = [(t, srv / MiB) for t, srv, _ in rss if t >= settle]
    out["rss_slope_mib_per_min"] = slope_per_minute(steady)
    out["rss_children_slope_mib_per_min"] = slope_per_minute(
        [(t, kids / MiB) for t, _, kids in rss if t >= settle]
    )
    out["rss_samples_in_slope"] = len(steady)
    out["rss_first_mib"] = rss[0][1] / MiB if rss else float("nan")
    out["rss_at_settle_mib"] = steady[0][1] if steady else float("nan")
    out["rss_end_mib"] = rss[-1][1] / MiB if rss else float("nan")
    out["rss_max_mib"] = max(srv for _, srv, _ in rss) / MiB if rss else float("nan")
    out["errors_total"] = sum(r["errors"].values()) + r["skipped"]
    p99s = [x["p99_ms"] for x in out["buckets"] if x["completed"]]
    out["p99_per_bucket"] = {
        "min": min(p99s, default=float("nan")),
        "median": median(p99s) if p99s else float("nan"),
        "max": max(p99s, default=float("nan")),
    }
    out["open"] = _drop_samples(r)
    print_soak(out)


def buckets(r: dict[str, Any], duration: float, width: float) -> list[dict[str, Any]]:
    """Latency percentiles, errors and the server's last RSS per ``width`` seconds."""
    n = max(1, int(-(-duration // width)))
    lat: list[list[float]] = [[] for _ in range(n)]
    for t, x in zip(r["_times"], r["_latencies"], strict=True):
        lat[min(n - 1, max(0, int(t // width)))].append(x)
    errs = [0] * n
    for t in r["_error_times"]:
        errs[min(n - 1, max(0, int(t // width)))] += 1
    rss: list[int] = [0] * n
    for t, srv, _ in r.get("rss", []):
        if t >= 0:
            rss[min(n - 1, int(t // width))] = srv
    out = []
    for i in range(n):
        ordered = sorted(lat[i])
        span = min(width, duration - i * width)
        out.append(
            {
                "start_s": i * width,
                "completed": len(ordered),
                "rps": len(ordered) / span if span > 0 else 0.0,
                "p50_ms": pct(ordered, 50),
                "p99_ms": pct(ordered, 99),
                "p999_ms": pct(ordered, 99.9),
                "max_ms": ordered[-1] * 1e3 if ordered else float("nan"),
                "errors": errs[i],
                "rss_mib": rss[i] / MiB,
            }
        )
    return out


# ---------------------------------------------------------------- memory (load mode)


def memory(args: argparse.Namespace, children: Children, report: dict[str, Any]) -> None:
    variants = ("distinct", "account_only")
    parallel = len(os.sched_getaffinity(0)) >= 2
    phase_started = time.monotonic()
    results: dict[str, Any] = {}
    started: list[tuple[str, SpawnProcess, Connection]] = []
    try:
        for variant in variants:
            mine, theirs = children.ctx.Pipe()
            proc = children.start(
                account_memory.run,
                variant,
                args.memory_accounts,
                args.traced_accounts,
                None,
                theirs,
            )
            theirs.close()
            started.append((variant, proc, mine))
            if not parallel:
                results[variant] = _memory_result(variant, proc, mine)
        for variant, proc, conn in started:
            if variant not in results:
                results[variant] = _memory_result(variant, proc, conn)
    finally:
        aborting = sys.exc_info()[0] is not None
        for _, proc, conn in started:
            conn.close()
            children.reap(proc, 0.5 if aborting else 5)
    report["memory"] = results
    report["memory_phase_s"] = time.monotonic() - phase_started
    print_memory(results)
    print(f"  (phase took {report['memory_phase_s']:.0f} s)", flush=True)


def _memory_result(variant: str, proc: SpawnProcess, conn: Connection) -> dict[str, Any]:
    message = recv(conn, proc, 900)
    if message[0] != "result":
        raise RuntimeError(f"memory run {variant} failed: {message}")
    return message[1]


# ---------------------------------------------------------------- printing


def _untimed(stats: dict[str, Any]) -> dict[str, Any]:
    """A server's stats without the stall monitor's timed lists (large; used per window)."""
    return {k: v for k, v in stats.items() if not k.startswith("timed_")}


def print_stats(stats: dict[str, Any]) -> None:
    plain = {k: v for k, v in _untimed(stats).items() if k != "stall_samples"}
    print("      server after stop: " + ", ".join(f"{k}={v}" for k, v in plain.items()))
    for where, ms in stats.get("stall_samples", []):
        print(f"        stalled ~{ms} ms in {where}")


def _rpc(r: dict[str, Any]) -> str:
    return loadgen.RPC_NAMES[r["rpc"]]


def _rate(r: dict[str, Any]) -> str:
    if r["items_per_call"] > 1:
        return f"{r['items_per_s']:8.0f} items/s ({r['rps']:.0f} calls/s)"
    return f"{r['rps']:8.0f} req/s"


def print_closed(r: dict[str, Any]) -> None:
    errors = f"  errors={r['errors']}" if r["errors"] else ""
    unit = "item" if r["items_per_call"] > 1 else "req"
    print(
        f"  round {r['round']} {KIND_NAMES[r['kind']]:<12} {_rpc(r):<10} {_rate(r)}  "
        f"p50 {r['p50_ms']:6.2f}  p99 {r['p99_ms']:6.2f}  p99.9 {r['p999_ms']:6.2f} ms  "
        f"server {r['server_cores']:.2f} cores ({r['server_us_per_item']:.0f} µs CPU/{unit}; "
        f"main thread {r['server_main_thread_cores']:.2f}, others "
        f"{r['server_other_threads_cores']}{_children(r)})  "
        f"clients {r['clients_cores']:.2f} cores  "
        f"machine {r['machine_busy']:.0%} busy, steal {r['steal']:.0%}{errors}",
        flush=True,
    )


def print_tracked(r: dict[str, Any]) -> None:
    errors = f"  errors={r['errors']}" if r["errors"] else ""
    if r["kind"] == "noop":
        head = f"  round {r['round']} no-op (reference)     "
    else:
        head = f"  round {r['round']} {r['tracked']:>9,} tracked       "
    print(
        f"{head}{r['rps']:7.0f} req/s  p50 {r['p50_ms']:6.2f}  p99 {r['p99_ms']:6.2f}  "
        f"p99.9 {r['p999_ms']:6.2f} ms  server {r['server_cores']:.2f} cores "
        f"({r['server_us_per_req']:.0f} µs CPU/req)  machine {r['machine_busy']:.0%} busy"
        f"{errors}",
        flush=True,
    )
    if r["kind"] == "score":
        print(
            f"      prefill {r['prefill_s']:.0f} s ({r['prefill_us_per_account']:.0f} µs/account "
            f"fed); RSS {r['rss_before_prefill'] / MiB:.0f} → "
            f"{r['rss_after_prefill'] / MiB:.0f} MiB = {r['bytes_per_account']:,.0f} B per "
            f"tracked account (target ≤ {TARGET_BYTES_PER_ACCOUNT} B); RSS after the phase "
            f"{r['rss_after_phase'] / MiB:.0f} MiB = {_after_phase(r):,.0f} B per tracked "
            f"account (with the workload's own accounts); accounts in memory "
            f"{r['accounts_in_memory']}",
            flush=True,
        )


def _after_phase(r: dict[str, Any]) -> float:
    return (r["rss_after_phase"] - r["rss_before_prefill"]) / max(1, r["tracked"])


def print_soak(s: dict[str, Any]) -> None:
    for x in s["buckets"]:
        print(
            f"  {x['start_s'] / 60:5.1f} min  {x['rps']:6.0f} req/s  p50 {x['p50_ms']:6.2f}  "
            f"p99 {x['p99_ms']:7.2f}  p99.9 {x['p999_ms']:7.2f}  max {x['max_ms']:7.2f} ms  "
            f"errors {x['errors']}  RSS {x['rss_mib']:.1f} MiB"
        )
    r = s["open"]
    print(
        f"  whole soak: {r['rps']:.0f} of {r['target_rps']:.0f} req/s, p50 {r['p50_ms']:.2f}  "
        f"p99 {r['p99_ms']:.2f}  p99.9 {r['p999_ms']:.2f}  max {r['max_ms']:.2f} ms; "
        f"server {r['server_cores']:.2f} cores ({r['server_us_per_req']:.0f} µs CPU/req), "
        f"machine {r['machine_busy']:.0%} busy; client send lag p99 "
        f"{r['send_lag_p99_ms']:.2f} ms"
    )
    print(
        f"  RSS: {s['rss_first_mib']:.1f} MiB at start, {s['rss_at_settle_mib']:.1f} after "
        f"{s['settle_s']:g} s, {s['rss_end_mib']:.1f} at the end (max {s['rss_max_mib']:.1f});"
        f" slope after {s['settle_s']:g} s: {s['rss_slope_mib_per_min']:+.3f} MiB/min "
        f"(least squares over {s['rss_samples_in_slope']} samples; child processes "
        f"{s['rss_children_slope_mib_per_min']:+.3f} MiB/min)"
    )
    p = s["p99_per_bucket"]
    print(
        f"  errors: {s['errors_total']} ({r['errors'] or 'none'}; skipped {r['skipped']});"
        f"  p99 per {s['bucket_s']:g} s: min {p['min']:.2f}, "
        f"median {p['median']:.2f}, max {p['max']:.2f} ms (target p99 ≤ "
        f"{TARGET_P99_HALF_LOAD_MS:g} ms at half load)",
        flush=True,
    )
    _print_window_stalls(r)


def _print_window_stalls(r: dict[str, Any]) -> None:
    stalls = r.get("server_stalls")
    if stalls is not None:
        print(
            f"  server loop stalls > 20 ms in this window: {stalls['stalls']}, "
            f"{stalls['stalled_s']} s in all, largest {stalls['stall_max_ms']} ms",
            flush=True,
        )
        for where, ms in stalls["stall_samples"]:
            print(f"    stalled ~{ms} ms in {where}", flush=True)


def _children(r: dict[str, Any]) -> str:
    cores = r.get("server_children_cores", 0.0)
    return f"; child processes {cores:.2f}" if cores >= 0.005 else ""


def print_open(r: dict[str, Any], kind: str = "Score") -> None:
    print(
        f"\nOpen loop against {kind} at {r['target_rps']:.0f} req/s"
        + (
            f" (half of best Score {r['best_score_rps']:.0f} req/s):"
            if "best_score_rps" in r
            else ":"
        )
    )
    print(
        f"  achieved {r['rps']:.0f} req/s  p50 {r['p50_ms']:.2f}  p99 {r['p99_ms']:.2f}  "
        f"p99.9 {r['p999_ms']:.2f}  max {r['max_ms']:.2f} ms"
        + (f"  (target p99 ≤ {TARGET_P99_HALF_LOAD_MS:g} ms)" if kind == "Score" else "")
    )
    print(
        f"  server {r['server_cores']:.2f} cores ({r['server_us_per_req']:.0f} µs CPU/req; "
        f"main thread {r['server_main_thread_cores']:.2f}, others "
        f"{r['server_other_threads_cores']}{_children(r)}), "
        f"clients {r['clients_cores']:.2f} cores, "
        f"machine {r['machine_busy']:.0%} busy, steal {r['steal']:.0%}, "
        f"client send lag p99 {r['send_lag_p99_ms']:.2f} ms, skipped {r['skipped']}, "
        f"errors {r['errors'] or 0}",
        flush=True,
    )
    _print_window_stalls(r)


def print_memory(results: dict[str, Any]) -> None:
    print("\nMemory per tracked account (in process, EmbeddedProfileStore(None), no gRPC):")
    for variant, r in results.items():
        books = ", ".join(f"{k} {v}" for k, v in r["books"].items())
        print(
            f"  {variant:<12} {r['accounts']} accounts: RSS "
            f"{r['rss_before'] / 2**20:.0f} → {r['rss_after'] / 2**20:.0f} MiB = "
            f"{r['bytes_per_account']:.0f} B/account (target ≤ {TARGET_BYTES_PER_ACCOUNT} B); "
            f"engine {r['score_us']:.0f} µs/request; books: {books}"
        )
        if "traced_top" in r:
            print(
                f"    tracemalloc over {r['traced_accounts']} further accounts: "
                f"{r['traced_bytes_per_account']:.0f} B/account; top source lines:"
            )
            for where, size, count in r["traced_top"]:
                print(f"      {size:7.0f} B  {count:5.1f} blocks  {where}")
    r = next(iter(results.values()))
    print(
        f"  fixed cost outside the delta: GeoIP answer cache full "
        f"({r['geoip_cache_bytes'] / 2**20:.0f} MiB RSS)"
    )
    s = r["serialized"]
    print(
        f"  serialized (state.db rows): account after 1 request {s['account_after_1_request']} B,"
        f" saturated {s['account_saturated']} B; device/prefix with 1 account "
        f"{s['shared_1_account']} B, saturated {s['shared_saturated']} B; decision JSON "
        f"{s['decision_json']} B"
    )


def _per_round(rows: list[dict[str, Any]], rpc: str, kind: str, key: str) -> dict[int, float]:
    return {r["round"]: r[key] for r in rows if r["rpc"] == rpc and r["kind"] == kind}


def print_summary(report: dict[str, Any]) -> None:
    print("\nSummary (median [min–max] over rounds; ratios are taken within each round)")
    rows = report.get("load", [])
    if rows:
        rpcs = list(dict.fromkeys(r["rpc"] for r in rows))
        kinds = list(dict.fromkeys(r["kind"] for r in rows))
        ratios: dict[str, Any] = {}
        report["ratios"] = ratios
        print(
            f"  {'RPC':<10} {'server':<12} {'throughput':>30}  {'p50':>6} {'p99':>7} "
            f"{'p99.9':>7} ms  {'CPU µs/item':>11}"
        )
        for rpc in rpcs:
            for kind in kinds:
                mine = [r for r in rows if r["rpc"] == rpc and r["kind"] == kind]
                if not mine:
                    continue
                unit = "items/s" if mine[0]["items_per_call"] > 1 else "req/s"
                print(
                    f"  {loadgen.RPC_NAMES[rpc]:<10} {KIND_NAMES[kind]:<12} "
                    f"{_spread([r['items_per_s'] for r in mine]):>22} {unit:<7}  "
                    f"{median(r['p50_ms'] for r in mine):6.2f} "
                    f"{median(r['p99_ms'] for r in mine):7.2f} "
                    f"{median(r['p999_ms'] for r in mine):7.2f}     "
                    f"{median(r['server_us_per_item'] for r in mine):8.0f}"
                )
        for rpc in rpcs:
            ours = _per_round(rows, rpc, "score", "items_per_s")
            for base in ("noop", "fixed"):
                theirs = _per_round(rows, rpc, base, "items_per_s")
                per_round = [ours[k] / theirs[k] for k in ours if theirs.get(k)]
                if not per_round:
                    continue
                ratios[f"{rpc}/{base}"] = per_round
                target = f"  (target ≥ {TARGET_RATIO})" if base == "noop" else ""
                print(
                    f"  {loadgen.RPC_NAMES[rpc]:<10} ringfence / {KIND_NAMES[base]:<12} "
                    f"{_spread(per_round, '.2f')}  per round: "
                    f"{', '.join(f'{x:.2f}' for x in per_round)}{target}"
                )
    if "open" in report:
        r = report["open"]
        print(
            f"  open loop at {r['target_rps']:.0f} req/s: p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms (target ≤ {TARGET_P99_HALF_LOAD_MS:g} ms)"
        )
    if "open_noop" in report:
        r = report["open_noop"]
        print(f"  same rate against no-op: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")
    for variant, r in report.get("memory", {}).items():
        print(
            f"  memory {variant:<12} {r['bytes_per_account']:.0f} B/account RSS"
            + (f", {r['traced_bytes_per_account']:.0f} B traced" if "traced_top" in r else "")
            + f" (target ≤ {TARGET_BYTES_PER_ACCOUNT} B)"
        )
    tracked = report.get("accounts", [])
    if tracked:
        sizes = sorted({r["tracked"] for r in tracked if r["kind"] == "score"})
        noop = {r["round"]: r["rps"] for r in tracked if r["kind"] == "noop"}
        base = [r for r in tracked if r["tracked"] == sizes[0]] if sizes else []
        base_cpu = median(r["server_us_per_req"] for r in base) if base else float("nan")
        print(
            f"  {'tracked':>9}  {'Score req/s':>20}  {'/ no-op':>6}  {'CPU µs/req':>10}  "
            f"{'vs ' + format(sizes[0], ',') if sizes else '':>10}  {'p99 ms':>7}  "
            f"{'B/account':>9}  {'prefill s':>9}"
        )
        for size in sizes:
            mine = [r for r in tracked if r["tracked"] == size]
            cpu = median(r["server_us_per_req"] for r in mine)
            rel = [r["rps"] / noop[r["round"]] for r in mine if noop.get(r["round"])]
            print(
                f"  {size:>9,}  {_spread([r['rps'] for r in mine]):>20}  "
                f"{median(rel) if rel else float('nan'):6.2f}  {cpu:10.0f}  "
                f"{cpu / base_cpu:9.2f}×  {median(r['p99_ms'] for r in mine):7.2f}  "
                f"{median(r['bytes_per_account'] for r in mine):9,.0f}  "
                f"{median(r['prefill_s'] for r in mine):9.0f}"
            )
        if noop:
            print(f"  no-op reference: {_spread(list(noop.values()))} req/s")
    if "soak" in report:
        s = report["soak"]
        print(
            f"  soak {s['minutes']:g} min at {s['rate']:.0f} req/s: RSS slope "
            f"{s['rss_slope_mib_per_min']:+.3f} MiB/min after {s['settle_s']:g} s, errors "
            f"{s['errors_total']}, p99 per bucket {s['p99_per_bucket']['min']:.2f}–"
            f"{s['p99_per_bucket']['max']:.2f} ms"
        )


def _spread(values: list[float], spec: str = ".0f") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], spec)
    return (
        f"{format(median(values), spec)} [{format(min(values), spec)}–{format(max(values), spec)}]"
    )


# ---------------------------------------------------------------- main


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def estimate_s(args: argparse.Namespace) -> float:
    """A rough lower bound on the run's length (phases only, no process starts)."""
    phase = args.start_delay + args.warmup + args.measure
    if args.mode == "load":
        s = (
            0.0
            if args.skip_throughput
            else args.rounds * len(args.servers) * (len(args.rpcs) * phase + 3)
        )
        if not args.skip_throughput and not args.skip_open:
            s += args.open_measure + args.warmup * (2 if args.open_noop else 1)
        return s + (0.0 if args.skip_memory else 120.0)
    if args.mode == "accounts":
        return args.rounds * ((len(args.tracked) + 1) * (phase + 3) + sum(args.tracked) * 400e-6)
    return phase + args.minutes * 60 + 5


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "machine": machine(),
        "mode": args.mode,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    print(f"command: {report['command']}  (cwd {report['cwd']})")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in report["machine"].items()))
    print(f"mode {args.mode}: at least ~{estimate_s(args) / 60:.1f} min", flush=True)
    started = time.monotonic()
    children = Children(mp.get_context("spawn"))
    try:
        with tempfile.TemporaryDirectory(prefix="ringfence-bench-") as tmp:
            b = Bench(args, children, Path(tmp))
            if args.mode == "accounts":
                accounts(b, report)
            elif args.mode == "soak":
                soak(b, report)
            else:
                if not args.skip_throughput:
                    load(b, report)
                if not args.skip_memory:
                    memory(args, children, report)
    except BaseException as exc:
        print(
            f"\nstopped early ({type(exc).__name__}: {exc}); stopping child processes",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        children.close()
    report["elapsed_s"] = time.monotonic() - started
    report["loadavg_at_end"] = os.getloadavg()
    print_summary(report)
    print(
        f"\n(elapsed {report['elapsed_s']:.0f} s; load average at start "
        f"{report['machine']['loadavg_at_start'][0]:.1f}, at end "
        f"{report['loadavg_at_end'][0]:.1f})"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
