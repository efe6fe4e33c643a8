"""Load-generating client processes: closed loop (N calls always in flight) or open loop
(a fixed send rate, latency counted from the scheduled send time, so a slow server cannot hide
its queueing by slowing the client down).

Requests are serialized before the run and responses are not parsed: the client sends and
receives bytes through a plain grpc.aio multi-callable, so its cost per call is as small as
grpc.aio allows and the same for every server measured.
"""

from __future__ import annotations

import asyncio
import os
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import grpc
from servers import pin_to
from workload import Population

from ringfence.service.api.servicer import SERVICE_NAME
from ringfence.v1 import risk_pb2 as pb

SCORE_METHOD = f"/{SERVICE_NAME}/Score"


@dataclass(frozen=True)
class LoadSpec:
    mode: str  # "closed" or "open"
    warmup_s: float
    measure_s: float
    concurrency: int = 16  # closed loop: calls in flight per process
    rate: float = 0.0  # open loop: requests per second for this process
    max_in_flight: int = 2000  # open loop: beyond this a send is skipped and counted
    timeout_s: float = 5.0
    pool_size: int = 20_000
    seed: int = 1
    population_seed: int = 7
    accounts: int = 10_000
    devices: int = 3_000
    ips: int = 4_000
    cpus: frozenset[int] | None = None


def run_client(spec: LoadSpec, conn: Connection) -> None:
    """Process entry point: build the request pool, report ready, wait for the parent's
    ("go", target, start time), run, send back the result dict. Everything is bounded by the
    spec's times."""
    pin_to(set(spec.cpus) if spec.cpus else None)
    try:
        population = Population(seed=spec.population_seed, accounts=spec.accounts,
                                devices=spec.devices, ips=spec.ips)
        pool = population.request_pool(spec.pool_size, spec.seed)
        conn.send(("ready", os.getpid()))
        if not conn.poll(120):
            raise TimeoutError("no start time from the parent")
        _, target, start_at = conn.recv()
        result = asyncio.run(_run(spec, target, pool, start_at))
        conn.send(("result", result))
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


async def _run(spec: LoadSpec, target: str, pool: list[bytes], start_at: float
               ) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(SCORE_METHOD)  # bytes in, bytes out
        await asyncio.wait_for(channel.channel_ready(), 10)
        # One checked call: the server must answer a real ScoreResponse, not an error.
        pb.ScoreResponse.FromString(await call(pool[0], timeout=spec.timeout_s))
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        if spec.mode == "closed":
            return await _closed(spec, call, pool, start_at)
        return await _open(spec, call, pool, start_at)


async def _closed(spec: LoadSpec, call: Any, pool: list[bytes], start_at: float
                  ) -> dict[str, Any]:
    window = start_at + spec.warmup_s
    end = window + spec.measure_s
    latencies = array("d")
    errors: Counter[str] = Counter()
    n = len(pool)

    async def worker(w: int) -> None:
        i = w * (n // max(1, spec.concurrency))
        clock = time.monotonic
        while True:
            t0 = clock()
            if t0 >= end:
                return
            try:
                await call(pool[i % n], timeout=spec.timeout_s)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                i += 1
                continue
            t1 = clock()
            if t1 >= window and t1 < end:
                latencies.append(t1 - t0)
            i += 1

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(w) for w in range(spec.concurrency)))
    return {"latencies": latencies.tobytes(), "errors": dict(errors),
            "completed": len(latencies), "cpu_s": time.process_time() - cpu0}


async def _open(spec: LoadSpec, call: Any, pool: list[bytes], start_at: float
                ) -> dict[str, Any]:
    window = start_at + spec.warmup_s
    end = window + spec.measure_s
    rate = spec.rate
    latencies = array("d")  # completion − scheduled send time
    send_lag = array("d")  # actual − scheduled send time (the client's own delay)
    errors: Counter[str] = Counter()
    skipped = 0
    in_flight = 0
    tasks: set[asyncio.Task[None]] = set()
    n = len(pool)
    clock = time.monotonic

    async def one(body: bytes, scheduled: float, counted: bool) -> None:
        nonlocal in_flight
        try:
            if counted:
                send_lag.append(clock() - scheduled)
            await call(body, timeout=spec.timeout_s)
            if counted:
                latencies.append(clock() - scheduled)
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += 1
        finally:
            in_flight -= 1

    i = 0
    cpu0 = time.process_time()
    while True:
        now = clock()
        if now >= end:
            break
        due = int((now - start_at) * rate) + 1
        while i < due:
            scheduled = start_at + i / rate
            counted = window <= scheduled < end
            if in_flight >= spec.max_in_flight:
                skipped += counted
            else:
                in_flight += 1
                task = asyncio.create_task(one(pool[i % n], scheduled, counted))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(max(0.0, start_at + i / rate - clock()))
    if tasks:
        await asyncio.wait(set(tasks), timeout=spec.timeout_s + 1)
    for task in tasks:
        task.cancel()
    return {"latencies": latencies.tobytes(), "send_lag": send_lag.tobytes(),
            "errors": dict(errors), "completed": len(latencies), "skipped": skipped,
            "scheduled": int(spec.measure_s * rate), "cpu_s": time.process_time() - cpu0}
