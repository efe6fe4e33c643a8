"""Live per-account, per-device and per-prefix profiles: O(1) updates, bounded size.

Sliding windows are bucketed (5 one-minute, 12 five-minute and 24 one-hour buckets), so the
"last 5 min" count covers between 4 and 5 minutes of history, and so on. Distinct counts keep a
bounded set of recent 64-bit keyed hashes per kind; a set that overflows evicts its least recently
seen member, so counts saturate at the set's capacity (reported by ``saturated``).
"""

from __future__ import annotations

import math
import struct
from array import array
from dataclasses import dataclass

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
DAY_MINUTES = 24 * 60


def minute_of(t: float) -> int:
    return int(t // 60)


class WindowCounter:
    """Request counts over 5 min / 1 h / 24 h sliding windows in 41 uint32 buckets."""

    __slots__ = ("buckets", "heads")

    def __init__(self) -> None:
        self.buckets = array("I", bytes(4 * _N_BUCKETS))
        self.heads = array("q", (-(1 << 40),) * 3)

    def add(self, t: float, n: int = 1) -> None:
        buckets, heads = self.buckets, self.heads
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
                buckets[off + b % size] += n

    def count(self, now: float) -> WindowCounts:
        return WindowCounts(self._sum(0, now), self._sum(1, now), self._sum(2, now))

    def _sum(self, tier: int, now: float) -> int:
        width, size = _TIERS[tier]
        nb = int(now // width)
        head = self.heads[tier]
        off = _TIER_OFFSETS[tier]
        total = 0
        for idx in range(max(head - size + 1, nb - size + 1), min(head, nb) + 1):
            total += self.buckets[off + idx % size]
        return total


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
        try:
            i = self.keys.index(key)
        except ValueError:
            if len(self.keys) < self.capacity:
                self.keys.append(key)
                self.seen.append(minute)
            else:
                i = self.seen.index(min(self.seen))
                self.keys[i] = key
                self.seen[i] = minute
                self.evicted += 1
            return True
        if minute > self.seen[i]:
            self.seen[i] = minute
        return False

    def count_since(self, minute: int) -> int:
        seen = self.seen
        if not seen or min(seen) >= minute:  # the usual case, at C speed
            return len(seen)
        return sum(1 for s in seen if s >= minute)

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
        t=e.event_time, account_token=account_token, ip_token=token_of(e.ip_hash),
        prefix_token=token_of(e.prefix_hash), asn=e.asn or 0, country_token=country_token,
        device_token=token_of(e.device_key), stack_token=token_of(e.stack_key),
        content_signature=signature, anonymized=e.anonymized, task=e.task,
        input_tokens=e.input_tokens, output_tokens=e.output_tokens)


_CAPS_ACCOUNT = {"ips": 32, "prefixes": 32, "asns": 16, "countries": 16, "devices": 16,
                 "stacks": 8, "signatures": 8}
_ACCOUNT_HEAD = "<BddQQQQdQdd"
SHARED_CAPACITY = 512  # accounts remembered per device / prefix: scores saturate well below


class AccountProfile:
    """One account's live profile. ``hours`` counts requests per UTC hour of day; the gap
    statistics (count, sum and sum of squares of log inter-arrival seconds) measure how
    machine-regular its timing is."""

    __slots__ = ("anonymized", "asns", "countries", "created_at", "devices", "first_seen",
                 "gap_count", "gap_log_sq", "gap_log_sum", "hours", "input_tokens", "ips",
                 "last_seen", "output_tokens", "prefixes", "signatures", "stacks", "task_mix",
                 "total", "windows")

    def __init__(self, t: float) -> None:
        self.first_seen = t
        self.last_seen = t
        self.total = 0
        self.windows = WindowCounter()
        self.task_mix = array("I", bytes(4 * 6))
        self.hours = array("I", bytes(4 * 24))
        self.input_tokens = 0
        self.output_tokens = 0
        self.anonymized = 0
        self.created_at: float | None = None
        self.gap_count = 0
        self.gap_log_sum = 0.0
        self.gap_log_sq = 0.0
        self.ips = RecentKeys(_CAPS_ACCOUNT["ips"])
        self.prefixes = RecentKeys(_CAPS_ACCOUNT["prefixes"])
        self.asns = RecentKeys(_CAPS_ACCOUNT["asns"])
        self.countries = RecentKeys(_CAPS_ACCOUNT["countries"])
        self.devices = RecentKeys(_CAPS_ACCOUNT["devices"])
        self.stacks = RecentKeys(_CAPS_ACCOUNT["stacks"])
        self.signatures = RecentKeys(_CAPS_ACCOUNT["signatures"])

    def _key_sets(self) -> tuple[RecentKeys, ...]:
        return (self.ips, self.prefixes, self.asns, self.countries, self.devices, self.stacks,
                self.signatures)

    def record(self, e: AccountEvent, created_at: float | None) -> bool:
        """Add one request; True if it brought an identifier (device, stack, prefix, ASN or
        prompt template) new to the account, i.e. its cluster placement may have changed."""
        if self.total and e.t > self.last_seen:
            gap = math.log1p(e.t - self.last_seen)
            self.gap_count += 1
            self.gap_log_sum += gap
            self.gap_log_sq += gap * gap
        self.first_seen = min(self.first_seen, e.t)
        self.last_seen = max(self.last_seen, e.t)
        self.total += 1
        self.windows.add(e.t)
        self.task_mix[e.task] += 1
        self.hours[int(e.t // 3600) % 24] += 1
        self.input_tokens += e.input_tokens
        self.output_tokens += e.output_tokens
        self.anonymized += e.anonymized
        if created_at is not None:
            self.created_at = created_at
        m = minute_of(e.t)
        self.ips.add(e.ip_token, m)
        changed = self.prefixes.add(e.prefix_token, m)
        if e.asn:
            changed |= self.asns.add(e.asn, m)
        if e.country_token:
            self.countries.add(e.country_token, m)
        changed |= self.devices.add(e.device_token, m)
        changed |= self.stacks.add(e.stack_token, m)
        if e.content_signature is not None:
            changed |= self.signatures.add(e.content_signature, m)
        return changed

    @property
    def anonymized_share(self) -> float:
        return self.anonymized / self.total if self.total else 0.0

    def to_bytes(self) -> bytes:
        head = struct.pack(_ACCOUNT_HEAD, 2, self.first_seen, self.last_seen, self.total,
                           self.input_tokens, self.output_tokens, self.anonymized,
                           -1.0 if self.created_at is None else self.created_at,
                           self.gap_count, self.gap_log_sum, self.gap_log_sq)
        parts = [head, _pack_counter(self.windows), self.task_mix.tobytes(),
                 self.hours.tobytes()]
        parts.extend(_pack_keys(keys) for keys in self._key_sets())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> AccountProfile:
        (version, first, last, total, tin, tout, anon, created, gaps, gap_sum,
         gap_sq) = struct.unpack_from(_ACCOUNT_HEAD, data)
        if version != 2:
            raise ValueError(f"unknown account profile version {version}")
        p = cls(first)
        p.last_seen, p.total, p.input_tokens, p.output_tokens = last, total, tin, tout
        p.anonymized = anon
        p.created_at = None if created < 0 else created
        p.gap_count, p.gap_log_sum, p.gap_log_sq = gaps, gap_sum, gap_sq
        pos = struct.calcsize(_ACCOUNT_HEAD)
        p.windows, pos = _unpack_counter(data, pos)
        p.task_mix = array("I", data[pos:pos + 24])
        p.hours = array("I", data[pos + 24:pos + 120])
        pos += 120
        p.ips, pos = _unpack_keys(data, pos)
        p.prefixes, pos = _unpack_keys(data, pos)
        p.asns, pos = _unpack_keys(data, pos)
        p.countries, pos = _unpack_keys(data, pos)
        p.devices, pos = _unpack_keys(data, pos)
        p.stacks, pos = _unpack_keys(data, pos)
        p.signatures, pos = _unpack_keys(data, pos)
        return p


class SharedProfile:
    """A device key's or an IP prefix's profile: which accounts use it, and how much."""

    __slots__ = ("accounts", "first_seen", "last_seen", "total", "windows")

    def __init__(self, t: float) -> None:
        self.first_seen = t
        self.last_seen = t
        self.total = 0
        self.windows = WindowCounter()
        self.accounts = RecentKeys(SHARED_CAPACITY)

    def record(self, t: float, account_token: int) -> None:
        self.first_seen = min(self.first_seen, t)
        self.last_seen = max(self.last_seen, t)
        self.total += 1
        self.windows.add(t)
        self.accounts.add(account_token, minute_of(t))

    def to_bytes(self) -> bytes:
        head = struct.pack("<BddQ", 1, self.first_seen, self.last_seen, self.total)
        return b"".join((head, _pack_counter(self.windows), _pack_keys(self.accounts)))

    @classmethod
    def from_bytes(cls, data: bytes) -> SharedProfile:
        version, first, last, total = struct.unpack_from("<BddQ", data)
        if version != 1:
            raise ValueError(f"unknown shared profile version {version}")
        p = cls(first)
        p.last_seen, p.total = last, total
        p.windows, pos = _unpack_counter(data, struct.calcsize("<BddQ"))
        p.accounts, pos = _unpack_keys(data, pos)
        return p


def _pack_counter(c: WindowCounter) -> bytes:
    return c.heads.tobytes() + c.buckets.tobytes()


def _unpack_counter(data: bytes, pos: int) -> tuple[WindowCounter, int]:
    c = WindowCounter()
    c.heads = array("q", data[pos:pos + 24])
    c.buckets = array("I", data[pos + 24:pos + 24 + 4 * _N_BUCKETS])
    return c, pos + 24 + 4 * _N_BUCKETS


def _pack_keys(k: RecentKeys) -> bytes:
    return struct.pack("<HHI", k.capacity, len(k.keys), min(k.evicted, 0xFFFFFFFF)) + \
        k.keys.tobytes() + k.seen.tobytes()


def _unpack_keys(data: bytes, pos: int) -> tuple[RecentKeys, int]:
    capacity, n, evicted = struct.unpack_from("<HHI", data, pos)
    pos += 8
    k = RecentKeys(capacity)
    k.keys = array("Q", data[pos:pos + 8 * n])
    pos += 8 * n
    k.seen = array("I", data[pos:pos + 4 * n])
    k.evicted = evicted
    return k, pos + 4 * n


def linkage(account: AccountProfile, device: SharedProfile, prefix: SharedProfile,
            now: float, identity_changed: bool = False) -> Linkage:
    """The scorer's view of the three profiles a request touched (24 h windows)."""
    since = minute_of(now) - DAY_MINUTES
    return Linkage(
        account_first_seen=account.first_seen,
        account_created_at=account.created_at,
        account_requests=account.windows.count(now),
        account_ips=account.ips.count_since(since),
        account_prefixes=account.prefixes.count_since(since),
        account_asns=account.asns.count_since(since),
        account_countries=account.countries.count_since(since),
        account_devices=account.devices.count_since(since),
        account_anonymized_share=account.anonymized_share,
        device_accounts=device.accounts.count_since(since),
        device_first_seen=device.first_seen,
        prefix_accounts=prefix.accounts.count_since(since),
        identity_changed=identity_changed,
    )


def summary(account_id: str, account: AccountProfile, now: float) -> AccountSummary:
    since = minute_of(now) - DAY_MINUTES
    return AccountSummary(
        account_id=account_id,
        first_seen=account.first_seen,
        last_seen=account.last_seen,
        total_requests=account.total,
        requests=account.windows.count(now),
        distinct_ips=account.ips.count_since(since),
        distinct_prefixes=account.prefixes.count_since(since),
        distinct_asns=account.asns.count_since(since),
        distinct_countries=account.countries.count_since(since),
        distinct_devices=account.devices.count_since(since),
        task_mix={TaskCategory(i): n for i, n in enumerate(account.task_mix) if n},
        input_tokens=account.input_tokens,
        output_tokens=account.output_tokens,
        anonymized_share=account.anonymized_share,
    )
