"""Memory per tracked account, in process (no gRPC): the engine is built as app.py builds it,
with an in-memory store (``EmbeddedProfileStore(None)``) and no event log, and fed one request
for each of N new accounts. Run in a fresh (spawned) process per variant so RSS is its own.

Variants: ``distinct`` gives every account its own device id and its own /24 network, so the
device and prefix books grow with the accounts (the worst case); ``account_only`` sends every
account from one device and one IP, so only account profiles (and their decisions) grow.

Before the baseline the bounded caches are brought to steady state (the GeoIP answer cache is
filled to its capacity, the user-agent parse cache warmed, and in ``distinct`` the fingerprint
analysis cache filled), so the delta is the profiles.
"""

from __future__ import annotations

import gc
import ipaddress
import linecache
import random
import time
import tracemalloc
from typing import Any

from servers import pin_to
from workload import ENDPOINTS, Device, make_device

from ringfence.service.adapters.clock import SystemClock
from ringfence.service.adapters.codec import decision_to_json
from ringfence.service.adapters.embedded_store import EmbeddedProfileStore
from ringfence.service.adapters.event_log import NullEventLog
from ringfence.service.adapters.geoip import GeoIpPaths, MaxMindGeoIp
from ringfence.service.core.engine import RiskEngine
from ringfence.service.core.fingerprint import ANALYSIS_CACHE_SIZE
from ringfence.service.core.identity import Hasher
from ringfence.service.core.model import Fingerprint, Observation, RequestContext, TaskCategory
from ringfence.service.core.policy import Policy
from ringfence.service.core.profiles import AccountProfile
from ringfence.service.settings import Settings

_ACCOUNT_NET = int(ipaddress.IPv4Address("11.0.0.0"))  # account i: 11.0.0.0 + i·256 + 7
_WARM_NET = int(ipaddress.IPv4Address("60.0.0.0"))  # GeoIP-cache fill addresses


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def build_engine(settings: Settings) -> tuple[RiskEngine, EmbeddedProfileStore, MaxMindGeoIp]:
    """As App.start builds it with persist=False (in-memory store, NullEventLog)."""
    geoip = MaxMindGeoIp(GeoIpPaths(), cache_size=settings.geoip_cache_size)
    store = EmbeddedProfileStore(
        None, max_accounts=settings.max_accounts_in_memory, max_shared=settings.max_shared_in_memory
    )
    engine = RiskEngine(
        policy=Policy(),
        geoip=geoip,
        store=store,
        events=NullEventLog(),
        clock=SystemClock(),
        hasher=Hasher(bytes(range(32))),
    )
    return engine, store, geoip


def fingerprint_of(d: Device, **changes: Any) -> Fingerprint:
    fields: dict[str, Any] = dict(
        ja4=d.ja4,
        user_agent=d.user_agent,
        header_names=d.header_names,
        sdk_name=d.sdk_name,
        sdk_version=d.sdk_version,
        device_id=d.device_id,
        accept_language=d.accept_language,
        extra_fingerprints={"ja4h": d.ja4h} if d.ja4h else {},
    )
    return Fingerprint(**{**fields, **changes})


class _Feeder:
    def __init__(self, variant: str, seed: int) -> None:
        self.variant = variant
        self.rng = random.Random(seed)
        self.shared = self._fingerprint("shared-device")

    def _fingerprint(self, device_id: str) -> Fingerprint:
        return fingerprint_of(make_device(self.rng, device_id=device_id))

    def observation(self, prefix: str, i: int) -> Observation:
        endpoint, model, task, tin, tout = self.rng.choice(ENDPOINTS)
        if self.variant == "distinct":
            fp = self._fingerprint(f"{prefix}-dev-{i:07d}")
            ip = ipaddress.IPv4Address(_ACCOUNT_NET + (i << 8) + 7)
        else:
            fp = self.shared
            ip = ipaddress.IPv4Address(_ACCOUNT_NET + 7)
        return Observation(
            account_id=f"{prefix}_{i:07d}_{self.rng.getrandbits(32):08x}",
            client_ip=ip,
            fingerprint=fp,
            api_key_id=f"key_{i:012x}",
            org_id=f"org-{i:010x}",
            context=RequestContext(
                event_time=time.time(),
                endpoint=endpoint,
                model=model,
                task=TaskCategory(task),
                input_tokens=tin,
                output_tokens=tout,
            ),
        )


