"""``ringfence serve --workers M``: M worker processes serving one port.

Python serves one core per process, so throughput beyond a core needs processes. The parent
forks the workers before any gRPC object exists (gRPC cannot survive a fork once its threads
run); each worker then builds its own App and binds the same port with ``grpc.so_reuseport``,
and the kernel spreads incoming connections over them. Workers share state through Redis
(``store=redis`` is required), so which worker a connection lands on does not change answers.

The parent only supervises: SIGTERM or SIGINT is passed on to every worker as SIGTERM (each
drains its calls and stops); if a worker dies on its own, the others are stopped too and the
parent exits non-zero, so the process manager (Kubernetes, systemd) restarts the whole set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

from ringfence.service.adapters.keyfile import load_or_create_key
from ringfence.service.settings import Settings

log = logging.getLogger(__name__)


def serve_workers(settings: Settings, run_worker: Callable[[], int]) -> int:
    """Fork ``settings.workers`` processes that each call ``run_worker``; wait for them."""
    if settings.hash_key is None and settings.persist:
        # Created once here, so the workers read one key instead of racing to make their own.
        load_or_create_key(None, settings.data_dir)
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False

    def stop_all(signum: int, _frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _signal(pid, signal.SIGTERM)

    # Installed before forking so a signal during start-up is not lost; workers reset them.
    previous = {sig: signal.signal(sig, stop_all) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for number in range(settings.workers):
            if stopping:
                break
            pid = os.fork()
            if pid == 0:
                _worker(run_worker)  # never returns
            children[pid] = number
        log.info("worker processes started", extra={"workers": len(children),
                                                    "port": settings.port})
        exit_code = 0
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            number = children.pop(pid, -1)
            code = os.waitstatus_to_exitcode(status)
            if not stopping:
                log.error("worker %d exited on its own (status %d): stopping the others",
                          number, code)
                exit_code = 1
                stop_all(signal.SIGTERM)
            elif code != 0 and exit_code == 0:
                exit_code = code if code > 0 else 1
        return exit_code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker(run_worker: Callable[[], int]) -> NoReturn:
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        code = run_worker()
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never run the parent's cleanup (atexit, finally blocks) in a child


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited
        os.kill(pid, sig)
