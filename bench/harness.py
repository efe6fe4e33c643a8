"""The process harness the load, tracked-accounts and soak benchmarks share: the machine
description, CPU and RSS sampling from /proc, child processes that are always stopped, a
server process per phase, client processes that run one phase after another, and merging their
samples into figures (percentiles are nearest-rank, in milliseconds).
"""

from __future__ import annotations

import contextlib
import os
import platform
import queue
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from importlib import metadata
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

import loadgen
import servers

from ringfence.service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


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
            return subprocess.run(
                ["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    from google.protobuf.internal import api_implementation

    dirty = git("status", "--porcelain", "--", "service", "clients", "proto")
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "memory": first("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": metadata.version("grpcio"),
        "protobuf": f"{metadata.version('protobuf')} ({api_implementation.Type()})",
        "git": git("rev-parse", "--short", "HEAD")
        + (f" + uncommitted changes in {len(dirty.splitlines())} files" if dirty else ""),
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


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with (
                contextlib.suppress(OSError, IndexError, ValueError),
                open(f"/proc/{entry}/stat") as f,
            ):
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_bytes(pid: int) -> int:
    """Resident set of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


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
    children = {
        pid: s
        for pid in descendants(pids[0])
        if (s := _cpu_seconds(f"/proc/{pid}/stat")) is not None
    }
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    steal = v[7] if len(v) > 7 else 0
    total = sum(v[:8])
    return CpuSample(
        time.monotonic(),
        procs,
        threads,
        children,
        (total - idle - steal) / CLK_TCK,
        steal / CLK_TCK,
        total / CLK_TCK,
    )


def cpu_delta(a: CpuSample, b: CpuSample, server: int, clients: list[int]) -> dict[str, Any]:
    wall = b.t - a.t
    total = max(1e-9, b.total - a.total)

    def share(pid: int) -> float:
        return (b.procs.get(pid, 0.0) - a.procs.get(pid, 0.0)) / wall

    others = sorted(
        ((b.threads[t] - a.threads.get(t, 0.0)) / wall for t in b.threads if t != server),
        reverse=True,
    )
    return {
        "server_cores": share(server),
        "clients_cores": sum(share(c) for c in clients),
        "server_main_thread_cores": (b.threads.get(server, 0.0) - a.threads.get(server, 0.0))
        / wall,
        "server_other_threads_cores": [round(x, 3) for x in others if x >= 0.005],
        "server_children_cores": sum(
            b.descendants[p] - a.descendants.get(p, 0.0) for p in b.descendants
        )
        / wall,
        "machine_busy": (b.busy - a.busy) / total,
        "steal": (b.steal - a.steal) / total,
        "server_cpu_s": b.procs.get(server, 0.0) - a.procs.get(server, 0.0),
    }


# ---------------------------------------------------------------- child processes


class Children:
    """Every child process the benchmark starts; ``close`` stops them all (stop event, then
    SIGTERM, then SIGKILL), whatever happened before."""

    def __init__(self, ctx: SpawnContext) -> None:
        self.ctx = ctx
        self._procs: list[SpawnProcess] = []
        self._stops: list[Any] = []

    def start(
        self, target: Callable[..., None], *args: Any, stop: Any = None, daemon: bool = True
    ) -> SpawnProcess:
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
    ready: dict[str, Any] = field(default_factory=dict)  # e.g. prefill figures
    stats: dict[str, Any] = field(default_factory=dict)  # sent when it stopped


@contextlib.contextmanager
def running_server(
    children: Children,
    kind: str,
    settings: Settings,
    max_lifetime_s: float,
    cpus: set[int] | None,
    monitor: bool,
    prefill: int = 0,
    start_timeout_s: float = 60.0,
) -> Iterator[Server]:
    """A server process of ``kind`` (servers.KINDS); ``prefill`` tracked accounts are fed
    through its engine before it answers ready."""
    events = children.ctx.Queue()
    stop = children.ctx.Event()
    # Not a daemon: the App may start its own worker processes (cluster refits).
    proc = children.start(
        servers.serve,
        kind,
        settings,
        events,
        stop,
        os.getpid(),
        max_lifetime_s,
        cpus,
        monitor,
        prefill,
        stop=stop,
        daemon=False,
    )
    ready = False
    try:
        message = _next_event(events, proc, start_timeout_s)
        if message[0] != "ready":
            raise RuntimeError(f"{kind} server did not start: {message}")
        ready = True
        assert proc.pid is not None
        server = Server(kind, proc.pid, message[1], message[2] if len(message) > 2 else {})
        yield server
    finally:
        stop.set()
        aborting = sys.exc_info()[0] is not None
        if ready and not aborting:
            with contextlib.suppress(RuntimeError):
                message = _next_event(events, proc, 60)
                if message[0] == "stopped":
                    server.stats = message[1]
        children.reap(proc, 3 if aborting else 30)


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


def recv(conn: Connection, proc: SpawnProcess, timeout: float) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.poll(0.5):
            return conn.recv()
        if not proc.is_alive() and not conn.poll(0.1):
            raise RuntimeError(f"process {proc.pid} exited ({proc.exitcode})")
    raise RuntimeError(f"process {proc.pid} did not answer in {timeout:.0f} s")


class ClientGroup:
    """Client processes that build their request pools once (for every RPC in the spec),
    then run one phase after another against whichever server the parent names."""

    def __init__(self, procs: list[tuple[SpawnProcess, Connection]]) -> None:
        self.procs = procs
        self._ready = False

    @property
    def pids(self) -> list[int]:
        return [p.pid for p, _ in self.procs if p.pid is not None]

    def wait_ready(self) -> None:
        if self._ready:
            return
        for proc, conn in self.procs:
            message = recv(conn, proc, 300)
            if message[0] != "ready":
                raise RuntimeError(f"client failed: {message}")
        self._ready = True

    def go(self, target: str, spec: loadgen.LoadSpec, start_delay_s: float) -> float:
        """Release every client at the same moment; returns that moment (monotonic)."""
        self.wait_ready()
        start_at = time.monotonic() + start_delay_s
        for _, conn in self.procs:
            conn.send(("go", target, start_at, spec))
        return start_at

    def results(self, timeout_s: float) -> list[dict[str, Any]]:
        out = []
        for proc, conn in self.procs:
            message = recv(conn, proc, timeout_s)
            if message[0] != "result":
                raise RuntimeError(f"client failed: {message}")
            out.append(message[1])
        return out


@contextlib.contextmanager
def client_group(
    children: Children, spec: loadgen.LoadSpec, n: int, cpus: frozenset[int] | None
) -> Iterator[ClientGroup]:
    """Start ``n`` client processes; they build their request pools while the caller starts
    the server."""
    started: list[tuple[SpawnProcess, Connection]] = []
    try:
        for c in range(n):
            mine, theirs = children.ctx.Pipe()
            proc = children.start(
                loadgen.run_client, replace(spec, seed=spec.seed * 1000 + c, cpus=cpus), theirs
            )
            theirs.close()
            started.append((proc, mine))
        yield ClientGroup(started)
    finally:
        aborting = sys.exc_info()[0] is not None
        for _, conn in started:
            conn.close()  # a client waiting for the next phase sees EOF and exits
        for proc, _ in started:
            children.reap(proc, 0.5 if aborting else 5)


@dataclass
class RssSample:
    t: float  # seconds since the window opened (negative: during warm-up)
    server: int  # bytes, the server process
    children: int  # bytes, its child processes (refit worker, forkserver)


def drive(
    group: ClientGroup,
    server: Server,
    spec: loadgen.LoadSpec,
    *,
    start_delay_s: float = 1.0,
    rss_every_s: float | None = None,
    keep_samples: bool = False,
) -> dict[str, Any]:
    """Run one phase: release the clients together against ``server``, sample CPU over the
    measurement window (and the server's RSS every ``rss_every_s`` from the start), gather
    and merge the clients' results."""
    start_at = group.go(f"127.0.0.1:{server.port}", spec, start_delay_s)
    pids = [server.pid, *group.pids]
    window = start_at + spec.warmup_s
    end = window + spec.measure_s
    rss: list[RssSample] = []
    before: CpuSample | None = None
    next_rss = start_at
    while True:
        now = time.monotonic()
        if before is None and now >= window:
            before = cpu_sample(pids)
        if now >= end:
            break
        if rss_every_s and now >= next_rss:
            kids = sum(rss_bytes(p) for p in descendants(server.pid))
            rss.append(RssSample(now - window, rss_bytes(server.pid), kids))
            next_rss += rss_every_s
        wake = [end]
        if before is None:
            wake.append(window)
        if rss_every_s:
            wake.append(next_rss)
        time.sleep(max(0.0, min(min(wake) - time.monotonic(), 1.0)))
    after = cpu_sample(pids)
    assert before is not None
    results = group.results(spec.timeout_s + 60)
    out = summarize(spec, results, cpu_delta(before, after, server.pid, pids[1:]), keep_samples)
    out["window_monotonic"] = (window, end)  # for picking the server's stalls in this phase
    if rss_every_s:
        out["rss"] = [(round(s.t, 2), s.server, s.children) for s in rss]
    return out


def summarize(
    spec: loadgen.LoadSpec,
    results: list[dict[str, Any]],
    cpu: dict[str, float],
    keep_samples: bool = False,
) -> dict[str, Any]:
    latencies = array("d")
    times = array("d")
    error_times = array("d")
    lag = array("d")
    errors: dict[str, int] = {}
    for r in results:
        latencies.frombytes(r["latencies"])
        times.frombytes(r.get("times", b""))
        error_times.frombytes(r.get("error_times", b""))
        lag.frombytes(r.get("send_lag", b""))
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    ordered = sorted(latencies)
    items = spec.items_per_call
    out: dict[str, Any] = {
        "mode": spec.mode,
        "rpc": spec.rpc,
        "items_per_call": items,
        "completed": len(ordered),
        "rps": len(ordered) / spec.measure_s,
        "items_per_s": len(ordered) * items / spec.measure_s,
        "p50_ms": pct(ordered, 50),
        "p99_ms": pct(ordered, 99),
        "p999_ms": pct(ordered, 99.9),
        "max_ms": ordered[-1] * 1e3 if ordered else float("nan"),
        "errors": errors,
        **cpu,
    }
    out["server_us_per_req"] = cpu["server_cpu_s"] / max(1, len(ordered)) * 1e6
    out["server_us_per_item"] = out["server_us_per_req"] / items
    if spec.mode == "open":
        out["target_rps"] = spec.rate * len(results)
        out["skipped"] = sum(r["skipped"] for r in results)
        out["send_lag_p99_ms"] = pct(sorted(lag), 99)
    if keep_samples:
        out["_latencies"] = latencies
        out["_times"] = times
        out["_error_times"] = error_times
    return out


def pct(ordered: list[float] | array[float], q: float) -> float:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))
    return ordered[int(k)] * 1e3


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, in value units per minute."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return float("nan")
    return sum((t - mx) * (v - my) for t, v in points) / sxx * 60
