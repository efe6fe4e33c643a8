"""Load-generating client processes: closed loop (N calls always in flight) or open loop
(a fixed send rate, latency counted from the scheduled send time, so a slow server cannot hide
its queueing by slowing the client down).

Three RPCs: ``score`` (RiskService/Score), ``batch`` (RiskService/ScoreBatch with
``batch_size`` items per call) and ``check`` (Envoy's Authorization/Check with a CheckRequest
built from the real xds-protos messages). Requests are serialized before the run and responses
are not parsed (except one checked call per phase): the client sends and receives bytes through
a plain grpc.aio multi-callable, so its cost per call is as small as grpc.aio allows and the
same for every server measured.

A client process builds its pools once, then runs phase after phase: it waits for
("go", target, start time, LoadSpec) and answers ("result", dict); EOF on its pipe ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.message import Message
from workload import Population

from ringfence.v1 import risk_pb2 as pb

# Names from the descriptors, so a client process imports no service code.
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RiskService"].full_name
AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
METHODS = {
    "score": f"/{SERVICE_NAME}/Score",
    "batch": f"/{SERVICE_NAME}/ScoreBatch",
    "check": f"/{AUTHORIZATION_SERVICE}/Check",
}
RESPONSES: dict[str, type[Message]] = {
    "score": pb.ScoreResponse,
    "batch": pb.ScoreBatchResponse,
    "check": external_auth_pb2.CheckResponse,
}
RPC_NAMES = {"score": "Score", "batch": "ScoreBatch", "check": "Check"}
IDLE_TIMEOUT_S = 3600.0  # a client waits at most this long for its next phase


@dataclass(frozen=True)
class LoadSpec:
    mode: str  # "closed" or "open"
    warmup_s: float
    measure_s: float
    rpc: str = "score"  # the phase's RPC: "score", "batch" or "check"
    rpcs: tuple[str, ...] = ("score",)  # the pools a client builds at start
    batch_size: int = 16  # ScoreBatch: items per call
    concurrency: int = 16  # closed loop: calls in flight per process
    rate: float = 0.0  # open loop: calls per second for this process
    max_in_flight: int = 2000  # open loop: beyond this a send is skipped and counted
    timeout_s: float = 5.0
    pool_size: int = 20_000  # distinct requests per process (batch: pool_size / batch_size)
    seed: int = 1
    population_seed: int = 7
    accounts: int = 10_000
    devices: int = 3_000
    ips: int = 4_000
    cpus: frozenset[int] | None = None

    @property
    def items_per_call(self) -> int:
        return self.batch_size if self.rpc == "batch" else 1


def pin_to(cpus: set[int] | None) -> None:
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)


def build_pool(population: Population, spec: LoadSpec, rpc: str) -> list[bytes]:
    if rpc == "score":
        return population.request_pool(spec.pool_size, spec.seed)
    if rpc == "batch":
        calls = max(8, spec.pool_size // spec.batch_size)
        return population.batch_pool(calls, spec.batch_size, spec.seed)
    if rpc == "check":
        return population.check_pool(spec.pool_size, spec.seed)
    raise ValueError(f"unknown rpc {rpc!r}")


def run_client(spec: LoadSpec, conn: Connection) -> None:
    """Process entry point: build the request pools, report ready, then run each phase the
    parent sends and send back its result dict. Every phase is bounded by its spec's times."""
    pin_to(set(spec.cpus) if spec.cpus else None)
    try:
        population = Population(
            seed=spec.population_seed, accounts=spec.accounts, devices=spec.devices, ips=spec.ips
        )
        pools = {rpc: build_pool(population, spec, rpc) for rpc in spec.rpcs}
        conn.send(("ready", os.getpid()))
        while True:
            if not conn.poll(IDLE_TIMEOUT_S):
                raise TimeoutError("no phase from the parent")
            message = conn.recv()
            if message[0] != "go":
                return
            _, target, start_at, phase = message
            conn.send(("result", asyncio.run(_run(phase, target, pools[phase.rpc], start_at))))
    except (EOFError, BrokenPipeError):
        return  # the parent closed the pipe: no more phases
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


async def _run(spec: LoadSpec, target: str, pool: list[bytes], start_at: float) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHODS[spec.rpc])  # bytes in, bytes out
        await asyncio.wait_for(channel.channel_ready(), 10)
        # One checked call: the server must answer a real response, not an error.
        _check_answer(spec, await call(pool[0], timeout=spec.timeout_s))
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        if spec.mode == "closed":
            return await _closed(spec, call, pool, start_at)
        return await _open(spec, call, pool, start_at)


def _check_answer(spec: LoadSpec, body: bytes) -> None:
    response = RESPONSES[spec.rpc].FromString(body)
    if isinstance(response, pb.ScoreBatchResponse):
        errors = [r.error.message for r in response.results if r.HasField("error")]
        if len(response.results) != spec.batch_size or errors:
            raise RuntimeError(
                f"ScoreBatch answered {len(response.results)} results for {spec.batch_size} "
                f"items, errors: {errors[:3]}"
            )


async def _closed(spec: LoadSpec, call: Any, pool: list[bytes], start_at: float) -> dict[str, Any]:
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
    return {
        "latencies": latencies.tobytes(),
        "errors": dict(errors),
        "completed": len(latencies),
        "cpu_s": time.process_time() - cpu0,
    }


async def _open(spec: LoadSpec, call: Any, pool: list[bytes], start_at: float) -> dict[str, Any]:
    window = start_at + spec.warmup_s
    end = window + spec.measure_s
    rate = spec.rate
    latencies = array("d")  # completion − scheduled send time
    times = array("d")  # scheduled send time − window start, for each latency
    error_times = array("d")  # scheduled send time − window start, for each counted error
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
                times.append(scheduled - window)
        except grpc.aio.AioRpcError as exc:
            if counted:
                errors[exc.code().name] += 1
                error_times.append(scheduled - window)
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
                if counted:
                    error_times.append(scheduled - window)  # a failure too, for the soak
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
    return {
        "latencies": latencies.tobytes(),
        "times": times.tobytes(),
        "error_times": error_times.tobytes(),
        "send_lag": send_lag.tobytes(),
        "errors": dict(errors),
        "completed": len(latencies),
        "skipped": skipped,
        "scheduled": int(spec.measure_s * rate),
        "cpu_s": time.process_time() - cpu0,
    }
