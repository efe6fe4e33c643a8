"""One partition of the recluster job: rebuild its accounts' profiles from the event log with
the service's own core code, and reduce each to what the fit needs.

Rows arrive grouped by account and in event-time order, so one profile is alive at a time:
``event_from_log`` turns each row into the exact ``AccountEvent`` the engine built when it
scored the request, and ``AccountProfile.record`` adds it — the same two calls the service
makes, so the rebuilt profile is byte-for-byte the live one. Each finished profile is reduced
to its identifier tokens and behaviour row (``features.account_tokens`` / ``behaviour``, as
``build_snapshot`` does) plus report aids (events per UTC day). The global part — rarity,
identity rows, the fit — runs on the driver (``snapshot.assemble``).

The hash key never reaches a task: the driver sends the keyed tokens of the partition's
accounts and of every two-letter country code.
"""

from __future__ import annotations

import string
import time
from collections import namedtuple
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from ringfence.service.core.features import BEHAVIOUR_NAMES, KINDS, account_tokens, behaviour
from ringfence.service.core.identity import Hasher
from ringfence.service.core.model import ScoredEvent
from ringfence.service.core.profiles import (
    DAY_MINUTES,
    AccountProfile,
    event_from_log,
    minute_of,
)
from ringfence.service.jobs import JobError
from ringfence.service.jobs.sources import PROFILE_COLUMNS, EventSource

DAY = 86400
# A logged row as ``event_from_log`` reads it: the ScoredEvent fields it uses, by name. A
# namedtuple costs a twentieth of building the frozen ScoredEvent (0.3 vs 6.6 µs here); if
# event_from_log ever reads another field, the rebuild fails loudly (AttributeError) and the
# byte-equality tests in tests/jobs catch it.
LogRow = namedtuple("LogRow", PROFILE_COLUMNS)  # type: ignore[misc]


def country_tokens(hasher: Hasher) -> dict[str, int]:
    """Keyed tokens of every ISO 3166 alpha-2 code (what GeoIP databases return)."""
    letters = string.ascii_uppercase
    return {a + b: hasher.token("country", a + b) for a in letters for b in letters}


def since_minute(now: float, window_days: float) -> int:
    """The first minute of the clustering window, computed exactly as ``build_snapshot``."""
    return minute_of(now) - int(window_days * DAY_MINUTES)


@dataclass(frozen=True, slots=True)
class PartitionTask:
    """Everything a worker needs for one partition (picklable; no key inside)."""

    index: int
    partitions: int
    source: EventSource
    since: float
    until: float  # also the snapshot's "now"
    window_days: float
    first: str  # the partition's accounts are first ≤ id ≤ last …
    last: str
    accounts: tuple[str, ...]  # … namely these (sorted)
    account_tokens: tuple[int, ...]
    country_tokens: Mapping[str, int]
    events: int  # as counted when the job was planned

    @property
    def n_days(self) -> int:
        return int(self.until // DAY) - int(self.since // DAY) + 1


@dataclass
class PartitionResult:
    """Per account (rows sorted by account id): identifier tokens (flat, ``token_counts``
    per kind), behaviour row, hour-of-day counts, events per UTC day of the window, totals."""

    index: int
    account_ids: npt.NDArray[np.str_]
    active: npt.NDArray[np.bool_]  # inside the clustering window (as build_snapshot decides)
    created_known: npt.NDArray[np.bool_]  # the gateway sent the account's creation time
    token_counts: npt.NDArray[np.int64]  # (n, len(KINDS))
    tokens: npt.NDArray[np.uint64]
    behaviour: npt.NDArray[np.float64]  # (n, len(BEHAVIOUR_NAMES))
    hours: npt.NDArray[np.float64]  # (n, 24)
    daily: npt.NDArray[np.uint32]  # (n, days in the window)
    totals: npt.NDArray[np.int64]
    first_seen: npt.NDArray[np.float64]
    last_seen: npt.NDArray[np.float64]
    events: int
    skipped: int  # rows of accounts the plan did not know (logged after planning)
    seconds: float
    cpu_seconds: float  # of the process that ran it (the figure that a loaded machine keeps)

    ARRAYS = ("account_ids", "active", "created_known", "token_counts", "tokens", "behaviour",
              "hours", "daily", "totals", "first_seen", "last_seen")

    def to_arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        out: dict[str, npt.NDArray[np.generic]] = {k: getattr(self, k) for k in self.ARRAYS}
        out["meta"] = np.array([self.index, self.events, self.skipped, self.seconds,
                                self.cpu_seconds])
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[np.generic]]) -> PartitionResult:
        index, events, skipped, seconds, cpu = arrays["meta"].tolist()
        if "created_known" not in arrays:  # saved before it was kept: sign-up times unknown
            arrays = {**arrays,
                      "created_known": np.zeros(len(arrays["account_ids"]), dtype=bool)}
        return cls(index=int(index), events=int(events), skipped=int(skipped),
                   seconds=float(seconds), cpu_seconds=float(cpu),
                   **{k: arrays[k] for k in cls.ARRAYS})


