"""The shared profile store: live profiles in Redis, so every replica and worker process gives
the same answer for the same account.

One ``record`` is two round trips and atomic across processes:

1. ``HMGET`` the account's profile blob and its version;
2. one Lua script that, only if the version is unchanged (optimistic concurrency), writes the
   updated blob, and updates the device's and the prefix's "accounts seen" sorted sets
   (member = account token, score = minute last seen), their first-seen times and the indexes
   used by ``active_accounts`` and ``purge`` — then returns the shared counts.

A version conflict (another process recorded the same account in between) returns the current
blob and version with the refusal, and the update is retried from them (one round trip each).
The account profile itself is computed in Python (``core.profiles``), so the embedded and the
Redis store share one definition of every window and distinct count.

Key layout (``{p}`` is the configured prefix; device and prefix keys are already keyed hashes,
so no raw IP or device id ever reaches Redis)::

    {p}:acct:{account_id}      hash  v (version), b (AccountProfile bytes), d (last decision JSON)
    {p}:dev:{device_key}       zset  account token -> minute last seen (at most 512 members)
    {p}:dev-meta:{device_key}  hash  first (first-seen epoch seconds), total
    {p}:pfx:{prefix_key}       zset  as dev
    {p}:pfx-meta:{prefix_key}  hash  as dev-meta
    {p}:index:acct|dev|pfx     zset  id -> last seen (event time): bounded scans and purges
    {p}:meta                   hash  small engine state (save_meta / load_meta)

Every profile key expires ``ttl_s`` after its last write as a safety net; ``purge`` removes
idle profiles by event time like the embedded store. Single Redis (or a Sentinel-managed
primary) only: the scripts touch keys in several hash slots, so Redis Cluster is not supported.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ringfence.service.adapters.codec import decision_from_json, decision_to_json
from ringfence.service.core.model import AccountSummary, Decision, Linkage
from ringfence.service.core.profiles import (
    DAY_MINUTES,
    SHARED_CAPACITY,
    AccountEvent,
    AccountProfile,
    SharedProfile,
    linkage,
    minute_of,
    summary,
)


class StoreConflict(redis.RedisError):
    """The same account kept changing under us; raised after ``max_retries`` attempts.

    A RedisError so that callers falling back on Redis errors fall back on this too."""


# KEYS: acct, dev, dev-meta, pfx, pfx-meta, index:acct, index:dev, index:pfx
# ARGV: expected version, blob, t, minute, since, account token, account id, device key,
#       prefix key, ttl seconds, shared capacity, account last seen
_RECORD = """
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v ~= ARGV[1] then
  -- Changed since the caller read it: hand back the current state to retry from.
  return {0, v, redis.call('HGET', KEYS[1], 'b')}
