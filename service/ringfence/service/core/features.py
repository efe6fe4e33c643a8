"""Account feature vectors for clustering (schema ``FEATURE_SCHEMA_VERSION``).

A vector has two parts:

- **identity** (``IDENTITY_DIMS`` dims): the identifiers an account used — devices, client
  stacks, IPs, prefixes, ASNs, content signatures — embedded so that accounts sharing *rare*
  identifiers land close together. Each identifier token (a keyed hash) has a rarity weight
  fitted at refit time, ``log(N / df) / log(N)`` for a token seen on ``df`` of the ``N`` active
  accounts, and 0 for a token only one account has (it links nothing). An account is the
  sparse vector of its shared tokens (rarity × kind weight, averaged per kind, unit length),
  reduced to ``IDENTITY_DIMS`` by a truncated SVD fitted at refit time on all active accounts
  and applied unchanged to accounts placed between refits. Identifiers that occur *together*
  (a fleet's device pool, its proxy prefixes and its prompt templates) fall on the same
  components, so two fleet accounts that share no single identifier still land close; a token
  thousands of unrelated accounts share weighs little. A token unseen (or unshared) at refit
  counts for nothing until the next refit.
- **behaviour**: volume, hour-of-day rhythm, timing regularity, task mix, anonymizer share and
  account age, each scaled to about [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from ringfence.service.core.profiles import DAY_MINUTES, AccountProfile, RecentKeys, minute_of

FEATURE_SCHEMA_VERSION = 2
IDENTITY_DIMS = 16
BEHAVIOUR_NAMES = ("log_daily_volume", "hour_rhythm_sin", "hour_rhythm_cos",
                   "timing_regularity", "code_reasoning_share", "anonymized_share",
                   "account_age")
FEATURE_NAMES = tuple(f"identity_{i}" for i in range(IDENTITY_DIMS)) + BEHAVIOUR_NAMES

# Identifier kinds: (name, salt, weight). The salt keeps equal values of different kinds apart.
KINDS = (
    ("device", 0x9E3779B97F4A7C15, 1.0),
    ("stack", 0xBF58476D1CE4E5B9, 0.5),
    ("ip", 0x94D049BB133111EB, 0.6),
    ("prefix", 0xD6E8FEB86659FD93, 0.6),
    ("asn", 0xA0761D6478BD642F, 0.3),
    ("signature", 0xE7037ED1A0B428DB, 1.0),
)
_MASK = (1 << 64) - 1
_DAY = 86400.0

U64Array = npt.NDArray[np.uint64]
F64Array = npt.NDArray[np.float64]
F32Array = npt.NDArray[np.float32]


# Kinds whose shared tokens can link a request to a risky cluster on sight ("beacons"). Not
# the client stack, nor a device key that is only the stack (no device id sent): every user of
# one SDK build shares it, fleet or not. Not the ASN either: too broad to single out a fleet.
BEACON_KINDS = ("device", "ip", "prefix", "signature")
_SALT = {name: salt for name, salt, _ in KINDS}


def request_tokens(*, device: int, stack: int, ip: int, prefix: int,
                   signature: int | None) -> tuple[int, ...]:
    """One request's identifier tokens of the beacon kinds, namespaced as in
    ``account_tokens`` (so they can be looked up in a fitted model's beacons)."""
    out = [(ip ^ _SALT["ip"]) & _MASK, (prefix ^ _SALT["prefix"]) & _MASK]
    if device != stack:
        out.append((device ^ _SALT["device"]) & _MASK)
    if signature is not None:
        out.append((signature ^ _SALT["signature"]) & _MASK)
    return tuple(out)


def stack_only_devices(tokens_by_kind: Sequence[U64Array]) -> npt.NDArray[np.bool_]:
    """For each device token: True when the device key is just the client stack (the client
    sent no device id), which every user of the same browser build or SDK shares."""
    device_salt, stack_salt = KINDS[0][1], KINDS[1][1]
    devices = tokens_by_kind[0] ^ np.uint64(device_salt)
    stacks = tokens_by_kind[1] ^ np.uint64(stack_salt)
    # np.isin costs ~70 µs per call on these few-element arrays; a snapshot makes two calls
    # per account (16 s of a 50k snapshot), the pairwise comparison a few µs
    return (devices[:, None] == stacks[None, :]).any(axis=1)


def _key_sets(p: AccountProfile) -> tuple[RecentKeys, ...]:
    return (p.devices, p.stacks, p.ips, p.prefixes, p.asns, p.signatures)


def account_tokens(p: AccountProfile, since_minute: int) -> list[U64Array]:
    """The account's identifier tokens per kind (namespaced 64-bit), seen since the minute."""
    out = []
    for keys, (_, salt, _) in zip(_key_sets(p), KINDS, strict=True):
        tokens = [(k ^ salt) & _MASK for k, s in zip(keys.keys, keys.seen, strict=True)
                  if s >= since_minute]
        out.append(np.array(tokens, dtype=np.uint64))
    return out


_SIN = tuple(math.sin(2 * math.pi * i / 24) for i in range(24))
_COS = tuple(math.cos(2 * math.pi * i / 24) for i in range(24))


def behaviour(p: AccountProfile, now: float) -> list[float]:
    """The behaviour part of the vector (see BEHAVIOUR_NAMES)."""
    total = sum(p.hours) or 1
    s = sum(h * k for h, k in zip(p.hours, _SIN, strict=True)) / total
    c = sum(h * k for h, k in zip(p.hours, _COS, strict=True)) / total
    if p.gap_count >= 2:
        mean = p.gap_log_sum / p.gap_count
        std = math.sqrt(max(0.0, p.gap_log_sq / p.gap_count - mean * mean))
        regularity = 1 / (1 + std)
    else:
        regularity = 0.5
    daily = p.windows.count(now).last_24h
    code = (p.task_mix[2] + p.task_mix[3]) / (p.total or 1)
    created = p.created_at if p.created_at is not None else p.first_seen
    age_days = max(0.0, now - created) / _DAY
    return [math.log1p(daily) / math.log1p(1000), s, c, regularity, code,
            p.anonymized_share, min(1.0, math.log1p(age_days) / math.log1p(90))]


@dataclass(frozen=True)
class Rarity:
    """Document frequencies of identifier tokens over the active accounts at refit time, and
    the identity projection fitted on them."""

    tokens: U64Array  # sorted
    counts: npt.NDArray[np.int64]
    n_accounts: int
    shared: U64Array = field(default_factory=lambda: np.zeros(0, np.uint64))  # df ≥ 2, sorted
    # (len(shared), IDENTITY_DIMS): each shared token's row of the projection
    components: F32Array = field(
        default_factory=lambda: np.zeros((0, IDENTITY_DIMS), np.float32))

    @classmethod
    def fit(cls, per_account: Sequence[Sequence[U64Array]]) -> Rarity:
        """Count, for each token, the accounts that have it, then fit the projection. An
        account's tokens of one kind are distinct (``account_tokens`` reads them from sets)
        and kinds are salted apart, so one pass over all tokens counts accounts, not
        occurrences."""
        flat = [t for tokens in per_account for t in tokens if len(t)]
        if not flat:
            return cls(np.zeros(0, np.uint64), np.zeros(0, np.int64), len(per_account))
        tokens, counts = np.unique(np.concatenate(flat), return_counts=True)
        counted = cls(tokens, counts.astype(np.int64), len(per_account),
                      shared=tokens[counts >= 2])
        x = _weighted_matrix(per_account, counted)
        k = min(IDENTITY_DIMS, min(x.shape) - 1)
        components = np.zeros((x.shape[1], IDENTITY_DIMS), np.float32)
        if k >= 1 and x.nnz:
            _, _, vt = randomized_svd(x, n_components=k, random_state=0)
            components[:, :k] = vt.T
        return replace(counted, components=components)

    def weights(self, tokens: U64Array) -> F64Array:
        """Rarity weight in [0, 1] per token: 0 if seen on at most one account."""
        if not len(tokens) or not len(self.tokens):
            return np.zeros(len(tokens))
        idx = np.clip(np.searchsorted(self.tokens, tokens), 0, len(self.tokens) - 1)
        df = np.where(self.tokens[idx] == tokens, self.counts[idx], 1).astype(np.float64)
        n = max(self.n_accounts, 2)
        w = np.log(n / df) / math.log(n)
        return np.where(df >= 2, np.clip(w, 0.0, 1.0), 0.0)

    def df(self, tokens: U64Array) -> npt.NDArray[np.int64]:
        """How many accounts had each token at refit time (0 if none)."""
        if not len(tokens) or not len(self.tokens):
            return np.zeros(len(tokens), np.int64)
        idx = np.clip(np.searchsorted(self.tokens, tokens), 0, len(self.tokens) - 1)
        return np.where(self.tokens[idx] == tokens, self.counts[idx], 0)


def _weighted_matrix(per_account: Sequence[Sequence[U64Array]], rarity: Rarity
                     ) -> sp.csr_matrix:
    """Accounts × shared tokens: rarity × kind weight, averaged over the account's tokens of
    each kind, each row scaled to unit length (all-zero for an account sharing nothing)."""
    n, kinds = len(per_account), len(KINDS)
    m = len(rarity.shared)
    arrays = [t for by_kind in per_account for t in by_kind]
    lengths = np.fromiter((len(t) for t in arrays), dtype=np.int64, count=len(arrays))
    if not lengths.sum() or not m:
        return sp.csr_matrix((n, m))
    tokens = np.concatenate(arrays).astype(np.uint64, copy=False)
    # segment = account * kinds + kind, repeated once per token of that (account, kind)
    segment = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
    per_segment = np.bincount(segment, minlength=n * kinds)
    kind_weight = np.array([w for *_, w in KINDS])
    value = rarity.weights(tokens) * kind_weight[segment % kinds] / per_segment[segment]
    column = np.clip(np.searchsorted(rarity.shared, tokens), 0, m - 1)
    keep = (value > 0) & (rarity.shared[column] == tokens)
    x = sp.csr_matrix((value[keep], (segment[keep] // kinds, column[keep])), shape=(n, m))
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ x)


def identity_matrix(per_account: Sequence[Sequence[U64Array]], rarity: Rarity) -> F64Array:
    """The identity part for many accounts at once (one sparse product)."""
    x = _weighted_matrix(per_account, rarity)
    if not x.shape[1]:
        return np.zeros((len(per_account), IDENTITY_DIMS))
    # Only the projection rows of the tokens these accounts have: converting all of them
    # (every shared token of the fit) cost ~2 ms per placement slice of 32 accounts on the
    # serving loop. The columns keep their order, so each row sums in the same order.
    used = np.unique(x.indices)
    x = sp.csr_matrix((x.data, np.searchsorted(used, x.indices), x.indptr),
                      shape=(x.shape[0], len(used)))
    return np.asarray(x @ rarity.components[used].astype(np.float64), dtype=np.float64)


def feature_rows(profiles: Iterable[AccountProfile], now: float, rarity: Rarity,
                 window_days: float) -> F64Array:
    """Feature vectors for accounts (e.g. to place new accounts between refits)."""
    since = minute_of(now) - int(window_days * DAY_MINUTES)
    profiles = list(profiles)
    ident = identity_matrix([account_tokens(p, since) for p in profiles], rarity)
    beh = np.array([behaviour(p, now) for p in profiles], dtype=np.float64)
    return np.hstack([ident, beh.reshape(len(profiles), len(BEHAVIOUR_NAMES))])