def rebuild_profiles(task: PartitionTask) -> Iterator[tuple[str, AccountProfile, list[int]]]:
    """Each account's profile rebuilt from the log, with its events per UTC day; accounts
    the plan did not list are skipped (their count is the generator's return value)."""
    tokens = dict(zip(task.accounts, task.account_tokens, strict=True))
    countries = task.country_tokens
    first_day = int(task.since // DAY)
    n_days = task.n_days
    skipped = 0
    current: str | None = None
    profile: AccountProfile | None = None
    days: list[int] = []
    account_token = 0
    record = AccountProfile.record
    make = tuple.__new__
    for rows in task.source.read_accounts(task.since, task.until, task.first, task.last,
                                          task.accounts):
        for row in rows:
            event = cast(ScoredEvent, make(LogRow, row))
            account_id = event.account_id
            if account_id != current:
                if profile is not None and current is not None:
                    yield current, profile, days
                current, profile = account_id, None
                if account_id not in tokens:
                    continue
                account_token = tokens[account_id]
                profile = AccountProfile(event.event_time)
                days = [0] * n_days
            if profile is None:
                skipped += 1
                continue
            country = event.country
            if country:
                country_token = countries.get(country)
                if country_token is None:
                    raise JobError(f"event log has country {country!r}, not an ISO 3166 "
                                   f"alpha-2 code (account {account_id!r})")
            else:
                country_token = 0
            record(profile, event_from_log(event, account_token, country_token),
                   event.account_created_at)
            days[int(event.event_time // DAY) - first_day] += 1
    if profile is not None and current is not None:
        yield current, profile, days
    return skipped


def aggregate_partition(task: PartitionTask) -> PartitionResult:
    """Rebuild a partition's profiles and reduce them (runs in a dask task or in-process)."""
    started, cpu = time.perf_counter(), time.process_time()
    now = task.until
    since = since_minute(now, task.window_days)
    ids: list[str] = []
    active: list[bool] = []
    known: list[bool] = []
    counts: list[list[int]] = []
    flat: list[npt.NDArray[np.uint64]] = []
    rows: list[list[float]] = []
    hours: list[list[int]] = []
    daily: list[list[int]] = []
    totals: list[int] = []
    first: list[float] = []
    last: list[float] = []
    profiles = rebuild_profiles(task)
    skipped = 0
    while True:
        try:
            account_id, p, days = next(profiles)
        except StopIteration as stop:
            skipped = int(stop.value or 0)
            break
        by_kind = account_tokens(p, since)
        ids.append(account_id)
        active.append(minute_of(p.last_seen) >= since)
        known.append(p.created_at is not None)
        counts.append([len(t) for t in by_kind])
        flat.extend(by_kind)
        rows.append(behaviour(p, now))
        hours.append(list(p.hours))
        daily.append(days)
        totals.append(p.total)
        first.append(p.first_seen)
        last.append(p.last_seen)
    order = np.argsort(np.array(ids, dtype=str), kind="stable")
    kinds = len(KINDS)
    token_counts = np.array(counts, dtype=np.int64).reshape(-1, kinds)
    # tokens flattened account by account, then reordered with the accounts
    per_account = [np.concatenate(flat[i * kinds:(i + 1) * kinds]) if kinds else
                   np.zeros(0, np.uint64) for i in range(len(ids))]
    tokens = (np.concatenate([per_account[i] for i in order]).astype(np.uint64)
              if ids else np.zeros(0, np.uint64))
    return PartitionResult(
        index=task.index,
        account_ids=np.array(ids, dtype=str)[order] if ids else np.zeros(0, dtype=str),
        active=np.array(active, dtype=bool)[order],
        created_known=np.array(known, dtype=bool)[order],
        token_counts=token_counts[order],
        tokens=tokens,
        behaviour=np.array(rows, dtype=np.float64).reshape(-1, len(BEHAVIOUR_NAMES))[order],
        hours=np.array(hours, dtype=np.float64).reshape(-1, 24)[order],
        daily=np.array(daily, dtype=np.uint32).reshape(-1, task.n_days)[order],
        totals=np.array(totals, dtype=np.int64)[order],
        first_seen=np.array(first, dtype=np.float64)[order],
        last_seen=np.array(last, dtype=np.float64)[order],
        events=int(sum(totals)),
        skipped=skipped,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu,
    )
