"""Where a Score call's time goes, in process (no gRPC transport): the servicer's steps timed one
by one, cProfile over the request path, and the cost of one profile checkpoint (which App runs
on the event loop every ``checkpoint_interval_s``). The store and event log are persisted to a
temporary directory as with ``persist=True``, so the SQLite writer threads run meanwhile. The
garbage collector is set up as App sets it up before serving (``app.warm_up``: start-up objects
frozen, a larger first generation), so collections cost what they cost in the server.

Run: ``.venv/bin/python bench/profile_score.py [--requests N]``. Prints figures only.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

from workload import Population

from ringfence.service.adapters.clock import SystemClock
from ringfence.service.adapters.embedded_store import EmbeddedProfileStore
from ringfence.service.adapters.event_log import NullEventLog, SqliteEventLog
from ringfence.service.adapters.geoip import GeoIpPaths, MaxMindGeoIp
from ringfence.service.api.convert import Limits, to_observation, to_score_response
from ringfence.service.app import warm_up
from ringfence.service.core.engine import RiskEngine
from ringfence.service.core.identity import Hasher
from ringfence.service.core.policy import Policy
from ringfence.service.settings import Settings
from ringfence.v1 import risk_pb2 as pb


def build(
    data_dir: Path, settings: Settings
) -> tuple[RiskEngine, EmbeddedProfileStore, SqliteEventLog]:
    """As App.start builds it with persist=True (no GeoIP databases: embedded defaults)."""
    store = EmbeddedProfileStore(
        data_dir / "state.db",
        max_accounts=settings.max_accounts_in_memory,
        max_shared=settings.max_shared_in_memory,
    )
    events = SqliteEventLog(data_dir / "events.db", synchronous=settings.event_log_sync)
    engine = RiskEngine(
        policy=Policy(),
        geoip=MaxMindGeoIp(GeoIpPaths(), cache_size=settings.geoip_cache_size),
        store=store,
        events=events,
        clock=SystemClock(),
        hasher=Hasher(bytes(range(32))),
    )
    return engine, store, events


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="requests per measurement")
    p.add_argument("--top", type=int, default=25, help="functions listed per profile")
    args = p.parse_args()
    settings = Settings(persist=True)
    limits = Limits(
        max_clock_skew_s=settings.max_clock_skew_s, max_event_age_s=settings.max_event_age_s
    )
    population = Population()
    pool = population.request_pool(args.requests, seed=3)
    clock = SystemClock()

    with tempfile.TemporaryDirectory(prefix="ringfence-profile-") as tmp:
        engine, store, events = build(Path(tmp), settings)
        engine_geoip = MaxMindGeoIp(GeoIpPaths(), cache_size=settings.geoip_cache_size)
        try:
            for body in population.request_pool(3000, seed=4):  # warm caches
                engine.score(
                    to_observation(pb.ScoreRequest.FromString(body), now=clock.now(), limits=limits)
                )
            store.flush()
            events.flush()
            warm_up()

            # 1. Step by step.
            steps = {
                "deserialize": 0.0,
                "to_observation": 0.0,
                "engine.score": 0.0,
                "to_score_response": 0.0,
                "serialize": 0.0,
            }
            # This thread's CPU time, not wall time: steadier on a shared machine (wall time
            # is printed too; it also holds the waits for the GIL behind the writer threads).
            tick = time.thread_time
            started, wall0, process0 = tick(), time.perf_counter(), time.process_time()
            for body in pool:
                t0 = tick()
                request = pb.ScoreRequest.FromString(body)
                t1 = tick()
                obs = to_observation(request, now=clock.now(), limits=limits)
                t2 = tick()
                decision = engine.score(obs)
                t3 = tick()
                response = to_score_response(decision)
                t4 = tick()
                response.SerializeToString()
                t5 = tick()
                steps["deserialize"] += t1 - t0
                steps["to_observation"] += t2 - t1
                steps["engine.score"] += t3 - t2
                steps["to_score_response"] += t4 - t3
                steps["serialize"] += t5 - t4
            cpu, wall = tick() - started, time.perf_counter() - wall0
            n = len(pool)
            # The whole process, the SQLite writer threads included: these requests' events
            # and one checkpoint of the profiles they changed, written and committed.
            checkpointed = store.checkpoint()
            store.flush()
            events.flush()
            process = time.process_time() - process0
            print(
                f"Score path in process, {n} requests (persisted store and event log), "
                "CPU time of the serving thread:"
            )
            for name, total in steps.items():
                print(f"  {name:<18} {total / n * 1e6:7.1f} µs")
            print(
                f"  {'total':<18} {cpu / n * 1e6:7.1f} µs/request "
                f"(≈ {n / cpu:.0f} req/s on one core, before gRPC); wall "
                f"{wall / n * 1e6:.1f} µs/request"
            )
            print(
                f"  {'whole process':<18} {process / n * 1e6:7.1f} µs/request (serving thread, "
                f"one checkpoint of {checkpointed} profiles and the SQLite writer threads "
                "committing them and the events)"
            )

            # 1b. The same engine.score without the event log (a second engine on the same
            # store and GeoIP): the difference is what appending an event costs this thread.
            quiet = RiskEngine(
                policy=Policy(),
                geoip=engine_geoip,
                store=store,
                events=NullEventLog(),
                clock=clock,
                hasher=Hasher(bytes(range(32))),
            )
            observations = [
                to_observation(pb.ScoreRequest.FromString(b), now=clock.now(), limits=limits)
                for b in pool
            ]
            timed = {}
            for name, eng in (("with event log", engine), ("without event log", quiet)):
                t0 = tick()
                for obs in observations:
                    eng.score(obs)
                timed[name] = (tick() - t0) / n * 1e6
            print(
                "  engine.score again, same requests: "
                + ", ".join(f"{name} {us:.1f} µs" for name, us in timed.items())
            )

            # 2. One checkpoint of everything the loops of 1b changed.
            dirty = sum(len(b.dirty) for b in (store.accounts, store.devices, store.prefixes))
            t0 = tick()
            written = store.checkpoint()
            took = tick() - t0
            print(
                f"\nCheckpoint of {written} changed profiles ({dirty} dirty keys): "
                f"{took * 1e3:.1f} ms CPU on the calling thread (the event loop in App) = "
                f"{took / max(1, written) * 1e6:.1f} µs per profile"
            )
            events.flush()

            # 3. cProfile over the request path, then over one checkpoint.
            profiler = cProfile.Profile()
            pool2 = population.request_pool(args.requests, seed=5)
            profiler.enable()
            for body in pool2:
                to_score_response(
                    engine.score(
                        to_observation(
                            pb.ScoreRequest.FromString(body), now=clock.now(), limits=limits
                        )
                    )
                ).SerializeToString()
            profiler.disable()
            _print_profile(profiler, f"cProfile, {len(pool2)} requests", args.top, len(pool2))
            profiler = cProfile.Profile()
            profiler.enable()
            written = store.checkpoint()
            profiler.disable()
            _print_profile(
                profiler, f"cProfile, one checkpoint of {written} profiles", min(args.top, 12), 1
            )
        finally:
            store.close()
            events.close()


def _print_profile(profiler: cProfile.Profile, title: str, top: int, per: int) -> None:
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(
        f"\n{title}: {total * 1e3:.0f} ms in all"
        + (f", {total / per * 1e6:.1f} µs per request" if per > 1 else "")
    )
    for sort, label in (("tottime", "own time"), ("cumulative", "including callees")):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(top)
        rows = [line for line in out.getvalue().splitlines() if line.strip()]
        start = next(i for i, line in enumerate(rows) if line.lstrip().startswith("ncalls"))
        print(f"  by {label}:")
        for line in rows[start : start + top + 1]:
            print("   " + line.replace(str(Path.cwd()) + "/", ""))


if __name__ == "__main__":
    main()
