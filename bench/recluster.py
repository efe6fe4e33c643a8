"""End-to-end cost of ``ringfence recluster`` on a scaled incident log, printed as figures.

1. Writes a SQLite event log shaped like the incident (docs/recluster.md, "Benchmark"): over
   45 days, ``25,000 × scale`` fleet accounts making ~25.6 requests a day each (1,152 in all:
   the incident's 28.8M events at scale 1), run by five operators that each share a device
   pool, a residential-proxy prefix pool, a client stack, prompt templates and a clock; among
   ``100,000 × scale`` ordinary accounts (own device, a home prefix, browser stacks, ~1
   request on a third of the days). Rows are written straight into the log's table (no
   scoring), in time order, as the service appends them. Each day is generated from its own
   seed by a pool of processes (``--write-workers``, default every core) into a scratch
   SQLite file, and copied into the log in day order by SQLite itself; the log's indexes are
   dropped for the copy and rebuilt after it (SQLite's multi-threaded sorter), so the full
   28.8M-event log takes minutes on 16 cores rather than half an hour on one.
2. Runs the job on it with each engine asked for (``embedded`` = as many worker processes
   as this process may use, e.g. under ``taskset``; ``embedded:N`` = N; ``dask:N`` = a
   local multi-process dask cluster of N single-threaded workers), refitting from scratch
   each time, and reports wall time per phase, events/s, CPU, peak memory (the driver and
   the whole process tree) and the extrapolation to the full log. ``--engines none`` only
   writes the log; ``--json PATH`` appends one JSON line per run.
   After each run it reads the published artifact back and reports fleet recovery
   (``fleet_recovery``): per operator, the share of its accounts in a cluster, the clusters
   holding them and their purity, the ordinary accounts in its clusters and the share the
   default policy would enforce on; for the ordinary accounts, the clusters they form, their
   risk (``assess_cluster``, as the service scores them) and what their members share.
3. ``--fit-accounts N`` also times the driver's part alone (assemble + HDBSCAN fit) at N
   accounts, on a log of N accounts with a few events each: the fit grows with accounts, not
   events, so the full incident's fit is measured directly rather than extrapolated.

Run: ``.venv/bin/python bench/recluster.py --scale 0.05 --engines embedded,dask:1,dask:2``;
the 2-core figure of docs/recluster.md: write the log first on every core, then run pinned::

    .venv/bin/python bench/recluster.py --scale 1 --engines none
    taskset -c 0,1 .venv/bin/python bench/recluster.py --scale 1 --engines embedded
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import random
import resource
import shutil
import sqlite3
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from ringfence.service.adapters.event_log import COLUMNS, SqliteEventLog
from ringfence.service.adapters.model_store import ModelStore
from ringfence.service.core.cluster_profiles import assess_cluster
from ringfence.service.core.clustering import ClusterModel
from ringfence.service.core.policy import Policy
from ringfence.service.jobs.engines import DaskEngine, EmbeddedEngine, Engine, usable_cores
from ringfence.service.jobs.recluster import ReclusterOptions, recluster
from ringfence.service.jobs.reports import policy_of
from ringfence.service.jobs.sources import SqliteSource
from ringfence.service.settings import Settings

KEY_HEX = "11" * 32
END = 1_780_617_600.0  # 2026-06-05 00:00 UTC, the incident's last day
DAYS = 45
INCIDENT_EVENTS = 28_800_000
INCIDENT_ACCOUNTS = 25_000
OPERATORS = 5
COUNTRIES = ("US", "DE", "GB", "NL", "FR", "BR", "IN", "JP", "SG", "CA")


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _row(t: float, account: str, ip: str, prefix: str, asn: int, country: str, anon: bool,
         device: str, stack: str, task: int, sig: int | None, created: float | None,
         action: int, reasons: str, risk: float) -> tuple[object, ...]:
    return (t, account, "", "", ip, prefix, asn, country, anon, anon, False, False, device,
            stack, "", "script" if anon else "browser", "", "", "", "/v1/chat", "m1", task,
            400, 900, sig, created, risk, action, action, reasons, "default-1")


class Population:
    def __init__(self, scale: float, seed: int = 1, users_per_fleet: float = 4.0,
                 fleet_events_per_day: float = 25.6) -> None:
        rng = random.Random(seed)
        self.seed = seed
        self.fleet_n = max(OPERATORS * 10, round(INCIDENT_ACCOUNTS * scale))
        self.users_n = round(self.fleet_n * users_per_fleet)
        self.rate = fleet_events_per_day
        self.ops = []
        for k in range(OPERATORS):
            size = self.fleet_n // OPERATORS
            self.ops.append({
                "devices": [_hex(rng) for _ in range(max(4, size // 40))],
                "prefixes": [_hex(rng) for _ in range(max(50, size // 2))],
                "stack": _hex(rng), "asn": 64700 + k,
                "sigs": [rng.getrandbits(63) for _ in range(3)],
                "minute": rng.randrange(60),
            })
        self.users = [{"device": _hex(rng), "prefix": _hex(rng), "ips": [_hex(rng), _hex(rng)],
                       "stack": f"{rng.randrange(20):032x}", "country": rng.choice(COUNTRIES),
                       "asn": 64500 + rng.randrange(40), "hour": rng.gauss(14, 3)}
                      for _ in range(self.users_n)]
        self.created = {i: END - DAYS * 86400 - rng.uniform(0, 5 * 86400)
                        for i in range(self.fleet_n)}

    def day(self, d: int) -> list[tuple[object, ...]]:
        """Day ``d``'s rows in time order, from the day's own seed (so any process can
        generate any day, and the log does not depend on how many wrote it)."""
        rng = random.Random(self.seed * 1_000_003 + d)
        start = END - (DAYS - d) * 86400
        rows = []
        for i in range(self.fleet_n):
            op = self.ops[i % OPERATORS]
            flagged = d >= 20 and i % 3 == 0
            n = max(1, round(rng.gauss(self.rate, 3)))
            for _ in range(n):
                # the operator's clock: requests land on its minute of the hour
                t = start + rng.randrange(24) * 3600 + op["minute"] * 60 + rng.random() * 5
                rows.append(_row(
                    t, f"acct-{i:06d}", _hex(rng), rng.choice(op["prefixes"]), op["asn"],
                    rng.choice(COUNTRIES), rng.random() < 0.7, rng.choice(op["devices"]),
                    op["stack"], rng.choice((2, 3)),
                    rng.choice(op["sigs"]) if rng.random() < 0.6 else None,
                    self.created[i], 2 if flagged else 1,
                    "CLUSTER_SHARED_DEVICES,CLUSTER_SHARED_TEMPLATES" if flagged else "",
                    0.62 if flagged else 0.15))
        for j, u in enumerate(self.users):
            if rng.random() > 0.35:
                continue
            for _ in range(rng.randint(1, 3)):
                t = start + min(86399.0, max(0.0, rng.gauss(u["hour"], 2) * 3600))
                rows.append(_row(t, f"user-{j:06d}", rng.choice(u["ips"]), u["prefix"],
                                 u["asn"], u["country"], False, u["device"], u["stack"], 1,
                                 None, None, 1, "", 0.05))
        rows.sort(key=lambda r: r[0])  # type: ignore[arg-type, return-value]
        return rows


_POPULATION: Population | None = None  # the population a forked writer generates days of
_INSERT = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def _write_day(path: Path, d: int) -> int:
    """Generate day ``d`` into a scratch SQLite file (one table, no index); its row count."""
    assert _POPULATION is not None
    rows = _POPULATION.day(d)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(f"CREATE TABLE events ({', '.join(COLUMNS)})")
    with conn:
        conn.executemany(_INSERT, rows)
    conn.close()
    return len(rows)


def write_log(path: Path, pop: Population, days: int = DAYS, workers: int | None = None
              ) -> tuple[int, dict[str, float]]:
    """The log at ``path`` (the service's schema and indexes) and seconds per phase."""
    global _POPULATION
    timings: dict[str, float] = {}
    started = time.perf_counter()
    SqliteEventLog(path).close()  # the service's schema and indexes
    conn = sqlite3.connect(path)
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.execute("PRAGMA journal_mode=OFF")  # a bulk load of a fresh file: nothing to undo
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1048576")  # 1 GiB for the index sorts
    conn.execute(f"PRAGMA threads={min(8, os.cpu_count() or 1)}")
    indexes = [r[0] for r in conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' "
        "AND sql IS NOT NULL")]
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                "tbl_name = 'events' AND sql IS NOT NULL").fetchall():
        conn.execute(f"DROP INDEX {name}")
    scratch = path.parent / "days"
    scratch.mkdir(exist_ok=True)
    columns = ", ".join(COLUMNS)
    total = 0
    _POPULATION = pop
    workers = workers or os.cpu_count() or 1
    # fork: the writers inherit the population (a bench script: no threads to worry about)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        wanted = range(DAYS - days, DAYS)
        futures = [pool.submit(_write_day, scratch / f"day-{d:02d}.db", d) for d in wanted]
        for d, future in zip(wanted, futures, strict=True):  # copied in day order
            future.result()
            part = scratch / f"day-{d:02d}.db"
            conn.execute("ATTACH DATABASE ? AS part", (str(part),))
            with conn:
                total += conn.execute(f"INSERT INTO events ({columns}) SELECT {columns} FROM "
                                      "part.events ORDER BY rowid").rowcount
            conn.execute("DETACH DATABASE part")
            part.unlink()
            print(f"  day {d + 1}/{DAYS}: {total:,} events", file=sys.stderr, end="\r")
    _POPULATION = None
    print(file=sys.stderr)
    scratch.rmdir()
    timings["rows"] = time.perf_counter() - started
    mark = time.perf_counter()
    for sql in indexes:
        conn.execute(sql)
    conn.commit()
    timings["indexes"] = time.perf_counter() - mark
    conn.execute(f"PRAGMA journal_mode={mode}")
    conn.close()
    return total, timings


