"""Where the recluster job's partitions run: in this process (``embedded``, the default) or
on a dask.distributed cluster (``dask``). Only the aggregation is distributed; the driver fits
HDBSCAN on the assembled snapshot, because HDBSCAN's hierarchy needs every point at once."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ringfence.service.jobs import JobError
from ringfence.service.jobs.aggregate import PartitionResult, PartitionTask, aggregate_partition

log = logging.getLogger(__name__)

OnResult = Callable[[PartitionResult], None]


class Engine(Protocol):
    name: str
    parallelism: int  # partitions that can run at once (the default plan makes 2 per slot)

    def run(self, tasks: Sequence[PartitionTask], on_result: OnResult) -> None:
        """Run every task; call ``on_result`` in this thread as each one finishes."""
        ...


class EmbeddedEngine:
    """Partitions one after the other in this process (memory: one partition at a time)."""

    name = "embedded"
    parallelism = 1

    def run(self, tasks: Sequence[PartitionTask], on_result: OnResult) -> None:
        for task in tasks:
            on_result(aggregate_partition(task))


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