def measure(
    variant: str, accounts: int, traced_accounts: int, seed: int = 11, cpus: set[int] | None = None
) -> dict[str, Any]:
    pin_to(cpus)
    settings = Settings(persist=False)
    engine, store, geoip = build_engine(settings)
    feeder = _Feeder(variant, seed)
    out: dict[str, Any] = {"variant": variant, "accounts": accounts}

    # Steady state of the bounded caches first.
    gc.collect()
    rss0 = rss_bytes()
    for k in range(settings.geoip_cache_size):
        geoip.lookup(ipaddress.IPv4Address(_WARM_NET + k))
    gc.collect()
    out["geoip_cache_bytes"] = rss_bytes() - rss0
    # Enough distinct devices (in ``distinct``) to fill the fingerprint analysis cache.
    for i in range(max(2000, ANALYSIS_CACHE_SIZE + 1000)):
        engine.score(feeder.observation("warm", i))
    store.checkpoint()  # App checkpoints every few seconds; this empties the dirty sets

    gc.collect()
    before = rss_bytes()
    tracked_before = len(gc.get_objects())
    t0 = time.perf_counter()
    for i in range(accounts):
        engine.score(feeder.observation("acct", i))
    elapsed = time.perf_counter() - t0
    store.checkpoint()
    gc.collect()
    after = rss_bytes()
    # What a full collection costs with the books this size (a stall on the serving loop),
    # and how many objects per account the collector has to traverse.
    t_gc = time.perf_counter()
    gc.collect()
    out["full_gc_ms"] = (time.perf_counter() - t_gc) * 1e3
    out["gc_objects_per_account"] = (len(gc.get_objects()) - tracked_before) / accounts
    out.update(
        rss_before=before,
        rss_after=after,
        bytes_per_account=(after - before) / accounts,
        score_us=elapsed / accounts * 1e6,
        books=_books(store),
    )

    # tracemalloc on a further, smaller batch: which source lines hold the bytes.
    if traced_accounts:
        gc.collect()
        tracemalloc.start()
        snap0 = tracemalloc.take_snapshot()
        for i in range(traced_accounts):
            engine.score(feeder.observation("traced", i))
        store.checkpoint()
        gc.collect()
        snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = snap1.compare_to(snap0, "lineno")
        total = sum(s.size_diff for s in stats)
        out["traced_accounts"] = traced_accounts
        out["traced_bytes_per_account"] = total / traced_accounts
        out["traced_top"] = [
            (_where(s.traceback), s.size_diff / traced_accounts, s.count_diff / traced_accounts)
            for s in stats[:10]
        ]

    sample = store.accounts.cache[next(reversed(store.accounts.cache))]
    out["serialized"] = serialized_sizes(sample, store)
    return out


def _where(tb: tracemalloc.Traceback) -> str:
    frame = tb[0]
    name = frame.filename.split("/site-packages/")[-1].split("/service/")[-1]
    code = linecache.getline(frame.filename, frame.lineno).strip()
    return f"{name}:{frame.lineno}  {code[:70]}"


def _books(store: EmbeddedProfileStore) -> dict[str, int]:
    return {
        "accounts": len(store.accounts.cache),
        "devices": len(store.devices.cache),
        "prefixes": len(store.prefixes.cache),
        "decisions": len(store.accounts.decisions),
    }


def serialized_sizes(sample: AccountProfile, store: EmbeddedProfileStore) -> dict[str, int]:
    """Bytes of the stored forms (state.db rows): a one-request profile from the run, and
    profiles saturated through the engine (an account seen on 600 devices, networks, stacks
    and prompt signatures; a device and a network shared by 600 accounts)."""
    engine, sat_store, _ = build_engine(Settings(persist=False))
    base = fingerprint_of(make_device(random.Random(5), device_id="shared"))
    for k in range(600):
        fp = fingerprint_of(
            make_device(random.Random(5)), device_id=f"sat-dev-{k}", attributes={"build": str(k)}
        )
        ctx = RequestContext(
            event_time=time.time(),
            endpoint="/v1/chat/completions",
            model="gpt-4o-mini",
            task=TaskCategory.CHAT,
            input_tokens=10,
            output_tokens=10,
            content_signature=k + 1,
        )
        engine.score(
            Observation(
                account_id="saturated",
                fingerprint=fp,
                context=ctx,
                client_ip=ipaddress.IPv4Address(_ACCOUNT_NET + (k << 8) + 9),
            )
        )
        engine.score(
            Observation(
                account_id=f"sharer-{k}",
                fingerprint=base,
                context=ctx,
                client_ip=ipaddress.IPv4Address(_WARM_NET + 9),
            )
        )
    full = sat_store.accounts.cache["saturated"]
    shared = max(sat_store.devices.cache.values(), key=lambda p: p.total)
    key = next(reversed(store.accounts.cache))
    decision = store.accounts.decisions.get(key)
    one_device = store.devices.cache[next(reversed(store.devices.cache))]
    return {
        "account_after_1_request": len(sample.to_bytes()),
        "account_saturated": len(full.to_bytes()),
        "shared_1_account": len(one_device.to_bytes()),
        "shared_saturated": len(shared.to_bytes()),
        "decision_json": len(decision_to_json(decision)) if decision else 0,
    }


def run(
    variant: str, accounts: int, traced_accounts: int, cpus: set[int] | None, conn: Any
) -> None:
    """Process entry point: send back the measure() dict (or the failure)."""
    try:
        conn.send(("result", measure(variant, accounts, traced_accounts, cpus=cpus)))
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()
