"""A flood of unique garbage accounts, devices, addresses and user agents stays within the
configured bounds: every in-memory structure the request path grows is counted after the flood
and must be at or below its capacity (eviction works). Counts and sizes the components report,
not RSS or timing."""

from __future__ import annotations

import grpc

from ringfence.service.core.fingerprint import _parse_ua
from ringfence.service.core.profiles import SHARED_CAPACITY
from ringfence.service.geodata import NetworkRecord, write_geo_databases
from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc

FLOOD = 1200  # unique accounts, devices, /24s and user agents
ACCOUNTS, SHARED, GEO_CACHE = 100, 75, 50  # the configured bounds, far below FLOOD


def garbage(i: int) -> pb.ScoreRequest:
    return pb.ScoreRequest(
        account_id=f"flood-{i}-{'z' * (i % 200)}",
        client_ip=f"10.{i // 256 % 256}.{i % 256}.{i % 250 + 1}",
        fingerprint=pb.DeviceFingerprint(
            device_id=f"dev-{i}",
            user_agent=f"Mozilla/5.0 (X11; Flood {i}) Gecko/{i} Firefox/{i % 130}.0",
            ja4=f"t13d{i:04d}h2_{i:012x}_{i:012x}",
            header_names=[f"x-h{i}-{k}" for k in range(5)],
            attributes={f"a{k}": f"{i}" for k in range(8)},
        ),
    )


async def test_unique_garbage_flood_stays_within_the_configured_bounds(start_app, tmp_path):
    paths = write_geo_databases(
        [NetworkRecord(cidr="10.0.0.0/8", asn=64500, as_org="Flood Net")],
        tmp_path / "geo",
        kinds=("asn",),
    )
    app = await start_app(
        data_dir=tmp_path / "data",
        geoip_asn_db=paths.asn,
        geoip_cache_size=GEO_CACHE,
        max_accounts_in_memory=ACCOUNTS,
        max_shared_in_memory=SHARED,
        cluster_refit_local=False,  # a replica waiting for its first published model
        cluster_refit_pending=1,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        for start in range(0, FLOOD, 100):
            reply = await stub.ScoreBatch(
                pb.ScoreBatchRequest(requests=[garbage(i) for i in range(start, start + 100)]),
                timeout=60,
            )
            assert all(r.HasField("response") for r in reply.results)
        # One account from thousands of addresses and devices; one device for many accounts.
        for i in range(0, FLOOD, 100):
            batch = [garbage(j) for j in range(i, i + 100)]
            for j, req in enumerate(batch):
                if j % 2:
                    req.account_id = "one-account"
                else:
                    req.fingerprint.device_id = "one-device"
            await stub.ScoreBatch(pb.ScoreBatchRequest(requests=batch), timeout=60)
        await app.purge_now()  # the hourly job: must not be what keeps the bounds

    store = app.store
    for book, bound in (
        (store.accounts, ACCOUNTS),
        (store.devices, SHARED),
        (store.prefixes, SHARED),
    ):
        assert len(book.cache) <= bound, book.table
        assert len(book.dirty) <= bound, book.table
        assert len(book.decisions) <= bound, book.table
    assert app.geoip.cache_entries <= GEO_CACHE
    assert app.clusters.pending <= ACCOUNTS  # accounts waiting for a model to be placed in
    assert _parse_ua.cache_info().currsize <= _parse_ua.cache_info().maxsize  # UA parse LRU

    one = store.account_profile("one-account")
    for key_set in (one.ips, one.prefixes, one.devices, one.stacks):
        assert len(key_set.keys) <= key_set.capacity
        assert key_set.saturated  # it did evict: thousands went through a small set
    device = store.devices.cache.get(
        next(k for k, p in store.devices.cache.items() if p.total >= FLOOD // 2)
    )
    assert len(device.accounts.keys) <= SHARED_CAPACITY and device.accounts.saturated
    # Evicted profiles went to disk, not away: the first flooded account is still known.
    summary = (await _account(app, garbage(1).account_id)).profile
    assert summary.total_requests == 1


async def _account(app, account_id: str) -> pb.GetAccountResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        return await stub.GetAccount(pb.GetAccountRequest(account_id=account_id), timeout=5)