def _engine(spec: str) -> Engine:
    if spec == "embedded":
        return EmbeddedEngine()
    if spec.startswith("embedded:"):
        return EmbeddedEngine(int(spec.split(":", 1)[1]))
    if spec.startswith("dask:"):
        return DaskEngine(None, workers=int(spec.split(":", 1)[1]))
    raise SystemExit(f"unknown engine {spec!r}")


class PeakMemory:
    """Peak resident memory of this process and of it with all its descendants (the engine's
    workers: the pool's are the forkserver's children, not ours, so getrusage misses them),
    and the descendants' CPU seconds as last seen; sampled every 0.2 s on a thread."""

    def __init__(self) -> None:
        self.driver = 0
        self.tree = 0
        self.descendants_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            own = me.memory_info().rss
            tree = own
            for child in me.children(recursive=True):
                try:
                    tree += child.memory_info().rss
                    cpu = child.cpu_times()
                    self.descendants_cpu[child.pid] = cpu.user + cpu.system
                except psutil.Error:  # it exited while being read
                    continue
            self.driver = max(self.driver, own)
            self.tree = max(self.tree, tree)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _group(account: str) -> str:
    """``op0``…``op4`` for a fleet account (operator = index % 5), ``user`` for an ordinary one."""
    if account.startswith("acct-"):
        return f"op{int(account[5:]) % OPERATORS}"
    return "user" if account.startswith("user-") else "other"


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def fleet_recovery(model: ClusterModel, policy: Policy, pop: Population | None = None
                   ) -> dict[str, object]:
    """Whether the fit found the fleets, from the published model: per operator, the share
    of its fitted accounts in a cluster, the clusters holding them, their purity (the share
    of their members from that operator) and the ordinary accounts in clusters it is the
    majority of; the share in a risky cluster (``assess_cluster`` risk at least the policy's
    ``enforce_risk``) and the share enforced on (there with membership probability at least
    ``min_probability``, as ``decide`` requires). For the ordinary accounts: the clusters
    they are the majority of, how risky those are, how many ordinary accounts sit in risky
    clusters or would be enforced on, and, given the population, how alike an ordinary
    cluster's members are (the share with its commonest client stack, ASN and country)."""
    enforce, min_p = policy.cluster.enforce_risk, policy.cluster.min_probability
    risk = {cid: assess_cluster(policy.cluster.weights, p).risk
            for cid, p in model.clusters.items()}
    fitted = Counter(_group(a) for a in model.account_ids)
    composition: dict[str, Counter[str]] = {cid: Counter() for cid in model.clusters}
    in_risky: Counter[str] = Counter()
    enforced: Counter[str] = Counter()
    for account, assignment in model.members.items():
        g = _group(account)
        composition[assignment.cluster_id][g] += 1
        if risk[assignment.cluster_id] >= enforce:
            in_risky[g] += 1
            enforced[g] += assignment.probability >= min_p
    majority = {cid: c.most_common(1)[0][0] for cid, c in composition.items() if c}
    out: dict[str, object] = {"clusters": len(model.clusters),
                              "enforce_risk": enforce, "min_probability": min_p}
    operators = []
    for k in range(OPERATORS):
        g = f"op{k}"
        holding = [cid for cid, c in composition.items() if c[g]]
        led = [cid for cid in holding if majority[cid] == g]
        clustered = sum(composition[cid][g] for cid in holding)
        operators.append({
            "operator": k, "accounts": fitted[g], "clustered_share": _share(clustered, fitted[g]),
            "clusters": len(holding), "majority_clusters": len(led),
            "largest_cluster_share": _share(max((composition[c][g] for c in holding), default=0),
                                            fitted[g]),
            "purity": _share(clustered, sum(sum(composition[c].values()) for c in holding)),
            "min_purity": min((_share(composition[c][g], sum(composition[c].values()))
                               for c in holding), default=0.0),
            "ordinary_in_majority_clusters": sum(composition[c]["user"] for c in led),
            "risky_clusters": sum(risk[c] >= enforce for c in holding),
            "max_risk": max((risk[c] for c in holding), default=0.0),
            "in_risky_share": _share(in_risky[g], fitted[g]),
            "enforced_share": _share(enforced[g], fitted[g])})
    out["operators"] = operators
    ordinary = [cid for cid in composition if majority.get(cid) == "user"]
    sizes = sorted(sum(composition[c].values()) for c in ordinary)
    riskiest = max(ordinary, key=lambda c: risk[c], default=None)
    users: dict[str, object] = {
        "accounts": fitted["user"],
        "clustered_share": _share(sum(c["user"] for c in composition.values()), fitted["user"]),
        "majority_clusters": len(ordinary),
        "median_size": sizes[len(sizes) // 2] if sizes else 0,
        "max_size": sizes[-1] if sizes else 0,
        "purity": _share(sum(composition[c]["user"] for c in ordinary), sum(sizes)),
        "risky_majority_clusters": sum(risk[c] >= enforce for c in ordinary),
        "max_risk": risk[riskiest] if riskiest else 0.0,
        "riskiest_reasons": [r.code for r in assess_cluster(
            policy.cluster.weights, model.clusters[riskiest]).reasons] if riskiest else [],
        "in_risky_clusters": in_risky["user"], "enforced": enforced["user"]}
    if pop is not None and ordinary:
        traits = {f"user-{j:06d}": (u["stack"], u["asn"], u["country"])
                  for j, u in enumerate(pop.users)}
        shared = [0, 0, 0]
        for cid in ordinary:
            rows = [traits[a] for a in model.members_of(cid) if a in traits]
            for t in range(3):
                shared[t] += Counter(r[t] for r in rows).most_common(1)[0][1]
        total = sum(composition[c]["user"] for c in ordinary)
        # the population's own odds: 20 stacks, 40 ASNs, 10 countries drawn uniformly
        users["same_stack_share"] = _share(shared[0], total)
        users["same_asn_share"] = _share(shared[1], total)
        users["same_country_share"] = _share(shared[2], total)
    out["ordinary"] = users
    return out


def run(data_dir: Path, spec: str, partitions: int | None, fit_jobs: int | None = None,
        pop: Population | None = None) -> dict[str, object]:
    name = spec.replace(":", "-")
    settings = Settings(data_dir=data_dir, hash_key=KEY_HEX, model_dir=data_dir / f"m-{name}")
    shutil.rmtree(data_dir / f"m-{name}", ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with PeakMemory() as peak:
        result = recluster(settings, SqliteSource(data_dir / "events.db"),
                           ReclusterOptions(since=f"{DAYS}d", partitions=partitions,
                                            force=True, ignore_previous=True,
                                            progress_bar=False, fit_jobs=fit_jobs,
                                            work_dir=data_dir / f"work-{name}"),
                           _engine(spec))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
           + sum(peak.descendants_cpu.values()))
    assert result.artifact is not None  # force=True: always published
    model, _ = ModelStore(result.artifact.parent, bytes.fromhex(KEY_HEX)).load(
        result.artifact)
    return {"engine": spec, "wall": wall, "cpu": cpu, "events": result.events,
            "aggregate_cpu": result.aggregate_cpu_seconds,
            "accounts": result.accounts, "clusters": result.clusters, "noise": result.noise,
            "partitions": result.partitions, "timings": result.timings,
            "peak_rss_driver_mib": peak.driver / 2**20, "peak_rss_tree_mib": peak.tree / 2**20,
            "usable_cores": usable_cores(), "load_average": os.getloadavg()[0],
            "recovery": fleet_recovery(model, policy_of(settings), pop)}


def calibrate() -> float:
    """ns per iteration of a plain Python loop: how fast (and how contended) this core is."""
    started = time.perf_counter()
    total = 0
    for i in range(3_000_000):
        total += i
    return (time.perf_counter() - started) / 3_000_000 * 1e9


def _report(r: dict[str, object]) -> None:
    t: dict[str, float] = r["timings"]  # type: ignore[assignment]
    events: int = r["events"]  # type: ignore[assignment]
    aggregate = t["aggregate"]
    cpu_per_event = r["aggregate_cpu"] / events  # type: ignore[operator]
    print(f"{r['engine']:>11}: {r['wall']:7.1f} s wall, {r['cpu']:7.1f} s CPU, "
          f"{events / r['wall']:9,.0f} events/s end to end "  # type: ignore[operator]
          f"({INCIDENT_EVENTS / events * r['wall'] / 60:.1f} min for 28.8M at this rate); "
          + ", ".join(f"{k} {v:.1f}" for k, v in t.items())
          + f"; {r['accounts']:,} accounts, {r['clusters']} clusters, "
            f"{r['partitions']} partitions; peak RSS {r['peak_rss_driver_mib']:,.0f} MiB "
            f"driver, {r['peak_rss_tree_mib']:,.0f} MiB with workers; "
            f"{r['usable_cores']} usable cores, load average {r['load_average']:.1f}")
    print(f"{'':>11}  aggregation {events / aggregate:,.0f} events/s wall; "
          f"{cpu_per_event * 1e6:.1f} µs CPU/event in the workers = "
          f"{1 / cpu_per_event:,.0f} events/s per busy core "
          f"({INCIDENT_EVENTS * cpu_per_event / 60:.1f} core-minutes for 28.8M)", flush=True)
    _report_recovery(r["recovery"])  # type: ignore[arg-type]


def _report_recovery(rec: dict[str, Any]) -> None:
    print(f"{'':>11}  fleet recovery ({rec['clusters']} clusters; risky = risk ≥ "
          f"{rec['enforce_risk']}, enforced = risky and membership ≥ {rec['min_probability']}):")
    for o in rec["operators"]:
        print(f"{'':>13}operator {o['operator']}: {o['accounts']:,} accounts, "
              f"{o['clustered_share']:.1%} clustered in {o['clusters']} clusters "
              f"({o['majority_clusters']} it leads; the largest holds "
              f"{o['largest_cluster_share']:.1%}), purity {o['purity']:.1%} (min "
              f"{o['min_purity']:.1%}), {o['ordinary_in_majority_clusters']} ordinary accounts "
              f"in its clusters; {o['risky_clusters']} risky (max risk {o['max_risk']:.3f}): "
              f"{o['in_risky_share']:.1%} in a "
              f"risky cluster, {o['enforced_share']:.1%} enforced")
    u = rec["ordinary"]
    alike = (f"; members sharing the cluster's commonest stack {u['same_stack_share']:.0%}, "
             f"ASN {u['same_asn_share']:.0%}, country {u['same_country_share']:.0%}"
             if "same_stack_share" in u else "")
    print(f"{'':>13}ordinary: {u['accounts']:,} accounts, {u['clustered_share']:.1%} clustered; "
          f"{u['majority_clusters']} ordinary clusters (median {u['median_size']}, max "
          f"{u['max_size']} members, purity {u['purity']:.1%}){alike}; "
          f"{u['risky_majority_clusters']} risky (max risk {u['max_risk']:.3f}"
          f"{': ' + ','.join(u['riskiest_reasons']) if u['riskiest_reasons'] else ''}); "
          f"{u['in_risky_clusters']} ordinary accounts in risky clusters, {u['enforced']} "
          "enforced", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=0.05, help="share of the incident (0.05 = "
                                                            "1/20: 1.44M fleet events)")
    p.add_argument("--engines", default="embedded,dask:1,dask:2",
                   help="comma-separated: embedded, embedded:N, dask:N; none: write the log "
                        "only")
    p.add_argument("--partitions", type=int, help="default: the job's (one per million "
                                                  "events, at least 2 per worker)")
    p.add_argument("--dir", type=Path, default=Path("/tmp/ringfence-bench-recluster"))
    p.add_argument("--write-workers", type=int,
                   help="processes generating the log (default: every core of the machine)")
    p.add_argument("--json", type=Path, help="append one JSON line per run here")
    p.add_argument("--fit-jobs", type=int, help="HDBSCAN core-distance threads (default: the "
                                                "job's, the usable cores up to 4)")
    p.add_argument("--fit-accounts", type=int, default=0,
                   help="also time assemble + fit alone at this many accounts")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores ({usable_cores()} usable), "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}, "
          f"plain loop {calibrate():.0f} ns/iteration", flush=True)

    data = args.dir / f"scale-{args.scale}"
    if not (data / "events.db.done").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        started = time.perf_counter()
        pop = Population(args.scale)
        population = time.perf_counter() - started
        n, phases = write_log(data / "events.db", pop, workers=args.write_workers)
        (data / "events.db.done").write_text(str(n))
        wall = time.perf_counter() - started
        print(f"log: {n:,} events ({pop.fleet_n:,} fleet + {pop.users_n:,} ordinary "
              f"accounts) written in {wall:.0f} s (population {population:.1f} s, rows "
              f"{phases['rows']:.1f} s, indexes {phases['indexes']:.1f} s; "
              f"{n / wall:,.0f} rows/s) by {args.write_workers or os.cpu_count()} processes, "
              f"{(data / 'events.db').stat().st_size / 2**20:,.0f} MiB", flush=True)
        if args.json:
            with args.json.open("a") as out:
                out.write(json.dumps({"log": str(data), "events": n, "wall": wall,
                                      "population": population, **phases}) + "\n")
    events = int((data / "events.db.done").read_text())
    print(f"log: {events:,} events in {data / 'events.db'}", flush=True)

    specs = [e for e in args.engines.split(",") if e and e != "none"]
    pop = Population(args.scale) if specs else None  # who is who, for fleet_recovery
    for spec in specs:
        shutil.rmtree(data / f"work-{spec.replace(':', '-')}", ignore_errors=True)
        r = run(data, spec, args.partitions, args.fit_jobs, pop)
        _report(r)
        if args.json:
            with args.json.open("a") as out:
                out.write(json.dumps({"log": str(data), **r}) + "\n")
    print(f"load average now {os.getloadavg()[0]:.1f}, plain loop {calibrate():.0f} "
          "ns/iteration")

    if args.fit_accounts:
        fit_dir = args.dir / f"fit-{args.fit_accounts}"
        if not (fit_dir / "events.db.done").exists():
            shutil.rmtree(fit_dir, ignore_errors=True)
            fit_dir.mkdir(parents=True)
            # a fifth fleet, four fifths ordinary, as in the scaled log
            pop = Population(args.fit_accounts / 5 / INCIDENT_ACCOUNTS,
                             fleet_events_per_day=1.0)
            n, _ = write_log(fit_dir / "events.db", pop, days=3, workers=args.write_workers)
            (fit_dir / "events.db.done").write_text(str(n))
        r = run(fit_dir, "embedded", None)
        t = r["timings"]
        print(f"fit alone: {r['accounts']:,} accounts → assemble "
              f"{t['assemble']:.1f} s, fit {t['fit']:.1f} s, publish "  # type: ignore[index]
              f"{t['publish']:.1f} s ({r['clusters']} clusters)")  # type: ignore[index]


if __name__ == "__main__":
    main()
