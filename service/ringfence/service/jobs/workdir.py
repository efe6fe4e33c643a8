"""The recluster job's work directory: each finished partition is saved there, so a run that
was killed (or failed in the fit) resumes with the partitions it already has.

Results live under ``<work dir>/<input fingerprint>/``: a re-run on the same inputs and
parameters finds them; a run on different inputs removes the stale directories first. The
directory is removed after a successful publish unless asked to keep it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ringfence.service.jobs import JobError
from ringfence.service.jobs.aggregate import PartitionResult

log = logging.getLogger(__name__)


class WorkDir:
    def __init__(self, root: Path, fingerprint: str) -> None:
        self.root = root
        self.path = root / fingerprint[:24]

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held for the whole run: a second run on the same work directory (an overlapping
        cron start) stops at once instead of mixing partitions."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JobError(f"another recluster is running on {self.root}",
                               exit_code=1) from None
            yield

    def prepare(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        for other in self.root.iterdir():
            if other.is_dir() and other != self.path:  # another input's leftovers
                shutil.rmtree(other, ignore_errors=True)

    def _file(self, index: int, partitions: int) -> Path:
        return self.path / f"part-{index:05d}-of-{partitions:05d}.npz"

    def load(self, index: int, partitions: int) -> PartitionResult | None:
        path = self._file(index, partitions)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return PartitionResult.from_arrays({k: arrays[k] for k in arrays.files})
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("discarding unreadable partition result %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return None

    def save(self, result: PartitionResult, partitions: int) -> None:
        path = self._file(result.index, partitions)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **result.to_arrays())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def finish(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
