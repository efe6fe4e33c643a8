"""Score throughput, latency and memory per tracked account, printed as figures (not a test).

1. Closed loop, side by side on the same grpc.aio server settings (``server_options``): a
   no-op RiskService (deserializes the ScoreRequest, answers a constant ScoreResponse) and the
   real App (embedded defaults, persist=True in a temporary data dir: event log and
   checkpoints on), each in its own process, loaded by several client processes over
   127.0.0.1. Rounds alternate no-op / Score so drift on a shared machine hits both.
2. Open loop (fixed send rate) against Score at half its best closed-loop throughput.
3. Memory per tracked account: in process, no gRPC, 100k new accounts (docs/benchmarks.md).

Run: ``make bench`` (or ``.venv/bin/python bench/score_throughput.py --help``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import queue
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from importlib import metadata
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from statistics import median
from typing import Any

import account_memory
import loadgen
import servers

from ringfence.service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_RATIO = 0.6
TARGET_P99_HALF_LOAD_MS = 5.0
TARGET_BYTES_PER_ACCOUNT = 2048


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("closed loop (no-op vs Score)")
    g.add_argument("--rounds", type=int, default=2,
                   help="no-op/Score pairs, alternated (each on fresh server processes)")
    g.add_argument("--warmup", type=float, default=4.0, help="seconds before measuring")
    g.add_argument("--measure", type=float, default=12.0, help="measurement window, seconds")
    g.add_argument("--clients", type=int, default=2, help="client processes")
    g.add_argument("--concurrency", type=int, default=16,
                   help="calls in flight per client process")
    g = p.add_argument_group("open loop (Score at a fixed rate)")
    g.add_argument("--open-rate", type=float, default=None,
                   help="req/s in all (default: half of Score's best closed-loop req/s)")
    g.add_argument("--open-measure", type=float, default=15.0, help="window, seconds")
    g.add_argument("--skip-open", action="store_true")
    g.add_argument("--open-noop", action="store_true",
                   help="also run the open loop against a no-op server at the same rate: "
                        "the latency floor of gRPC and this harness on this machine")
    g = p.add_argument_group("workload")
    g.add_argument("--accounts", type=int, default=10_000)
    g.add_argument("--devices", type=int, default=3_000)
    g.add_argument("--ips", type=int, default=4_000)
    g.add_argument("--pool", type=int, default=20_000,
                   help="distinct pre-serialized requests per client process")
    g.add_argument("--seed", type=int, default=7, help="population seed")
    g = p.add_argument_group("memory per tracked account")
    g.add_argument("--memory-accounts", type=int, default=100_000)
    g.add_argument("--traced-accounts", type=int, default=5_000,
                   help="further accounts fed under tracemalloc (0: skip)")
    g.add_argument("--skip-memory", action="store_true")
    g.add_argument("--skip-throughput", action="store_true")
    g = p.add_argument_group("process placement and output")
    g.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                   help="pin each server to the first usable CPU and the clients to the "
                        "others (needs 2+ CPUs): one core per server, steadier figures")
    g.add_argument("--score-setting", metavar="NAME=VALUE", action="append", default=[],
                   type=_setting, help="a Settings field for the Score server, e.g. "
                                       "clustering=false (repeatable)")
    g.add_argument("--stall-monitor", action="store_true",
                   help="record event-loop stalls in the servers and where the loop was")
    g.add_argument("--json", type=Path, default=None, help="also write all figures here")
    args = p.parse_args(argv)
    for name in ("rounds", "clients", "concurrency", "accounts", "devices", "ips", "pool"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.warmup < 0 or args.measure <= 0 or args.open_measure <= 0:
        p.error("--warmup must be >= 0 and --measure/--open-measure > 0")
    return args


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or name not in Settings.model_fields:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a Settings field name, "
                                         f"got {text!r}")
    return name, value


# ---------------------------------------------------------------- machine and process stats

def machine() -> dict[str, Any]:
    def first(path: str, key: str) -> str:
        with contextlib.suppress(OSError), open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        return "?"

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    from google.protobuf.internal import api_implementation

    dirty = git("status", "--porcelain", "--", "service", "clients", "proto")
    return {
        "nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "memory": first("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": metadata.version("grpcio"),
        "protobuf": f"{metadata.version('protobuf')} ({api_implementation.Type()})",
        "git": git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in "
                                                     f"{len(dirty.splitlines())} files"
                                                     if dirty else ""),
        "loadavg_at_start": os.getloadavg(),
    }


@dataclass(frozen=True)
class CpuSample:
    t: float
    procs: dict[int, float]  # pid → CPU seconds (all threads)
    threads: dict[int, float]  # the server's threads: tid → CPU seconds
    descendants: dict[int, float]  # the server's child processes (e.g. a refit worker)
    busy: float  # whole machine, seconds of CPU across all cores
    steal: float
    total: float


def _cpu_seconds(stat_path: str) -> float | None:
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), \
                    open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_sample(pids: list[int]) -> CpuSample:
    """CPU seconds of ``pids`` (the first is the server: its threads and child processes
    too) and of the whole machine."""
    procs = {pid: s for pid in pids if (s := _cpu_seconds(f"/proc/{pid}/stat")) is not None}
    threads: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pids[0]}/task"):
            s = _cpu_seconds(f"/proc/{pids[0]}/task/{tid}/stat")
            if s is not None:
                threads[int(tid)] = s
    descendants = {pid: s for pid in _descendants(pids[0])
                   if (s := _cpu_seconds(f"/proc/{pid}/stat")) is not None}
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    steal = v[7] if len(v) > 7 else 0
    total = sum(v[:8])
    return CpuSample(time.monotonic(), procs, threads, descendants,
                     (total - idle - steal) / CLK_TCK, steal / CLK_TCK, total / CLK_TCK)


def cpu_delta(a: CpuSample, b: CpuSample, server: int, clients: list[int]) -> dict[str, Any]:
    wall = b.t - a.t
    total = max(1e-9, b.total - a.total)

    def share(pid: int) -> float:
        return (b.procs.get(pid, 0.0) - a.procs.get(pid, 0.0)) / wall

    others = sorted(((b.threads[t] - a.threads.get(t, 0.0)) / wall
                     for t in b.threads if t != server), reverse=True)
    return {"server_cores": share(server), "clients_cores": sum(share(c) for c in clients),
            "server_main_thread_cores": (b.threads.get(server, 0.0)
                                         - a.threads.get(server, 0.0)) / wall,
            "server_other_threads_cores": [round(x, 3) for x in others if x >= 0.005],
            "server_children_cores": sum(b.descendants[p] - a.descendants.get(p, 0.0)
                                         for p in b.descendants) / wall,
            "machine_busy": (b.busy - a.busy) / total, "steal": (b.steal - a.steal) / total,
            "server_cpu_s": b.procs.get(server, 0.0) - a.procs.get(server, 0.0)}


# ---------------------------------------------------------------- child processes

class Children:
    """Every child process the benchmark starts; ``close`` stops them all (stop event, then
    SIGTERM, then SIGKILL), whatever happened before."""

    def __init__(self, ctx: SpawnContext) -> None:
        self.ctx = ctx
        self._procs: list[SpawnProcess] = []
        self._stops: list[Any] = []

    def start(self, target: Callable[..., None], *args: Any, stop: Any = None,
              daemon: bool = True) -> SpawnProcess:
        proc = self.ctx.Process(target=target, args=args, daemon=daemon)
        proc.start()
        self._procs.append(proc)
        if stop is not None:
            self._stops.append(stop)
        return proc

    def reap(self, proc: SpawnProcess, timeout: float) -> None:
        proc.join(timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(3)
        if proc.is_alive():
            proc.kill()
            proc.join(3)

    def close(self) -> None:
        for stop in self._stops:
            stop.set()
        for proc in self._procs:
            self.reap(proc, 3)
        self._procs.clear()
        self._stops.clear()


@dataclass
class Server:
    kind: str
    pid: int
    port: int
    stats: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def running_server(children: Children, kind: str, settings: Settings, max_lifetime_s: float,
                   cpus: set[int] | None, monitor: bool) -> Iterator[Server]:
    events = children.ctx.Queue()
    stop = children.ctx.Event()
    # Not a daemon: the App may start its own worker processes (cluster refits).
    proc = children.start(servers.serve, kind, settings, events, stop, os.getpid(),
                          max_lifetime_s, cpus, monitor, stop=stop, daemon=False)
    ready = False
    try:
        message = _next_event(events, proc, 60)
        if message[0] != "ready":
            raise RuntimeError(f"{kind} server did not start: {message}")
        ready = True
        assert proc.pid is not None
        server = Server(kind, proc.pid, message[1])
        yield server
    finally:
        stop.set()
        aborting = sys.exc_info()[0] is not None
        if ready and not aborting:
            with contextlib.suppress(RuntimeError):
                message = _next_event(events, proc, 30)
                if message[0] == "stopped":
                    server.stats = message[1]
        children.reap(proc, 3 if aborting else 10)


def _next_event(events: Any, proc: SpawnProcess, timeout: float) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return events.get(timeout=0.5)
        except queue.Empty:
            if not proc.is_alive():
                with contextlib.suppress(queue.Empty):
                    return events.get(timeout=0.5)
                raise RuntimeError(f"process {proc.pid} exited ({proc.exitcode})") from None
    raise RuntimeError(f"process {proc.pid} did not answer in {timeout:.0f} s")


def _recv(conn: Connection, proc: SpawnProcess, timeout: float) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.poll(0.5):
            return conn.recv()
        if not proc.is_alive() and not conn.poll(0.1):
            raise RuntimeError(f"process {proc.pid} exited ({proc.exitcode})")
    raise RuntimeError(f"process {proc.pid} did not answer in {timeout:.0f} s")


Clients = list[tuple[SpawnProcess, Connection]]


@contextlib.contextmanager
def client_group(children: Children, spec: loadgen.LoadSpec, n: int,
                 cpus: frozenset[int] | None) -> Iterator[Clients]:
    """Start ``n`` client processes; they build their request pools while the caller starts
    the server."""
    started: Clients = []
    try:
        for c in range(n):
            mine, theirs = children.ctx.Pipe()
            proc = children.start(loadgen.run_client,
                                  replace(spec, seed=spec.seed * 1000 + c, cpus=cpus), theirs)
            theirs.close()
            started.append((proc, mine))
        yield started
    finally:
        aborting = sys.exc_info()[0] is not None
        for _, conn in started:
            conn.close()  # a client waiting for "go" sees EOF and exits
        for proc, _ in started:
            children.reap(proc, 0.5 if aborting else 5)


def drive(clients: Clients, server: Server, spec: loadgen.LoadSpec) -> dict[str, Any]:
    """Release the clients together against ``server``, sample CPU over the measurement
    window, gather and merge their results."""
    for proc, conn in clients:
        message = _recv(conn, proc, 180)
        if message[0] != "ready":
            raise RuntimeError(f"client failed: {message}")
    start_at = time.monotonic() + 1.0
    for _, conn in clients:
        conn.send(("go", f"127.0.0.1:{server.port}", start_at))
    pids = [server.pid] + [p.pid for p, _ in clients if p.pid is not None]
    window = start_at + spec.warmup_s
    time.sleep(max(0.0, window - time.monotonic()))
    before = cpu_sample(pids)
    time.sleep(max(0.0, window + spec.measure_s - time.monotonic()))
    after = cpu_sample(pids)
    results = []
    for proc, conn in clients:
        message = _recv(conn, proc, spec.timeout_s + 60)
        if message[0] != "result":
            raise RuntimeError(f"client failed: {message}")
        results.append(message[1])
    return summarize(spec, results, cpu_delta(before, after, server.pid, pids[1:]))


def summarize(spec: loadgen.LoadSpec, results: list[dict[str, Any]],
              cpu: dict[str, float]) -> dict[str, Any]:
    latencies = array("d")
    lag = array("d")
    errors: dict[str, int] = {}
    for r in results:
        latencies.frombytes(r["latencies"])
        lag.frombytes(r.get("send_lag", b""))
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    ordered = sorted(latencies)
    out: dict[str, Any] = {
        "mode": spec.mode, "completed": len(ordered), "rps": len(ordered) / spec.measure_s,
        "p50_ms": pct(ordered, 50), "p99_ms": pct(ordered, 99), "p999_ms": pct(ordered, 99.9),
        "max_ms": ordered[-1] * 1e3 if ordered else float("nan"), "errors": errors,
        **cpu,
    }
    out["server_us_per_req"] = cpu["server_cpu_s"] / max(1, len(ordered)) * 1e6
    if spec.mode == "open":
        out["target_rps"] = spec.rate * len(results)
        out["skipped"] = sum(r["skipped"] for r in results)
        out["send_lag_p99_ms"] = pct(sorted(lag), 99)
    return out


def pct(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))
    return ordered[int(k)] * 1e3


# ---------------------------------------------------------------- phases

def throughput(args: argparse.Namespace, children: Children, data_root: Path,
               report: dict[str, Any]) -> None:
    usable = sorted(os.sched_getaffinity(0))
    server_cpus = {usable[0]} if args.pin and len(usable) > 1 else None
    client_cpus = frozenset(usable[1:]) if server_cpus else None
    spec = loadgen.LoadSpec(
        mode="closed", warmup_s=args.warmup, measure_s=args.measure,
        concurrency=args.concurrency, pool_size=args.pool, population_seed=args.seed,
        accounts=args.accounts, devices=args.devices, ips=args.ips)
    lifetime = 2 * (args.warmup + args.measure) + args.warmup + args.open_measure + 300
    overrides = dict(args.score_setting)
    closed: list[dict[str, Any]] = []
    report["closed"] = closed
    for rnd in range(1, args.rounds + 1):
        for kind in ("noop", "score"):
            settings = Settings(**{**(overrides if kind == "score" else {}),
                                   "host": "127.0.0.1", "port": 0, "persist": True,
                                   "data_dir": data_root / f"{kind}-{rnd}"})
            phase_started = time.monotonic()
            with client_group(children, spec, args.clients, client_cpus) as clients, \
                    running_server(children, kind, settings, lifetime, server_cpus,
                                   args.stall_monitor) as server:
                result = drive(clients, server, spec)
                result.update(kind=kind, round=rnd)
                print_closed(result)
                if kind == "score" and rnd == args.rounds and not args.skip_open:
                    best = max(r["rps"] for r in [*closed, result] if r["kind"] == "score")
                    rate = args.open_rate or best / 2
                    open_spec = replace(spec, mode="open", measure_s=args.open_measure,
                                        rate=rate / args.clients)
                    with client_group(children, open_spec, args.clients, client_cpus) as c2:
                        report["open"] = drive(c2, server, open_spec)
                    report["open"]["best_score_rps"] = best
            result["server_stats"] = server.stats
            result["phase_s"] = time.monotonic() - phase_started
            closed.append(result)
            if server.stats:
                print_stats(server.stats)
            print(f"      (phase took {result['phase_s']:.0f} s with process start and stop)",
                  flush=True)
    if "open" in report:
        print_open(report["open"])
    if "open" in report and args.open_noop:
        settings = Settings(host="127.0.0.1", port=0, persist=True,
                            data_dir=data_root / "noop-open")
        open_spec = replace(spec, mode="open", measure_s=args.open_measure,
                            rate=report["open"]["target_rps"] / args.clients)
        with client_group(children, open_spec, args.clients, client_cpus) as clients, \
                running_server(children, "noop", settings, lifetime, server_cpus,
                               args.stall_monitor) as server:
            report["open_noop"] = drive(clients, server, open_spec)
        print_open(report["open_noop"], "no-op")


def memory(args: argparse.Namespace, children: Children, report: dict[str, Any]) -> None:
    variants = ("distinct", "account_only")
    parallel = len(os.sched_getaffinity(0)) >= 2
    phase_started = time.monotonic()
    results: dict[str, Any] = {}
    started: list[tuple[str, SpawnProcess, Connection]] = []
    try:
        for variant in variants:
            mine, theirs = children.ctx.Pipe()
            proc = children.start(account_memory.run, variant, args.memory_accounts,
                                  args.traced_accounts, None, theirs)
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
    message = _recv(conn, proc, 900)
    if message[0] != "result":
        raise RuntimeError(f"memory run {variant} failed: {message}")
    return message[1]


# ---------------------------------------------------------------- printing

def print_stats(stats: dict[str, Any]) -> None:
    plain = {k: v for k, v in stats.items() if k != "stall_samples"}
    print("      server after stop: " + ", ".join(f"{k}={v}" for k, v in plain.items()))
    for where, ms in stats.get("stall_samples", []):
        print(f"        stalled ~{ms} ms in {where}")


def print_closed(r: dict[str, Any]) -> None:
    errors = f"  errors={r['errors']}" if r["errors"] else ""
    print(f"  round {r['round']} {r['kind']:<5} {r['rps']:8.0f} req/s  "
          f"p50 {r['p50_ms']:6.2f}  p99 {r['p99_ms']:6.2f}  p99.9 {r['p999_ms']:6.2f} ms  "
          f"server {r['server_cores']:.2f} cores ({r['server_us_per_req']:.0f} µs CPU/req; "
          f"main thread {r['server_main_thread_cores']:.2f}, others "
          f"{r['server_other_threads_cores']}{_children(r)})  "
          f"clients {r['clients_cores']:.2f} cores  "
          f"machine {r['machine_busy']:.0%} busy, steal {r['steal']:.0%}{errors}",
          flush=True)


def _children(r: dict[str, Any]) -> str:
    cores = r.get("server_children_cores", 0.0)
    return f"; child processes {cores:.2f}" if cores >= 0.005 else ""


def print_open(r: dict[str, Any], kind: str = "Score") -> None:
    print(f"\nOpen loop against {kind} at {r['target_rps']:.0f} req/s"
          + (f" (half of best Score {r['best_score_rps']:.0f} req/s):"
             if "best_score_rps" in r else ":"))
    print(f"  achieved {r['rps']:.0f} req/s  p50 {r['p50_ms']:.2f}  p99 {r['p99_ms']:.2f}  "
          f"p99.9 {r['p999_ms']:.2f}  max {r['max_ms']:.2f} ms"
          + (f"  (target p99 ≤ {TARGET_P99_HALF_LOAD_MS:g} ms)" if kind == "Score" else ""))
    print(f"  server {r['server_cores']:.2f} cores ({r['server_us_per_req']:.0f} µs CPU/req; "
          f"main thread {r['server_main_thread_cores']:.2f}, others "
          f"{r['server_other_threads_cores']}{_children(r)}), "
          f"clients {r['clients_cores']:.2f} cores, "
          f"machine {r['machine_busy']:.0%} busy, steal {r['steal']:.0%}, "
          f"client send lag p99 {r['send_lag_p99_ms']:.2f} ms, skipped {r['skipped']}, "
          f"errors {r['errors'] or 0}", flush=True)


def print_memory(results: dict[str, Any]) -> None:
    print("\nMemory per tracked account (in process, EmbeddedProfileStore(None), no gRPC):")
    for variant, r in results.items():
        books = ", ".join(f"{k} {v}" for k, v in r["books"].items())
        print(f"  {variant:<12} {r['accounts']} accounts: RSS "
              f"{r['rss_before'] / 2**20:.0f} → {r['rss_after'] / 2**20:.0f} MiB = "
              f"{r['bytes_per_account']:.0f} B/account (target ≤ {TARGET_BYTES_PER_ACCOUNT} B); "
              f"engine {r['score_us']:.0f} µs/request; books: {books}")
        if "traced_top" in r:
            print(f"    tracemalloc over {r['traced_accounts']} further accounts: "
                  f"{r['traced_bytes_per_account']:.0f} B/account; top source lines:")
            for where, size, count in r["traced_top"]:
                print(f"      {size:7.0f} B  {count:5.1f} blocks  {where}")
    r = next(iter(results.values()))
    print(f"  fixed cost outside the delta: GeoIP answer cache full "
          f"({r['geoip_cache_bytes'] / 2**20:.0f} MiB RSS)")
    s = r["serialized"]
    print(f"  serialized (state.db rows): account after 1 request {s['account_after_1_request']} B,"
          f" saturated {s['account_saturated']} B; device/prefix with 1 account "
          f"{s['shared_1_account']} B, saturated {s['shared_saturated']} B; decision JSON "
          f"{s['decision_json']} B")


def print_summary(report: dict[str, Any]) -> None:
    print("\nSummary")
    closed = report.get("closed", [])
    if closed:
        noop = [r["rps"] for r in closed if r["kind"] == "noop"]
        score = [r["rps"] for r in closed if r["kind"] == "score"]
        ratios = [s["rps"] / n["rps"] for n, s in zip(closed[::2], closed[1::2], strict=True)
                  if n["rps"]]
        print(f"  closed loop  no-op {_spread(noop)} req/s   Score {_spread(score)} req/s")
        if ratios:
            print(f"  Score/no-op  {_spread(ratios, '.2f')} (per round: "
                  f"{', '.join(f'{x:.2f}' for x in ratios)}; target ≥ {TARGET_RATIO})")
        for kind in ("noop", "score"):
            rows = [r for r in closed if r["kind"] == kind]
            print(f"  {kind:<5} p50 {_spread([r['p50_ms'] for r in rows], '.2f')} ms  "
                  f"p99 {_spread([r['p99_ms'] for r in rows], '.2f')} ms  "
                  f"p99.9 {_spread([r['p999_ms'] for r in rows], '.2f')} ms  "
                  f"server CPU/req {_spread([r['server_us_per_req'] for r in rows])} µs")
    if "open" in report:
        r = report["open"]
        print(f"  open loop at {r['target_rps']:.0f} req/s: p50 {r['p50_ms']:.2f} ms, "
              f"p99 {r['p99_ms']:.2f} ms (target ≤ {TARGET_P99_HALF_LOAD_MS:g} ms)")
    if "open_noop" in report:
        r = report["open_noop"]
        print(f"  same rate against no-op: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")
    for variant, r in report.get("memory", {}).items():
        print(f"  memory {variant:<12} {r['bytes_per_account']:.0f} B/account RSS"
              + (f", {r['traced_bytes_per_account']:.0f} B traced" if "traced_top" in r
                 else "") + f" (target ≤ {TARGET_BYTES_PER_ACCOUNT} B)")


def _spread(values: list[float], spec: str = ".0f") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], spec)
    return (f"{format(median(values), spec)} [{format(min(values), spec)}–"
            f"{format(max(values), spec)}]")


# ---------------------------------------------------------------- main

def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    report: dict[str, Any] = {"command": shlex.join([sys.executable, *sys.argv]),
                              "cwd": os.getcwd(), "machine": machine(), "args": {
                                  k: str(v) if isinstance(v, Path) else v
                                  for k, v in vars(args).items()}}
    print(f"command: {report['command']}  (cwd {report['cwd']})")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in report["machine"].items()))
    started = time.monotonic()
    children = Children(mp.get_context("spawn"))
    try:
        with tempfile.TemporaryDirectory(prefix="ringfence-bench-") as tmp:
            if not args.skip_throughput:
                print(f"\nClosed loop: {args.clients} client processes × {args.concurrency} "
                      f"calls in flight, {args.warmup:g} s warm-up + {args.measure:g} s "
                      f"window; latencies in ms:", flush=True)
                throughput(args, children, Path(tmp), report)
            if not args.skip_memory:
                memory(args, children, report)
    except BaseException as exc:
        print(f"\nstopped early ({type(exc).__name__}: {exc}); stopping child processes",
              file=sys.stderr, flush=True)
        raise
    finally:
        children.close()
    report["elapsed_s"] = time.monotonic() - started
    print_summary(report)
    print(f"\n(elapsed {report['elapsed_s']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
