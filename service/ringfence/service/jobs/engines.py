"""Where the recluster job's partitions run: on this machine (``embedded``, the default: a
small process pool sized to the cores this process may use) or on a dask.distributed cluster
(``dask``). Only the aggregation is distributed; the driver fits HDBSCAN on the assembled
snapshot, because HDBSCAN's hierarchy needs every point at once."""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

from ringfence.service.jobs import JobError
from ringfence.service.jobs.aggregate import PartitionResult, PartitionTask, aggregate_partition
from ringfence.service.jobs.sources import in_process_only

log = logging.getLogger(__name__)

OnResult = Callable[[PartitionResult], None]


class Engine(Protocol):
    name: str
    parallelism: int  # partitions that can run at once (the default plan makes 2 per slot)

    def run(self, tasks: Sequence[PartitionTask], on_result: OnResult) -> None:
        """Run every task; call ``on_result`` in this thread as each one finishes."""
        ...


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's cpuset),
    capped by a cgroup CPU limit (a Kubernetes ``limits.cpu``, rounded up) — not the machine's
    count, which a container's limits do not change."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by this cgroup's quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None
    when there is none or it cannot be read."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


class EmbeddedEngine:
    """Partitions on this machine: ``workers`` at a time in a process pool (default: one per
    usable core), or one after the other in this process when ``workers`` is 1, there is
    only one partition, or the source lives in this process (``memory://``). Partitions are
    independent and each is aggregated by the same function whichever process runs it, so
    the results do not depend on ``workers``. Memory: one profile per worker at a time, plus
    the finished partitions' reduced arrays."""

    name = "embedded"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise JobError(f"--workers must be at least 1, not {workers}")
        self.workers = workers or usable_cores()
        self.parallelism = self.workers

    def run(self, tasks: Sequence[PartitionTask], on_result: OnResult) -> None:
        workers = min(self.workers, len(tasks))
        if workers <= 1 or any(in_process_only(task.source) for task in tasks):
            for task in tasks:
                on_result(aggregate_partition(task))
            return
        # forkserver: a clean child even when the caller runs threads (a server, a test's
        # gRPC channel), without re-running the caller's __main__ as spawn would.
        context = multiprocessing.get_context(
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        log.info("embedded engine: %d partitions on %d worker processes", len(tasks), workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            pending: set[Future[PartitionResult]] = {
                pool.submit(aggregate_partition, task) for task in tasks}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        on_result(future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


class DaskEngine:
    """Partitions as dask tasks. ``scheduler`` is a dask scheduler address
    (``tcp://host:8786``); without one a local multi-process cluster of ``workers`` single-
    threaded workers is started for the run and closed after it. Workers must be able to read
    the source (a shared path, an fsspec URL, the PostgreSQL DSN) and run this ringfence
    version; they never receive the hash key."""

    name = "dask"

    def __init__(self, scheduler: str | None = None, workers: int = 2,
                 connect_timeout: float = 30.0) -> None:
        self.scheduler = scheduler
        self.workers = workers
        self.parallelism = workers  # with a scheduler: a hint (give --partitions)
        self.connect_timeout = connect_timeout

    def run(self, tasks: Sequence[PartitionTask], on_result: OnResult) -> None:
        try:
            from dask.distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise JobError("--engine dask needs dask.distributed: pip install "
                           "'ringfence[jobs]'") from None
        # dask logs every worker start and connection at INFO: keep the job's log readable
        quiet = logging.getLogger("distributed")
        if quiet.getEffectiveLevel() < logging.WARNING:
            quiet.setLevel(logging.WARNING)
        with contextlib.ExitStack() as stack:
            if self.scheduler:
                try:
                    client = stack.enter_context(
                        Client(self.scheduler, timeout=self.connect_timeout))
                except (OSError, TimeoutError) as exc:
                    raise JobError(f"cannot reach the dask scheduler {self.scheduler}: {exc}",
                                   exit_code=1) from None
            else:
                cluster = stack.enter_context(LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True,
                    dashboard_address=None))
                client = stack.enter_context(Client(cluster))
            log.info("dask engine: %d partitions on %s", len(tasks),
                     self.scheduler or f"a local cluster of {self.workers} workers")
            run_id = uuid.uuid4().hex[:8]
            futures: list[Any] = [
                client.submit(aggregate_partition, task, key=f"ringfence-{run_id}-{task.index}",
                              pure=False, retries=1) for task in tasks]
            try:
                for future in as_completed(futures):
                    result = future.result()
                    future.release()
                    on_result(result)
            except BaseException:
                client.cancel(futures)
                raise
