"""StreamDecisions over a real grpc.aio server: snapshot then live events from Score traffic,
filters, heartbeats, auth, shutdown, and the Python client's DecisionCache against it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ringfence.client import Action as ClientAction
from ringfence.client import AsyncClient, AsyncDecisionCache, Fingerprint, ScoreRequest
from ringfence.service.api.auth import token_hash
from ringfence.service.api.decision_stream import follow
from ringfence.service.core.decision_feed import DecisionFilter
from ringfence.service.core.errors import FellBehind
from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc

READ_TIMEOUT = 5.0
Event = pb.DecisionEvent
UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


def fleet_request(i: int) -> pb.ScoreRequest:
    """One of a fleet of new accounts on one device: the later ones are throttled or worse."""
    return pb.ScoreRequest(
        account_id=f"fleet-{i}",
        client_ip=f"203.0.113.{i % 250}",
        fingerprint=pb.DeviceFingerprint(device_id="device-planted", user_agent=UA),
    )


async def next_event(stream: AsyncIterator[Event]) -> Event:
    return await asyncio.wait_for(anext(stream), READ_TIMEOUT)


async def until_snapshot_end(stream: AsyncIterator[Event]) -> list[Event]:
    snapshot = []
    while (event := await next_event(stream)).kind != Event.KIND_SNAPSHOT_END:
        assert event.kind == Event.KIND_SNAPSHOT
        snapshot.append(event)
    return snapshot


async def test_score_traffic_shows_up_as_a_snapshot_then_live_upserts(stub):
    restricted = {}
    for i in range(40):
        answer = await stub.Score(fleet_request(i), timeout=5)
        if answer.action >= pb.ACTION_THROTTLE:
            restricted[answer.limit_key] = answer
    assert len(restricted) >= 10  # the fleet is caught

    call = stub.StreamDecisions(pb.StreamDecisionsRequest(), timeout=30)
    stream = aiter(call)
    snapshot = await until_snapshot_end(stream)
    assert {e.decision.limit_key for e in snapshot} == set(restricted)
    for event in snapshot:
        d, answer = event.decision, restricted[event.decision.limit_key]
        assert (d.scope, d.action) == (pb.LIMIT_SCOPE_ACCOUNT, answer.action)
        assert d.subject_id == d.limit_key.removeprefix("account:")
        assert 0 < d.ttl.ToSeconds() <= answer.decision_ttl.ToSeconds()
        assert list(d.reason_codes) == [r.code for r in answer.reasons]
        assert d.policy_version == answer.policy_version

    answer = await stub.Score(fleet_request(40), timeout=5)
    assert answer.action >= pb.ACTION_THROTTLE
    live = await next_event(stream)
    assert live.kind == Event.KIND_UPSERT
    assert (live.decision.limit_key, live.decision.action) == ("account:fleet-40", answer.action)
    assert live.decision.expires_at.ToSeconds() == pytest.approx(
        answer.decided_at.ToSeconds() + answer.decision_ttl.ToSeconds(), abs=1
    )

    # The same account again with the same verdict is not news: the next event is the
    # next account's.
    await stub.Score(fleet_request(40), timeout=5)
    await stub.Score(fleet_request(41), timeout=5)
    assert (await next_event(stream)).decision.limit_key == "account:fleet-41"
    call.cancel()


async def test_filters_and_skipping_the_snapshot(stub):
    actions = {}
    for i in range(40):
        answer = await stub.Score(fleet_request(i), timeout=5)
        actions[answer.limit_key] = answer.action
    assert {pb.ACTION_THROTTLE, pb.ACTION_CHALLENGE} <= set(actions.values())
    call = stub.StreamDecisions(
        pb.StreamDecisionsRequest(min_action=pb.ACTION_CHALLENGE, scopes=[pb.LIMIT_SCOPE_ACCOUNT]),
        timeout=30,
    )
    snapshot = await until_snapshot_end(aiter(call))
    assert {e.decision.limit_key for e in snapshot} == {
        key for key, action in actions.items() if action >= pb.ACTION_CHALLENGE
    }
    call.cancel()
    call = stub.StreamDecisions(
        pb.StreamDecisionsRequest(scopes=[pb.LIMIT_SCOPE_CLUSTER]), timeout=30
    )
    assert await until_snapshot_end(aiter(call)) == []  # no cluster is enforced yet
    call.cancel()

    call = stub.StreamDecisions(pb.StreamDecisionsRequest(skip_snapshot=True), timeout=30)
    first = await next_event(aiter(call))
    assert first.kind == Event.KIND_SNAPSHOT_END
    assert first.heartbeat_interval.ToTimedelta().total_seconds() == 15.0  # the default
    call.cancel()


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (pb.StreamDecisionsRequest(min_action=pb.ACTION_ALLOW), {"min_action"}),
        (pb.StreamDecisionsRequest(min_action=9), {"min_action"}),
        (pb.StreamDecisionsRequest(scopes=[pb.LIMIT_SCOPE_CLUSTER, 7]), {"scopes[1]"}),
    ],
)
async def test_a_bad_filter_is_invalid_argument_naming_the_field(stub, request_, fields):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.StreamDecisions(request_, timeout=5):
            pass
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    bad = error_details_pb2.BadRequest()
    assert status is not None and status.details[0].Unpack(bad)
    assert {v.field for v in bad.field_violations} == fields



async def test_thousands_of_bad_scopes_still_get_invalid_argument(stub):
    """Found by bench/fuzz.py: one violation per bad value made a ~100 KB status trailer that
    the client refused (it saw RESOURCE_EXHAUSTED). The details now list the first 20."""
    request_ = pb.StreamDecisionsRequest(scopes=[7 + i for i in range(5_000)])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.StreamDecisions(request_, timeout=5):
            pass
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    bad = error_details_pb2.BadRequest()
    assert status is not None and status.details[0].Unpack(bad)
    fields = [v.field for v in bad.field_violations]
    assert fields[:20] == [f"scopes[{i}]" for i in range(20)]
    assert fields[20] == "scopes[20]"
    assert "4980 more" in bad.field_violations[20].description
    assert len(fields) == 21


async def test_heartbeats_keep_a_quiet_stream_alive(start_app):
    app = await start_app(decision_stream_heartbeat_s=0.05)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        call = risk_pb2_grpc.RiskServiceStub(channel).StreamDecisions(
            pb.StreamDecisionsRequest(), timeout=30
        )
        stream = aiter(call)
        assert (await next_event(stream)).kind == Event.KIND_SNAPSHOT_END
        beat = await next_event(stream)
        assert beat.kind == Event.KIND_HEARTBEAT
        assert beat.heartbeat_interval.ToMilliseconds() == 50
        call.cancel()


async def test_server_stop_ends_the_stream_at_once(start_app):
    app = await start_app()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        call = risk_pb2_grpc.RiskServiceStub(channel).StreamDecisions(
            pb.StreamDecisionsRequest(), timeout=30
        )
        stream = aiter(call)
        assert (await next_event(stream)).kind == Event.KIND_SNAPSHOT_END
        started = time.monotonic()
        await asyncio.wait_for(app.stop(grace=20), READ_TIMEOUT)  # far less than the grace
        assert time.monotonic() - started < READ_TIMEOUT
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await next_event(stream)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (err.value.details() or "")


async def test_the_stream_can_be_turned_off(start_app):
    app = await start_app(decision_stream_max_subscribers=0)
    assert app.decision_feed is None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.StreamDecisions(pb.StreamDecisionsRequest(), timeout=5):
                pass
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert (await stub.Score(fleet_request(1), timeout=5)).limit_key  # scoring unaffected


async def test_too_many_streams_are_refused(start_app):
    app = await start_app(decision_stream_max_subscribers=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        first = stub.StreamDecisions(pb.StreamDecisionsRequest(), timeout=30)
        assert (await next_event(aiter(first))).kind == Event.KIND_SNAPSHOT_END
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.StreamDecisions(pb.StreamDecisionsRequest(), timeout=5):
                pass
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()


async def test_a_reader_that_falls_behind_is_told_to_resync(start_app):
    app = await start_app(decision_stream_queue_size=3)
    events = follow(
        app.decision_feed, DecisionFilter(), snapshot=True, heartbeat_s=60, clock=app.clock
    )
    assert (await anext(events)).kind == Event.KIND_SNAPSHOT_END
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        for i in range(60):  # more restricting decisions than the reader's queue holds
            await stub.Score(fleet_request(i), timeout=5)
    with pytest.raises(FellBehind):
        await anext(events)
    assert app.decision_feed.cut_off == 1 and app.decision_feed.subscribers == 0


def write_tokens(path: Path, tokens: dict[str, str]) -> Path:
    path.write_text(
        "".join(
            f'[[caller]]\nname = "{role}-caller"\nrole = "{role}"\n'
            f'token_sha256 = "{token_hash(token)}"\n\n'
            for role, token in tokens.items()
        )
    )
    return path


async def test_readers_and_scorers_may_stream_others_are_turned_away(start_app, tmp_path):
    tokens = {"reader": "rft_reader", "scorer": "rft_scorer"}
    app = await start_app(tokens_file=write_tokens(tmp_path / "tokens.toml", tokens))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        for token in tokens.values():
            call = stub.StreamDecisions(
                pb.StreamDecisionsRequest(),
                timeout=30,
                metadata=(("authorization", f"Bearer {token}"),),
            )
            assert (await next_event(aiter(call))).kind == Event.KIND_SNAPSHOT_END
            call.cancel()
        for metadata in ((), (("authorization", "Bearer rft_wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.StreamDecisions(
                    pb.StreamDecisionsRequest(), timeout=5, metadata=metadata
                ):
                    pass
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_the_python_decision_cache_follows_the_service(target):
    async with AsyncClient(target, timeout=5) as client:
        for i in range(40):
            await client.score(
                ScoreRequest(
                    account_id=f"fleet-{i}",
                    client_ip=f"203.0.113.{i}",
                    fingerprint=Fingerprint(device_id="device-planted", user_agent=UA),
                )
            )
        async with AsyncDecisionCache(client) as cache:
            await cache.wait_synced(timeout=READ_TIMEOUT)
            assert cache.lookup(account_id="fleet-39").action >= ClientAction.THROTTLE
            assert cache.lookup(account_id="fleet-0") is None
            synced = cache.events_applied
            answer = await client.score(
                ScoreRequest(
                    account_id="fleet-40",
                    client_ip="203.0.113.40",
                    fingerprint=Fingerprint(device_id="device-planted", user_agent=UA),
                )
            )
            await cache.wait_for_events(synced + 1, timeout=READ_TIMEOUT)
            cached = cache.lookup(account_id="fleet-40")
            assert cached is not None and cached.action is answer.action


async def test_a_cluster_is_streamed_once_not_once_per_member(start_app, tmp_path):
    # The clustering tests' traffic: a fleet of 60 accounts beside 200 ordinary users.
    from test_clusters_api import NETWORKS, _request, traffic

    from ringfence.service.geodata import write_geo_databases

    paths = write_geo_databases(NETWORKS, tmp_path / "geo", kinds=("asn", "anonymous_ip"))
    app = await start_app(
        data_dir=tmp_path / "c",
        geoip_asn_db=paths.asn,
        geoip_anonymous_ip_db=paths.anonymous_ip,
        cluster_min_cluster_size=10,
        cluster_min_samples=5,
        cluster_assign_interval_s=3600,
        cluster_refit_interval_s=3600,
        cluster_refit_pending=10**6,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        requests = traffic(time.time())
        for start in range(0, len(requests), 500):
            await stub.ScoreBatch(
                pb.ScoreBatchRequest(requests=requests[start : start + 500]), timeout=30
            )
        await app.refit_now()
        call = stub.StreamDecisions(
            pb.StreamDecisionsRequest(scopes=[pb.LIMIT_SCOPE_CLUSTER], skip_snapshot=True),
            timeout=60,
        )
        stream = aiter(call)
        assert (await next_event(stream)).kind == Event.KIND_SNAPSHOT_END

        answers = [
            await stub.Score(
                _request(
                    f"fleet-{i}",
                    f"198.19.9.{i}",
                    f"fleet-dev-{i % 4}",
                    time.time(),
                    0x5EED5EED5EED5EED,
                    pb.TASK_CATEGORY_REASONING,
                ),
                timeout=5,
            )
            for i in range(60)
        ]
        members: dict[str, list[pb.ScoreResponse]] = {}
        for answer in answers:
            if answer.limit_scope == pb.LIMIT_SCOPE_CLUSTER:
                members.setdefault(answer.limit_key, []).append(answer)
        assert members and sum(len(m) for m in members.values()) >= 30
        # Lift the biggest cluster with a benign label: its DELETE closes what we read.
        lifted = max(members, key=lambda k: len(members[k]))
        await stub.SubmitLabel(
            pb.SubmitLabelRequest(
                cluster_id=lifted.removeprefix("cluster:"), label=pb.LABEL_VALUE_BENIGN, author="t"
            ),
            timeout=5,
        )
        events: dict[str, list[Event]] = {}
        while (event := await next_event(stream)).kind != Event.KIND_DELETE:
            assert event.kind == Event.KIND_UPSERT
            events.setdefault(event.decision.limit_key, []).append(event)
        assert event.decision.limit_key == lifted
        # Per cluster, one event per change of its verdict (at most one per stricter action),
        # not one per member request; the last carries the strictest member action.
        assert set(events) == {
            k for k, m in members.items() if max(a.action for a in m) >= pb.ACTION_THROTTLE
        }
        assert sum(len(e) for e in events.values()) < sum(len(m) for m in members.values()) / 3
        for key, published in events.items():
            assert 1 <= len(published) <= min(3, len(members[key]))
            assert published[-1].decision.action == max(a.action for a in members[key])
        assert lifted not in {d.limit_key for d in app.decision_feed.active()}
        call.cancel()


async def test_a_stream_that_ends_releases_its_subscription(app):
    events = follow(
        app.decision_feed, DecisionFilter(), snapshot=True, heartbeat_s=60, clock=app.clock
    )
    assert (await anext(events)).kind == Event.KIND_SNAPSHOT_END
    assert app.decision_feed.subscribers == 1
    await events.aclose()  # what a cancelled call does to the servicer's generator
    assert app.decision_feed.subscribers == 0
