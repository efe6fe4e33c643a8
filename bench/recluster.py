"""End-to-end cost of ``ringfence recluster`` on a scaled incident log, printed as figures.

1. Writes a SQLite event log shaped like the incident (docs/recluster.md, "Benchmark"): over
   45 days, ``25,000 × scale`` fleet accounts making ~25.6 requests a day each (1,152 in all:
   the incident's 28.8M events at scale 1), run by five operators that each share a device
   pool, a residential-proxy prefix pool, a client stack, prompt templates and a clock; among
   ``100,000 × scale`` ordinary accounts (own device, a home prefix, browser stacks, ~1
   request on a third of the days). Rows are written straight into the log's table (no
   scoring), in time order, as the service appends them.
2. Runs the job on it with each engine asked for (``embedded``; ``dask:N`` = a local
   multi-process dask cluster of N single-threaded workers), refitting from scratch each
   time, and reports wall time per phase, events/s and the extrapolation to the full log.
3. ``--fit-accounts N`` also times the driver's part alone (assemble + HDBSCAN fit) at N
   accounts, on a log of N accounts with a few events each: the fit grows with accounts, not
   events, so the full incident's fit is measured directly rather than extrapolated.

Run: ``.venv/bin/python bench/recluster.py --scale 0.05 --engines embedded,dask:1,dask:2``
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import resource
import shutil
import sqlite3
import sys
import time
from pathlib import Path

from ringfence.service.adapters.event_log import COLUMNS, SqliteEventLog
from ringfence.service.jobs.engines import DaskEngine, EmbeddedEngine, Engine
from ringfence.service.jobs.recluster import ReclusterOptions, recluster
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
        self.rng = rng
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
        rng = self.rng
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


def write_log(path: Path, pop: Population, days: int = DAYS) -> int:
    SqliteEventLog(path).close()  # the service's schema and indexes
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    insert = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    total = 0
    for d in range(DAYS - days, DAYS):
        rows = pop.day(d)
        with conn:
            conn.executemany(insert, rows)
        total += len(rows)
        print(f"  day {d + 1}/{DAYS}: {total:,} events", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    conn.close()
    return total


def _engine(spec: str) -> Engine:
    if spec == "embedded":
        return EmbeddedEngine()
    if spec.startswith("dask:"):
        return DaskEngine(None, workers=int(spec.split(":", 1)[1]))
    raise SystemExit(f"unknown engine {spec!r}")


def run(data_dir: Path, spec: str, partitions: int | None) -> dict[str, object]:
    settings = Settings(data_dir=data_dir, hash_key=KEY_HEX, model_dir=data_dir / f"m-{spec}")
    shutil.rmtree(data_dir / f"m-{spec}", ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = recluster(settings, SqliteSource(data_dir / "events.db"),
                       ReclusterOptions(since=f"{DAYS}d", partitions=partitions, force=True,
                                        ignore_previous=True, progress_bar=False),
                       _engine(spec))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
           + children_after.ru_utime + children_after.ru_stime
           - children.ru_utime - children.ru_stime)
    return {"engine": spec, "wall": wall, "cpu": cpu, "events": result.events,
            "aggregate_cpu": result.aggregate_cpu_seconds,
            "accounts": result.accounts, "clusters": result.clusters, "noise": result.noise,
            "partitions": result.partitions, "timings": result.timings}


def calibrate() -> float:
    """ns per iteration of a plain Python loop: how fast (and how contended) this core is."""
    started = time.perf_counter()
    total = 0
    for i in range(3_000_000):
        total += i
    return (time.perf_counter() - started) / 3_000_000 * 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=0.05, help="share of the incident (0.05 = "
                                                            "1/20: 1.44M fleet events)")
    p.add_argument("--engines", default="embedded,dask:1,dask:2")
    p.add_argument("--partitions", type=int, help="default: one per million events, at "
                                                  "least 2 per dask worker")
    p.add_argument("--dir", type=Path, default=Path("/tmp/ringfence-bench-recluster"))
    p.add_argument("--fit-accounts", type=int, default=0,
                   help="also time assemble + fit alone at this many accounts")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}, "
          f"plain loop {calibrate():.0f} ns/iteration")

    data = args.dir / f"scale-{args.scale}"
    if not (data / "events.db.done").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        pop = Population(args.scale)
        started = time.perf_counter()
        n = write_log(data / "events.db", pop)
        (data / "events.db.done").write_text(str(n))
        print(f"log: {n:,} events ({pop.fleet_n:,} fleet + {pop.users_n:,} ordinary "
              f"accounts) written in {time.perf_counter() - started:.0f} s, "
              f"{(data / 'events.db').stat().st_size / 2**20:,.0f} MiB")
    events = int((data / "events.db.done").read_text())

    rows = []
    for spec in args.engines.split(","):
        workers = int(spec.split(":")[1]) if spec.startswith("dask:") else 1
        parts = args.partitions or max(2 * workers, -(-events // 1_000_000))
        r = run(data, spec, parts)
        rows.append(r)
        t = r["timings"]
        print(f"{spec:>9}: {r['wall']:7.1f} s wall, {r['cpu']:7.1f} s CPU, "
              f"{r['events'] / r['wall']:9,.0f} events/s end to end; "
              + ", ".join(f"{k} {v:.1f}" for k, v in t.items())  # type: ignore[union-attr]
              + f"; {r['accounts']:,} accounts, {r['clusters']} clusters, "
                f"{r['partitions']} partitions")
    for r in rows:
        t = r["timings"]
        aggregate = t["aggregate"]  # type: ignore[index]
        per_event = aggregate / r["events"]  # type: ignore[operator]
        cpu_per_event = r["aggregate_cpu"] / r["events"]  # type: ignore[operator]
        print(f"{r['engine']:>9}: aggregation {r['events'] / aggregate:,.0f} events/s wall "
              f"({INCIDENT_EVENTS * per_event / 60:.1f} min for 28.8M); "
              f"{cpu_per_event * 1e6:.1f} µs CPU/event in the workers = "
              f"{1 / cpu_per_event:,.0f} events/s per busy core "
              f"({INCIDENT_EVENTS * cpu_per_event / 60:.1f} core-minutes for 28.8M)")
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
            n = write_log(fit_dir / "events.db", pop, days=3)
            (fit_dir / "events.db.done").write_text(str(n))
        r = run(fit_dir, "embedded", None)
        t = r["timings"]
        print(f"fit alone: {r['accounts']:,} accounts → assemble "
              f"{t['assemble']:.1f} s, fit {t['fit']:.1f} s, publish "  # type: ignore[index]
              f"{t['publish']:.1f} s ({r['clusters']} clusters)")  # type: ignore[index]


if __name__ == "__main__":
    main()
