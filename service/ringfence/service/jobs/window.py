"""Time windows of the batch jobs: ``--since 45d`` / ``--until 2026-06-05`` / ``--month 2026-06``.

A window is inclusive at both ends and in epoch seconds. A relative ``--since`` counts back
from ``--until``; an unset ``--until`` is the newest event in the log, so re-running on an
unchanged log selects exactly the same events (the jobs are idempotent on that).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from ringfence.service.jobs import JobError

DAY = 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, slots=True)
class Window:
    since: float
    until: float

    @property
    def days(self) -> float:
        return (self.until - self.since) / DAY

    def describe(self) -> str:
        return f"{iso(self.since)} .. {iso(self.until)}"


def iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text: str, flag: str) -> float:
    """Epoch seconds, or an ISO date/time (UTC unless it names a zone)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise JobError(f"{flag} {text!r}: give an ISO date/time (2026-06-05, "
                       "2026-06-05T12:00:00Z) or epoch seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def parse_span(text: str, flag: str) -> float:
    """Seconds in ``45d``, ``12h``, ``90m``, ``2w``, ``30s``."""
    found = _RELATIVE.match(text.strip())
    if not found or float(found.group(1)) <= 0:
        raise JobError(f"{flag} {text!r}: give a positive span such as 45d, 12h or 2w, or an "
                       "ISO date")
    return float(found.group(1)) * _UNITS[found.group(2)]


def resolve(since: str, until: str | None, newest_event: float | None) -> Window:
    """The window for ``--since``/``--until``; ``newest_event`` anchors an unset ``--until``."""
    if until is not None:
        end = parse_instant(until, "--until")
    elif newest_event is not None:
        end = newest_event
    else:
        raise JobError("the event log is empty")
    if _RELATIVE.match(since.strip()):
        start = end - parse_span(since, "--since")
    else:
        start = parse_instant(since, "--since")
    if start >= end:
        raise JobError(f"--since ({iso(start)}) must be before --until ({iso(end)})")
    return Window(start, end)


def month_window(text: str) -> Window:
    """``2026-06`` → the whole UTC month (the last instant is just before the next month)."""
    found = _MONTH.match(text.strip())
    if not found or not 1 <= int(found.group(2)) <= 12:
        raise JobError(f"--month {text!r}: give a month as YYYY-MM, e.g. 2026-06")
    year, month = int(found.group(1)), int(found.group(2))
    start = datetime.datetime(year, month, 1, tzinfo=datetime.UTC)
    end = datetime.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=datetime.UTC)
    return Window(start.timestamp(), end.timestamp() - 1e-6)
