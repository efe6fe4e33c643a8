"""Live per-account, per-device and per-prefix profiles: O(1) updates, bounded size.

Sliding windows are bucketed (5 one-minute, 12 five-minute and 24 one-hour buckets), so the
"last 5 min" count covers between 4 and 5 minutes of history, and so on. Distinct counts keep a
bounded set of recent 64-bit keyed hashes per kind; a set that overflows evicts its least recently
seen member, so counts saturate at the set's capacity (reported by ``saturated``).

A million profiles live in memory, so each one is a handful of flat arrays rather than a tree
of small objects: an account's seven key sets share one array of keys and one of minutes, and
its counters (window buckets, task mix, hours, set sizes) share one array of uint32. That is
about a third of the bytes of one object per set, and far fewer objects for the garbage
collector to traverse. ``windows``, ``hours``, ``task_mix`` and the key-set attributes stay
available as views or snapshots for readers.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from dataclasses import dataclass

import numpy as np

from ringfence.service.core.model import (
    AccountSummary,
    Linkage,
    ScoredEvent,
    TaskCategory,
    WindowCounts,
)

_TIERS = ((60, 5), (300, 12), (3600, 24))  # (bucket seconds, buckets): 5 min, 1 h, 24 h
_TIER_OFFSETS = (0, 5, 17)
_N_BUCKETS = 41
_NO_HEAD = -(1 << 40)  # a tier's head before its first event
DAY_MINUTES = 24 * 60
_U32_MAX = 0xFFFFFFFF


def minute_of(t: float) -> int:
    return int(t // 60)


def _new_heads() -> array[int]:
    return array("q", (_NO_HEAD, _NO_HEAD, _NO_HEAD))


def _window_add(buckets: array[int], heads: array[int], t: float) -> None:
    """Count one event at ``t`` in the 41 buckets at the start of ``buckets``."""
    b0, b1, b2 = int(t // 60), int(t // 300), int(t // 3600)
    if b0 == heads[0] and b1 == heads[1] and b2 == heads[2]:
        # The usual case: the newest bucket of every tier, so nothing to clear.
        buckets[b0 % 5] += 1
        buckets[5 + b1 % 12] += 1
        buckets[17 + b2 % 24] += 1
        return
    for i, (width, size) in enumerate(_TIERS):
        b = int(t // width)
        head = heads[i]
        off = _TIER_OFFSETS[i]
        if b > head:
            # Clear the buckets the clock moved past (all of them after a long gap).
            for k in range(head + 1, min(b, head + size) + 1):
                buckets[off + k % size] = 0
            heads[i] = head = b
        if b > head - size:  # an event older than the ring is kept in totals only
            buckets[off + b % size] += 1


def _window_sum(buckets: array[int], heads: array[int], tier: int, now: float) -> int:
    width, size = _TIERS[tier]
    head = heads[tier]
    lo = max(head, int(now // width)) - size + 1  # the oldest bucket index still in the window
    hi = min(head, int(now // width))
    if hi < lo:
        return 0
    off = _TIER_OFFSETS[tier]
    a, b = off + lo % size, off + hi % size
    if a <= b:  # one contiguous run of the ring (sum over an array slice runs at C speed)
        return sum(buckets[a : b + 1])
    return sum(buckets[a : off + size]) + sum(buckets[off : b + 1])


def _window_counts(buckets: array[int], heads: array[int], now: float) -> WindowCounts:
    if int(now // 60) == heads[0] and int(now // 300) == heads[1] and int(now // 3600) == heads[2]:
        # ``now`` is in the newest bucket of every tier (as right after recording an event
        # at ``now``), so each window is its whole ring.
        return WindowCounts(sum(buckets[0:5]), sum(buckets[5:17]), sum(buckets[17:41]))
    return WindowCounts(
        _window_sum(buckets, heads, 0, now),
        _window_sum(buckets, heads, 1, now),
        _window_sum(buckets, heads, 2, now),
    )


class WindowCounter:
    """Request counts over 5 min / 1 h / 24 h sliding windows in 41 uint32 buckets.

    ``buckets`` may be longer than 41 (a profile keeps its other counters after them); only
    the first 41 entries are the windows, so a counter can be a view on a profile's array."""

    __slots__ = ("buckets", "heads")

    def __init__(self, buckets: array[int] | None = None, heads: array[int] | None = None) -> None:
        self.buckets = array("I", bytes(4 * _N_BUCKETS)) if buckets is None else buckets
        self.heads = _new_heads() if heads is None else heads

    def add(self, t: float, n: int = 1) -> None:
        if n == 1:
            _window_add(self.buckets, self.heads, t)
            return
        buckets, heads = self.buckets, self.heads
        for i, (width, size) in enumerate(_TIERS):
            b = int(t // width)
            head = heads[i]
            off = _TIER_OFFSETS[i]
            if b > head:
                for k in range(head + 1, min(b, head + size) + 1):
                    buckets[off + k % size] = 0
                heads[i] = head = b
            if b > head - size:
                buckets[off + b % size] += n

    def count(self, now: float) -> WindowCounts:
        return _window_counts(self.buckets, self.heads, now)

    def _sum(self, tier: int, now: float) -> int:
        return _window_sum(self.buckets, self.heads, tier, now)


# A set up to this size is searched element by element; a larger one (a device's or a
# network's accounts: up to 512) with bulk operations that do not make an int per element.
_SCAN = 32


def _count_since(seen: array[int], minute: int) -> int:
    """How many of ``seen`` (uint32 minutes) are at or after ``minute``."""
    n = len(seen)
    if n <= _SCAN:
        if not n or min(seen) >= minute:  # the usual case, at C speed
            return n
        return sum(1 for s in seen if s >= minute)
    if minute <= 0:
        return n
    if minute > _U32_MAX:
        return 0
    return int(np.count_nonzero(np.frombuffer(seen, np.uint32) >= minute))


def _find(keys: array[int], key: int) -> int:
    """The index of ``key`` in ``keys`` (uint64), or -1."""
    if len(keys) <= _SCAN:
        try:
            return keys.index(key)
        except ValueError:
            return -1
    data = keys.tobytes()
    needle = key.to_bytes(8, sys.byteorder)
    at = data.find(needle)
    while at > 0 and at & 7:  # a match across two keys: look on
        at = data.find(needle, at + 1)
    return -1 if at < 0 else at >> 3


def _oldest(seen: array[int]) -> int:
    """The index of the first of the least recent minutes in ``seen``."""
    if len(seen) <= _SCAN:
        return seen.index(min(seen))
    return int(np.frombuffer(seen, np.uint32).argmin())


class RecentKeys:
    """A bounded set of 64-bit keys with the minute each was last seen."""

    __slots__ = ("capacity", "evicted", "keys", "seen")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys = array("Q")
        self.seen = array("I")
        self.evicted = 0

    def add(self, key: int, minute: int) -> bool:
        """Mark ``key`` seen at ``minute``; True if it was not in the set."""
        keys, seen = self.keys, self.seen
        i = _find(keys, key)
        if i < 0:
            if len(keys) < self.capacity:
                keys.append(key)
                seen.append(minute)
            else:
                i = _oldest(seen)
                keys[i] = key
                seen[i] = minute
                self.evicted += 1
            return True
        if minute > seen[i]:
            seen[i] = minute
        return False

    def count_since(self, minute: int) -> int:
        return _count_since(self.seen, minute)

    @property
    def saturated(self) -> bool:
        return self.evicted > 0

    def purge_before(self, minute: int) -> None:
        """Drop members not seen since ``minute`` (keeps the arrays small for idle profiles)."""
        keep = [(k, s) for k, s in zip(self.keys, self.seen, strict=True) if s >= minute]
        if len(keep) != len(self.keys):
            self.keys = array("Q", (k for k, _ in keep))
            self.seen = array("I", (s for _, s in keep))


def token_of(hexdigest: str) -> int:
    """The 64-bit profile token of a stored keyed hash (its first 16 hex digits)."""
    return int(hexdigest[:16], 16)


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """What one request contributes to the profiles, already hashed."""

    t: float
    account_token: int
    ip_token: int
    prefix_token: int
    asn: int  # 0 when unknown
    country_token: int  # 0 when unknown
    device_token: int
    stack_token: int
    content_signature: int | None
    anonymized: bool
    task: int
    input_tokens: int
    output_tokens: int


def event_from_log(e: ScoredEvent, account_token: int, country_token: int) -> AccountEvent:
    """What a logged event contributes to the profiles — the same AccountEvent the engine
    built when it scored the request, so a batch job rebuilds identical profiles."""
    signature = e.content_signature
    if signature is not None and signature < 0:  # stored as signed 64-bit
        signature += 1 << 64
    return AccountEvent(
        t=e.event_time,
        account_token=account_token,
        ip_token=token_of(e.ip_hash),
        prefix_token=token_of(e.prefix_hash),
        asn=e.asn or 0,
        country_token=country_token,
        device_token=token_of(e.device_key),
        stack_token=token_of(e.stack_key),
        content_signature=signature,
        anonymized=e.anonymized,
        task=e.task,
        input_tokens=e.input_tokens,
        output_tokens=e.output_tokens,
    )


# The account's key sets, in their stored order, and how many keys each keeps.
_KEY_SETS = ("ips", "prefixes", "asns", "countries", "devices", "stacks", "signatures")
_CAPACITY = (32, 32, 16, 16, 16, 8, 8)
_IPS, _PREFIXES, _ASNS, _COUNTRIES, _DEVICES, _STACKS, _SIGNATURES = range(7)
_CAPS_ACCOUNT = dict(zip(_KEY_SETS, _CAPACITY, strict=True))
# Layout of AccountProfile._counts (uint32): window buckets first, so a WindowCounter can view
# it; then task mix, requests per UTC hour, each key set's size and its evictions.
_TASKS = _N_BUCKETS
_HOURS = _TASKS + 6
_SIZES = _HOURS + 24
_EVICTED = _SIZES + 7
_N_COUNTS = _EVICTED + 7
_STORED_COUNTS = _SIZES  # buckets, task mix and hours are stored as they lie in memory

_ACCOUNT_HEAD = "<BddQQQQdQdd"
_ACCOUNT_HEAD_SIZE = struct.calcsize(_ACCOUNT_HEAD)
_KEYS_HEAD = struct.Struct("<HHI")
_SHARED_HEAD = struct.Struct("<BddQ")
_EMPTY_SET = tuple(_KEYS_HEAD.pack(capacity, 0, 0) for capacity in _CAPACITY)
SHARED_CAPACITY = 512  # accounts remembered per device / prefix: scores saturate well below


class AccountProfile:
    """One account's live profile. ``hours`` counts requests per UTC hour of day; the gap
    statistics (count, sum and sum of squares of log inter-arrival seconds) measure how
    machine-regular its timing is.

    The key sets (``ips``, ``prefixes``, ``asns``, ``countries``, ``devices``, ``stacks``,
    ``signatures``) are stored one after another in ``_keys`` (uint64) and ``_seen`` (the
    minute each key was last seen); reading one of those attributes gives a RecentKeys copy.
    """

    __slots__ = (
        "_counts",
        "_heads",
        "_keys",
        "_seen",
        "anonymized",
        "created_at",
        "first_seen",
        "gap_count",
        "gap_log_sq",
        "gap_log_sum",
        "input_tokens",
        "last_seen",
        "output_tokens",
        "total",
    )

    def __init__(self, t: float) -> None:
        self.first_seen = t
        self.last_seen = t
        self.total = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.anonymized = 0
        self.created_at: float | None = None
        self.gap_count = 0
        self.gap_log_sum = 0.0
        self.gap_log_sq = 0.0
        self._counts = array("I", bytes(4 * _N_COUNTS))
        self._heads = _new_heads()
        self._keys = array("Q")
        self._seen = array("I")

    # --- readers' views -------------------------------------------------------------------
    @property
    def windows(self) -> WindowCounter:
        """The request windows (a view: it shares this profile's storage)."""
        return WindowCounter(self._counts, self._heads)

    @property
    def task_mix(self) -> array[int]:
        """Requests per TaskCategory value (a copy)."""
        return self._counts[_TASKS:_HOURS]

    @property
    def hours(self) -> array[int]:
        """Requests per UTC hour of day (a copy)."""
        return self._counts[_HOURS:_SIZES]

    def _key_set(self, which: int) -> RecentKeys:
        counts = self._counts
        start = sum(counts[_SIZES : _SIZES + which])
        stop = start + counts[_SIZES + which]
        keys = RecentKeys(_CAPACITY[which])
        keys.keys = self._keys[start:stop]
        keys.seen = self._seen[start:stop]
        keys.evicted = counts[_EVICTED + which]
        return keys

    @property
    def ips(self) -> RecentKeys:
        return self._key_set(_IPS)

    @property
    def prefixes(self) -> RecentKeys:
        return self._key_set(_PREFIXES)

    @property
    def asns(self) -> RecentKeys:
        return self._key_set(_ASNS)

    @property
    def countries(self) -> RecentKeys:
        return self._key_set(_COUNTRIES)

    @property
    def devices(self) -> RecentKeys:
        return self._key_set(_DEVICES)

    @property
    def stacks(self) -> RecentKeys:
        return self._key_set(_STACKS)

    @property
    def signatures(self) -> RecentKeys:
        return self._key_set(_SIGNATURES)

    def _key_sets(self) -> tuple[RecentKeys, ...]:
        return tuple(self._key_set(i) for i in range(len(_KEY_SETS)))

    def distinct_since(self, minute: int) -> tuple[int, ...]:
        """Members of each key set (in ``_KEY_SETS`` order) seen since ``minute``."""
        counts, seen = self._counts, self._seen
        if not seen or min(seen) >= minute:  # the usual case: every member is that recent
            return tuple(counts[_SIZES:_EVICTED])
        out = []
        start = 0
        for size in counts[_SIZES:_EVICTED]:
            stop = start + size
            out.append(_count_since(seen[start:stop], minute) if size else 0)
            start = stop
        return tuple(out)

    # --- updates --------------------------------------------------------------------------
    def _add_key(self, which: int, start: int, key: int, minute: int) -> bool:
        """Mark ``key`` seen at ``minute`` in key set ``which`` (its members start at index
        ``start``); True if it was not in the set. Same policy as RecentKeys.add."""
        counts, keys, seen = self._counts, self._keys, self._seen
        size = counts[_SIZES + which]
        stop = start + size
        if size:
            try:
                i = keys.index(key, start, stop)
            except ValueError:
                pass
            else:
                if minute > seen[i]:
                    seen[i] = minute
                return False
        if size < _CAPACITY[which]:
            keys.insert(stop, key)
            seen.insert(stop, minute)
            counts[_SIZES + which] = size + 1
        else:
            members = seen[start:stop]
            i = start + members.index(min(members))
            keys[i] = key
            seen[i] = minute
            if counts[_EVICTED + which] < _U32_MAX:
                counts[_EVICTED + which] += 1
        return True

    def record(self, e: AccountEvent, created_at: float | None) -> bool:
        """Add one request; True if it brought an identifier (device, stack, prefix, ASN or
        prompt template) new to the account, i.e. its cluster placement may have changed."""
        t = e.t
        if self.total and t > self.last_seen:
            gap = math.log1p(t - self.last_seen)
            self.gap_count += 1
            self.gap_log_sum += gap
            self.gap_log_sq += gap * gap
        if t < self.first_seen:
            self.first_seen = t
        if t > self.last_seen:
            self.last_seen = t
        self.total += 1
        counts = self._counts
        _window_add(counts, self._heads, t)
        counts[_TASKS + e.task] += 1
        counts[_HOURS + int(t // 3600) % 24] += 1
        self.input_tokens += e.input_tokens
        self.output_tokens += e.output_tokens
        self.anonymized += e.anonymized
        if created_at is not None:
            self.created_at = created_at
        m = minute_of(t)
        add = self._add_key
        add(_IPS, 0, e.ip_token, m)
        start = counts[_SIZES + _IPS]
        changed = add(_PREFIXES, start, e.prefix_token, m)
        start += counts[_SIZES + _PREFIXES]
        if e.asn:
            changed |= add(_ASNS, start, e.asn, m)
        start += counts[_SIZES + _ASNS]
        if e.country_token:
            add(_COUNTRIES, start, e.country_token, m)
        start += counts[_SIZES + _COUNTRIES]
        changed |= add(_DEVICES, start, e.device_token, m)
        start += counts[_SIZES + _DEVICES]
        changed |= add(_STACKS, start, e.stack_token, m)
        start += counts[_SIZES + _STACKS]
        if e.content_signature is not None:
            changed |= add(_SIGNATURES, start, e.content_signature, m)
        return changed

    @property
    def anonymized_share(self) -> float:
        return self.anonymized / self.total if self.total else 0.0

    # --- stored form (version 2; the layout predates the flat arrays and is unchanged) -----
    def to_bytes(self) -> bytes:
        head = struct.pack(
            _ACCOUNT_HEAD,
            2,
            self.first_seen,
            self.last_seen,
            self.total,
            self.input_tokens,
            self.output_tokens,
            self.anonymized,
            -1.0 if self.created_at is None else self.created_at,
            self.gap_count,
            self.gap_log_sum,
            self.gap_log_sq,
        )
        counts, keys, seen = self._counts, self._keys, self._seen
        parts = [head, self._heads.tobytes(), counts[:_STORED_COUNTS].tobytes()]
        start = 0
        for which, capacity in enumerate(_CAPACITY):
            size = counts[_SIZES + which]
            evicted = counts[_EVICTED + which]
            if not size and not evicted:
                parts.append(_EMPTY_SET[which])
                continue
            stop = start + size
            parts.append(_KEYS_HEAD.pack(capacity, size, evicted))
            parts.append(keys[start:stop].tobytes())
            parts.append(seen[start:stop].tobytes())
            start = stop
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> AccountProfile:
        (version, first, last, total, tin, tout, anon, created, gaps, gap_sum, gap_sq) = (
            struct.unpack_from(_ACCOUNT_HEAD, data)
        )
        if version != 2:
            raise ValueError(f"unknown account profile version {version}")
        p = cls(first)
        p.last_seen, p.total, p.input_tokens, p.output_tokens = last, total, tin, tout
        p.anonymized = anon
        p.created_at = None if created < 0 else created
        p.gap_count, p.gap_log_sum, p.gap_log_sq = gaps, gap_sum, gap_sq
        pos = _ACCOUNT_HEAD_SIZE
        p._heads = array("q", data[pos : pos + 24])
        pos += 24
        counts = array("I", data[pos : pos + 4 * _STORED_COUNTS])
        pos += 4 * _STORED_COUNTS
        sizes, evicted = [], []
        keys, seen = array("Q"), array("I")
        for _ in _CAPACITY:
            _capacity, n, ev = _KEYS_HEAD.unpack_from(data, pos)
            pos += 8
            keys.frombytes(data[pos : pos + 8 * n])
            pos += 8 * n
            seen.frombytes(data[pos : pos + 4 * n])
            pos += 4 * n
            sizes.append(n)
            evicted.append(ev)
        counts.extend(sizes)
        counts.extend(evicted)
        p._counts, p._keys, p._seen = counts, keys, seen
        return p


class SharedProfile:
    """A device key's or an IP prefix's profile: which accounts use it, and how much.

    Flat like AccountProfile: the window buckets, the accounts (uint64 tokens) and the minute
    each was last seen are arrays of this object; ``windows`` is a view on them and
    ``accounts`` a RecentKeys copy."""

    __slots__ = (
        "_buckets",
        "_heads",
        "_keys",
        "_seen",
        "evicted",
        "first_seen",
        "last_seen",
        "total",
    )

    def __init__(self, t: float) -> None:
        self.first_seen = t
        self.last_seen = t
        self.total = 0
        self.evicted = 0
        self._buckets = array("I", bytes(4 * _N_BUCKETS))
        self._heads = _new_heads()
        self._keys = array("Q")
        self._seen = array("I")

    @property
    def windows(self) -> WindowCounter:
        """The request windows (a view: it shares this profile's storage)."""
        return WindowCounter(self._buckets, self._heads)

    @property
    def accounts(self) -> RecentKeys:
        """The accounts seen (a copy)."""
        keys = RecentKeys(SHARED_CAPACITY)
        keys.keys = self._keys[:]
        keys.seen = self._seen[:]
        keys.evicted = self.evicted
        return keys

    def accounts_since(self, minute: int) -> int:
        """Accounts seen since ``minute``."""
        return _count_since(self._seen, minute)

    def record(self, t: float, account_token: int) -> None:
        if t < self.first_seen:
            self.first_seen = t
        if t > self.last_seen:
            self.last_seen = t
        self.total += 1
        _window_add(self._buckets, self._heads, t)
        # RecentKeys.add on this profile's arrays.
        keys, seen = self._keys, self._seen
        minute = minute_of(t)
        i = _find(keys, account_token)
        if i < 0:
            if len(keys) < SHARED_CAPACITY:
                keys.append(account_token)
                seen.append(minute)
            else:
                i = _oldest(seen)
                keys[i] = account_token
                seen[i] = minute
                self.evicted += 1
        elif minute > seen[i]:
            seen[i] = minute

    def to_bytes(self) -> bytes:
        keys = self._keys
        return b"".join(
            (
                _SHARED_HEAD.pack(1, self.first_seen, self.last_seen, self.total),
                self._heads.tobytes(),
                self._buckets.tobytes(),
                _KEYS_HEAD.pack(SHARED_CAPACITY, len(keys), min(self.evicted, _U32_MAX)),
                keys.tobytes(),
                self._seen.tobytes(),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SharedProfile:
        version, first, last, total = _SHARED_HEAD.unpack_from(data)
        if version != 1:
            raise ValueError(f"unknown shared profile version {version}")
        p = cls(first)
        p.last_seen, p.total = last, total
        pos = _SHARED_HEAD.size
        p._heads = array("q", data[pos : pos + 24])
        p._buckets = array("I", data[pos + 24 : pos + 24 + 4 * _N_BUCKETS])
        pos += 24 + 4 * _N_BUCKETS
        _capacity, n, p.evicted = _KEYS_HEAD.unpack_from(data, pos)
        pos += _KEYS_HEAD.size
        p._keys = array("Q", data[pos : pos + 8 * n])
        p._seen = array("I", data[pos + 8 * n : pos + 12 * n])
        return p


def linkage(
    account: AccountProfile,
    device: SharedProfile,
    prefix: SharedProfile,
    now: float,
    identity_changed: bool = False,
) -> Linkage:
    """The scorer's view of the three profiles a request touched (24 h windows)."""
    since = minute_of(now) - DAY_MINUTES
    ips, prefixes, asns, countries, devices, _, _ = account.distinct_since(since)
    return Linkage(
        account_first_seen=account.first_seen,
        account_created_at=account.created_at,
        account_requests=_window_counts(account._counts, account._heads, now),
        account_ips=ips,
        account_prefixes=prefixes,
        account_asns=asns,
        account_countries=countries,
        account_devices=devices,
        account_anonymized_share=account.anonymized_share,
        device_accounts=device.accounts_since(since),
        device_first_seen=device.first_seen,
        prefix_accounts=prefix.accounts_since(since),
        identity_changed=identity_changed,
    )


def summary(account_id: str, account: AccountProfile, now: float) -> AccountSummary:
    since = minute_of(now) - DAY_MINUTES
    ips, prefixes, asns, countries, devices, _, _ = account.distinct_since(since)
    return AccountSummary(
        account_id=account_id,
        first_seen=account.first_seen,
        last_seen=account.last_seen,
        total_requests=account.total,
        requests=account.windows.count(now),
        distinct_ips=ips,
        distinct_prefixes=prefixes,
        distinct_asns=asns,
        distinct_countries=countries,
        distinct_devices=devices,
        task_mix={TaskCategory(i): n for i, n in enumerate(account.task_mix) if n},
        input_tokens=account.input_tokens,
        output_tokens=account.output_tokens,
        anonymized_share=account.anonymized_share,
    )