end
redis.call('HSET', KEYS[1], 'b', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('EXPIRE', KEYS[1], ARGV[10])
redis.call('ZADD', KEYS[6], 'GT', ARGV[12], ARGV[7])
local t = tonumber(ARGV[3])
local cap = tonumber(ARGV[11])
local out = {1}
local shared = {{KEYS[2], KEYS[3], KEYS[7], ARGV[8]}, {KEYS[4], KEYS[5], KEYS[8], ARGV[9]}}
for _, k in ipairs(shared) do
  redis.call('ZADD', k[1], 'GT', ARGV[4], ARGV[6])
  local n = redis.call('ZCARD', k[1])
  if n > cap then redis.call('ZREMRANGEBYRANK', k[1], 0, n - cap - 1) end
  -- Times travel as the caller's strings: Lua's number formatting would round them.
  local first = redis.call('HGET', k[2], 'first')
  if (not first) or t < tonumber(first) then
    first = ARGV[3]
    redis.call('HSET', k[2], 'first', first)
  end
  redis.call('HINCRBY', k[2], 'total', 1)
  redis.call('EXPIRE', k[1], ARGV[10])
  redis.call('EXPIRE', k[2], ARGV[10])
  redis.call('ZADD', k[3], 'GT', ARGV[3], k[4])
  out[#out + 1] = redis.call('ZCOUNT', k[1], ARGV[5], '+inf')
  out[#out + 1] = first
end
return out
"""

# KEYS: an index; ARGV: before (exclusive), batch size, then the key prefixes of each id.
_PURGE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  for i = 3, #ARGV do redis.call('DEL', ARGV[i] .. id) end
end
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return #ids
"""

_PAGE = 512  # ids fetched per round trip when listing or purging


def connect(url: str, *, timeout_s: float) -> redis.Redis:
    """A client that fails fast: short socket timeouts and no retries, because the caller
    falls back to local state instead of waiting (a retried timeout is a missed deadline)."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0)


class RedisProfileStore:
    """ProfileStore in Redis, shared by every process that uses the same URL and prefix."""

    def __init__(self, client: redis.Redis, *, prefix: str = "ringfence",
                 ttl_s: float = 30 * 86400.0, max_active: int = 1_000_000,
                 max_retries: int = 16) -> None:
        self._r = client
        self._p = prefix
        self._ttl = max(1, int(ttl_s))
        self._max_active = max_active
        self._max_retries = max_retries
        self._record = client.register_script(_RECORD)
        self._purge = client.register_script(_PURGE)
        self._no_shared = SharedProfile(0.0)  # stands in for the shared profiles in linkage()
        self.conflicts = 0  # optimistic-concurrency retries so far (contention indicator)

    @property
    def prefix(self) -> str:
        return self._p

    def _acct(self, account_id: str) -> str:
        return f"{self._p}:acct:{account_id}"

    def record(self, account_id: str, device_key: str, prefix_key: str, event: AccountEvent,
               created_at: float | None) -> Linkage:
        p = self._p
        keys = [self._acct(account_id), f"{p}:dev:{device_key}", f"{p}:dev-meta:{device_key}",
                f"{p}:pfx:{prefix_key}", f"{p}:pfx-meta:{prefix_key}", f"{p}:index:acct",
                f"{p}:index:dev", f"{p}:index:pfx"]
        minute = minute_of(event.t)
        version, blob = self._r.hmget(keys[0], ["v", "b"])
        for attempt in range(self._max_retries):
            account = (AccountProfile.from_bytes(blob) if blob
                       else AccountProfile(event.t))
            changed = account.record(event, created_at)
            out = self._record(keys=keys, args=[
                version if version is not None else b"0", account.to_bytes(), repr(event.t),
                minute, minute - DAY_MINUTES, event.account_token, account_id, device_key,
                prefix_key, self._ttl, SHARED_CAPACITY, repr(account.last_seen)])
            if out[0] == 1:
                _, device_accounts, device_first, prefix_accounts, _ = out
                link = linkage(account, self._no_shared, self._no_shared, event.t,
                               identity_changed=changed)
                return dataclasses.replace(
                    link, device_accounts=int(device_accounts),
                    device_first_seen=float(device_first), prefix_accounts=int(prefix_accounts))
            # Another process recorded this account in between; its state came back with
            # the refusal, so the retry needs no extra read. Exponential jittered backoff
            # de-synchronises writers that keep colliding (a burst on one account only).
            _, version, blob = out
            self.conflicts += 1
            time.sleep(random.uniform(0, min(0.005, 0.0002 * 2**attempt)))
        raise StoreConflict(f"account profile kept changing: {self._max_retries} attempts")

    def account_profile(self, account_id: str) -> AccountProfile | None:
        blob = self._r.hget(self._acct(account_id), "b")
        return None if blob is None else AccountProfile.from_bytes(blob)

    def account_summary(self, account_id: str, now: float) -> AccountSummary | None:
        account = self.account_profile(account_id)
        return None if account is None else summary(account_id, account, now)

    def save_decision(self, account_id: str, decision: Decision) -> None:
        # Shared so every replica's GetAccount shows the same last decision.
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(self._acct(account_id), "d", decision_to_json(decision))
        pipe.expire(self._acct(account_id), self._ttl)
        pipe.execute()

    def last_decision(self, account_id: str) -> Decision | None:
        version, text = self._r.hmget(self._acct(account_id), ["v", "d"])
        if version is None or text is None:  # unknown account, as in the embedded store
            return None
        return decision_from_json(text.decode())

    def active_accounts(self) -> Iterator[tuple[str, AccountProfile]]:
        """The most recently active accounts (at most ``max_active``), newest first, paged
        so that neither Redis nor this process handles more than one page at a time."""
        index = f"{self._p}:index:acct"
        for start in range(0, self._max_active, _PAGE):
            stop = min(start + _PAGE, self._max_active) - 1
            ids = self._r.zrevrange(index, start, stop)
            if not ids:
                return
            pipe = self._r.pipeline(transaction=False)
            for raw in ids:
                pipe.hget(f"{self._p}:acct:".encode() + raw, "b")
            for raw, blob in zip(ids, pipe.execute(), strict=True):
                if blob is not None:
                    yield raw.decode(), AccountProfile.from_bytes(blob)
            if len(ids) < stop - start + 1:
                return

    def save_meta(self, key: str, value: str) -> None:
        self._r.hset(f"{self._p}:meta", key, value)

    def load_meta(self, key: str) -> str | None:
        value = self._r.hget(f"{self._p}:meta", key)
        return None if value is None else value.decode()

    def purge(self, before: float) -> int:
        """Delete profiles not seen since ``before`` (event time); returns how many."""
        p = self._p
        total = 0
        for index, prefixes in (("acct", (f"{p}:acct:",)),
                                ("dev", (f"{p}:dev:", f"{p}:dev-meta:")),
                                ("pfx", (f"{p}:pfx:", f"{p}:pfx-meta:"))):
            while True:
                n = int(self._purge(keys=[f"{p}:index:{index}"],
                                    args=[repr(before), _PAGE, *prefixes]))
                total += n
                if n < _PAGE:
                    break
        return total

    def begin_checkpoint(self) -> int:
        return 0  # every write is already in Redis

    def checkpoint(self, limit: int | None = None) -> int:
        return 0

    def flush(self) -> None:
        return None

    def ping(self) -> bool:
        return bool(self._r.ping())

    def close(self) -> None:
        self._r.close()
