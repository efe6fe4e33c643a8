"""Where a Score call's server CPU goes over gRPC: the real App with parts of its Score method
switched off, side by side with the no-op server, under the same closed-loop load.

Variants (each a fresh server process pinned like ``score_throughput.py`` pins them):

* ``noop``: the no-op server of ``bench/servers.py`` (gRPC and this harness alone).
* ``app-constant``: the real App (persist, clustering, background jobs), but Score answers a
  constant response: what the App's gRPC set-up costs beyond the no-op.
* ``app-convert``: as above, but Score also validates and converts the request
  (``to_observation``).
* ``app``: the real App.
* ``app-steps``: the real App, with the thread CPU of each step of Score measured inside the
  server (``to_observation``, ``engine.score``, the decision observers, ``to_score_response``)
  and printed as µs per call when the server stops.

The differences between variants in the same round are the costs of the parts; the rest of the
server's main-thread CPU is gRPC, asyncio and the App's background jobs on the loop. Rounds
alternate the order. Figures only, no pass or fail.

Run: ``.venv/bin/python bench/score_breakdown.py [--variants noop,app-constant,app] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import grpc
import harness
import loadgen
import servers

from ringfence.service.api import servicer as servicer_module
from ringfence.service.api.convert import to_observation, to_score_response
from ringfence.service.settings import Settings
from ringfence.v1 import risk_pb2 as pb

VARIANTS = ("noop", "app-constant", "app-convert", "app", "app-steps")


def _patch_score(variant: str, report: dict[str, Any]) -> None:
    """Replace RiskServicer.Score in this (server) process for ``variant``."""
    cls = servicer_module.RiskServicer
    constant = servers.constant_response()
    if variant == "app-constant":

        async def score_constant(
            self: Any, request: pb.ScoreRequest, context: grpc.aio.ServicerContext
        ) -> pb.ScoreResponse:
            return constant

        cls.Score = score_constant  # type: ignore[method-assign]
    elif variant == "app-convert":

        async def score_convert(
            self: Any, request: pb.ScoreRequest, context: grpc.aio.ServicerContext
        ) -> pb.ScoreResponse:
            to_observation(request, now=self._clock.now(), limits=self._limits)
            return constant

        cls.Score = score_convert  # type: ignore[method-assign]
    elif variant == "app-steps":
        spent = dict.fromkeys(("to_observation", "engine.score", "observers", "to_response"), 0.0)
        tick = time.thread_time

        async def score_steps(
            self: Any, request: pb.ScoreRequest, context: grpc.aio.ServicerContext
        ) -> pb.ScoreResponse:
            t0 = tick()
            obs = to_observation(request, now=self._clock.now(), limits=self._limits)
            t1 = tick()
            decision = self._engine.score(obs)
            t2 = tick()
            if self._on_decision is not None:
                self._on_decision(decision)
            t3 = tick()
            response = to_score_response(decision)
            t4 = tick()
            spent["to_observation"] += t1 - t0
            spent["engine.score"] += t2 - t1
            spent["observers"] += t3 - t2
            spent["to_response"] += t4 - t3
            report["calls"] = report.get("calls", 0) + 1
            return response

        report["spent"] = spent
        cls.Score = score_steps  # type: ignore[method-assign]


def serve(
    variant: str,
    settings: Settings,
    events: Queue,
    stop: Event,
    parent: int,
    lifetime_s: float,
    cpus: set[int] | None,
) -> None:
    """Process entry point for the App variants."""
    loadgen.pin_to(cpus)
    report: dict[str, Any] = {}
    _patch_score(variant, report)
    asyncio.run(servers._serve_score(settings, events, stop, parent, lifetime_s, False, 0))
    calls = report.get("calls", 0)
    if calls:
        steps = ", ".join(f"{k} {v / calls * 1e6:.1f}" for k, v in report["spent"].items())
        print(f"      {variant} steps, thread CPU µs per call over {calls} calls: {steps}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="noop,app-constant,app-convert,app,app-steps")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--measure", type=float, default=8.0)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    usable = sorted(os.sched_getaffinity(0))
    server_cpus = {usable[0]} if len(usable) > 1 else None
    client_cpus = frozenset(usable[1:]) if server_cpus else None
    spec = loadgen.LoadSpec(
        mode="closed",
        warmup_s=args.warmup,
        measure_s=args.measure,
        concurrency=args.concurrency,
        rpcs=("score",),
    )
    print(f"machine: {harness.machine()}", flush=True)
    ctx = multiprocessing.get_context("spawn")
    children = harness.Children(ctx)
    with tempfile.TemporaryDirectory(prefix="ringfence-breakdown-") as tmp:
        try:
            with harness.client_group(children, spec, args.clients, client_cpus) as group:
                for rnd in range(1, args.rounds + 1):
                    for variant in variants if rnd % 2 else variants[::-1]:
                        settings = Settings(
                            host="127.0.0.1",
                            port=0,
                            persist=True,
                            data_dir=Path(tmp) / f"{variant}-{rnd}",
                        )
                        events, stop = ctx.Queue(), ctx.Event()
                        lifetime = args.warmup + args.measure + 300
                        if variant == "noop":
                            target: Any = servers.serve
                            call_args: tuple[Any, ...] = (
                                "noop",
                                settings,
                                events,
                                stop,
                                os.getpid(),
                                lifetime,
                                server_cpus,
                                False,
                            )
                        else:
                            target = serve
                            call_args = (
                                variant,
                                settings,
                                events,
                                stop,
                                os.getpid(),
                                lifetime,
                                server_cpus,
                            )
                        proc = children.start(target, *call_args, stop=stop, daemon=False)
                        message = harness._next_event(events, proc, 120)
                        if message[0] != "ready":
                            raise RuntimeError(f"{variant} did not start: {message}")
                        out = harness.drive(
                            group, harness.Server(variant, proc.pid, message[1]), spec
                        )
                        stop.set()
                        children.reap(proc, 30)
                        main_us = (
                            out["server_main_thread_cores"]
                            * args.measure
                            / max(1, out["completed"])
                            * 1e6
                        )
                        print(
                            f"  round {rnd} {variant:<13} {out['rps']:6.0f} req/s  server "
                            f"{out['server_us_per_req']:4.0f} µs CPU/req (main thread "
                            f"{main_us:4.0f})  {out['server_cores']:.2f} cores  p99 "
                            f"{out['p99_ms']:5.1f} ms  load {os.getloadavg()[0]:.1f}",
                            flush=True,
                        )
        finally:
            children.close()


if __name__ == "__main__":
    main()
