"""Progress of a batch job: a redrawn bar on a terminal, plain log lines otherwise (cron, a
Kubernetes Job, CI), so logs stay readable where nobody watches a bar."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("ringfence.jobs")


class Progress:
    """Counts units of work (events) over steps (partitions)."""

    def __init__(self, label: str, total: int, *, unit: str = "events",
                 stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.label = label
        self.total = max(total, 0)
        self.unit = unit
        self.done = 0
        self._stream = stream or sys.stderr
        self._bar = self._stream.isatty() if bar is None else bar
        self._started = time.monotonic()
        self._drawn = False

    def advance(self, units: int, note: str = "") -> None:
        self.done += units
        if self._bar:
            self._draw()
            return
        elapsed = time.monotonic() - self._started
        of = f"/{self.total:,}" if self.total else ""  # total 0: not known in advance
        log.info("%s: %s%s %s%s (%.0f %s/s)", self.label, f"{self.done:,}", of, self.unit,
                 f", {note}" if note else "", self.done / elapsed if elapsed > 0 else 0.0,
                 self.unit)

    def _draw(self) -> None:
        if not self.total:
            self._stream.write(f"\r{self.label}: {self.done:,} {self.unit} ")
            self._stream.flush()
            self._drawn = True
            return
        share = self.done / self.total
        width = 30
        filled = min(width, int(share * width))
        elapsed = time.monotonic() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        self._stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                           f"{share:6.1%} {self.done:,}/{self.total:,} {self.unit} "
                           f"{rate:,.0f}/s eta {eta:,.0f}s ")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
