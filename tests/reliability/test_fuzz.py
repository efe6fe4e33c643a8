"""Hostile input, CI-sized: every unary RPC the server offers (RiskService, Envoy ext_authz and
rate limit) gets hypothesis-built messages encoded straight onto the wire (tests/reliability/
protowire.py) — valid-ish and garbage field values: huge strings, invalid UTF-8, NaN and
infinities, negative and out-of-range integers, enormous maps and repeated fields, extreme
timestamps, unknown fields, then sometimes truncated or with bytes flipped — and random bytes.

The answer is always OK or the status documented for that RPC, never INTERNAL or UNKNOWN; an
OK answer parses as the response type; a batch item never carries INTERNAL; and the server is
still SERVING at the end. The long run (≥100k cases, atheris) is bench/fuzz.py.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter

import grpc
import pytest
import pytest_asyncio
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protowire import F, encode

from ringfence.service.app import App
from ringfence.v1 import risk_pb2 as pb

pytestmark = pytest.mark.asyncio(loop_scope="module")

Code = grpc.StatusCode
# What each RPC may answer besides OK (docs/reliability.md). RESOURCE_EXHAUSTED only for a
# request over max_message_bytes (the transport refuses it; checked in call()).
COMMON = {Code.INVALID_ARGUMENT}
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
ALLOWED: dict[str, set[Code]] = {
    "Score": COMMON,
    "ScoreBatch": COMMON,
    "GetAccount": COMMON | {Code.NOT_FOUND},
    "GetCluster": COMMON | {Code.NOT_FOUND},
    "ListClusters": COMMON,
    "ExplainAccount": COMMON | {Code.NOT_FOUND},
    "SubmitLabel": COMMON | {Code.NOT_FOUND},
    "GetModelInfo": COMMON,
    "ReloadModel": COMMON | {Code.FAILED_PRECONDITION},
    "Check": COMMON,
    "ShouldRateLimit": COMMON,
}


def unary_methods() -> list[MethodDescriptor]:
    services = (
        pb.DESCRIPTOR.services_by_name["RiskService"],
        external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"],
        rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"],
    )
    return [
        m for s in services for m in s.methods if not m.client_streaming and not m.server_streaming
    ]


METHODS = unary_methods()
KNOWN: list[str] = ["fuzz-known-0"]  # ids the server knows: filled by the fixture
SEEN: Counter[tuple[str, str]] = Counter()  # (method, status) answered, printed at the end


# --- field values ---------------------------------------------------------------------------

_odd_strings = st.sampled_from(
    [
        "",
        " ",
        "1.2.3.4",
        "::1",
        "::ffff:198.51.100.7",
        "999.1.1.1",
        "1.2.3.4/24",
        "fe80::1%eth0",
        "\x00",
        "a\nb",
        "\u202e\u200b",
        "💥" * 70,
        "x" * 257,
        "ACTION_BLOCK",
        "m:-1",
        ":",
        "9" * 30,
        "m-0:99999999999999999999",
        "/etc/passwd",
        "%s%n",
        "'; DROP TABLE events;--",
    ]
)
strings = st.one_of(
    st.text(max_size=24),
    _odd_strings,
    st.integers(0, 10**6).map(lambda i: KNOWN[i % len(KNOWN)]),
    st.binary(min_size=1, max_size=24),  # mostly invalid UTF-8
    st.integers(300, 200_000).map(lambda n: "y" * n),  # huge
)
_edges = [0, 1, -1, 2**31 - 1, -(2**31), 2**32 - 1, 2**63 - 1, -(2**63), 2**64 - 1]
SCALARS = {
    F.TYPE_INT32: st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from(_edges)),
    F.TYPE_INT64: st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from(_edges)),
    F.TYPE_UINT32: st.one_of(st.integers(0, 2**32 - 1), st.sampled_from(_edges)),
    F.TYPE_UINT64: st.one_of(st.integers(0, 2**64 - 1), st.sampled_from(_edges)),
    F.TYPE_FIXED64: st.integers(0, 2**64 - 1),
    F.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    F.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    F.TYPE_FLOAT: st.floats(width=32, allow_nan=True, allow_infinity=True),
    F.TYPE_BOOL: st.integers(0, 3),
    F.TYPE_ENUM: st.one_of(st.integers(-3, 40), st.sampled_from(_edges)),
    F.TYPE_STRING: strings,
    F.TYPE_BYTES: st.binary(max_size=64),
}
MAX_DEPTH = 4


@st.composite
def message(draw, descriptor: Descriptor, depth: int = 0, sane: bool = False) -> list:
    """A message's fields; ``sane``: only values the service accepts, nothing enormous."""
    fields: list = []
    if depth > MAX_DEPTH:
        return fields
    for field in descriptor.fields:
        if not draw(st.booleans()) and not (sane and field.name in ("account_id", "client_ip")):
            continue
        if not field.is_repeated:
            fields.append((field, draw(value(field, depth, sane))))
            continue
        many = not sane and draw(st.integers(0, 12)) == 0  # an enormous map or list
        if many:
            # One drawn value repeated (maps get distinct keys): big, but cheap to draw.
            n = draw(st.integers(17, 1200 if field.message_type is None else 60))
            one = draw(value(field, depth, sane))
            n = min(n, 2_000_000 // len(encode([(field, one)])))  # stay well under 4 MB
            if _is_map(field):
                key_field = field.message_type.fields_by_name["key"]
                one = [(f, v) for f, v in one if f is not key_field]
                items = [[(key_field, f"k{i}"), *one] for i in range(n)]
            else:
                items = [one] * n
        else:
            items = draw(st.lists(value(field, depth, sane), max_size=3))
        fields.extend((field, item) for item in items)
    if sane:
        return fields
    if draw(st.integers(0, 9)) == 0:  # a field number the schema does not have
        fields.append((draw(st.integers(100, 2**29 - 1)), draw(st.integers(0, 2**64 - 1))))
    if draw(st.integers(0, 9)) == 0:
        fields = draw(st.permutations(fields))
    return fields


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


_plain = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=20
)
_known = st.integers(0, 10**6).map(lambda i: KNOWN[i % len(KNOWN)])
_now = int(time.time())


def valid(field: FieldDescriptor) -> st.SearchStrategy:
    """Values the service accepts for this field, so requests also get past validation."""
    if field.type == F.TYPE_STRING:
        if "ip" in field.name.split("_") or field.name in ("forwarded_for", "address"):
            return st.ip_addresses().map(str)
        if field.name.endswith("_id") or field.name in ("page_token", "key", "value"):
            return st.one_of(_known, _plain)
        return _plain
    if field.type == F.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    if field.message_type is not None and field.message_type.full_name in (
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
    ):
        d = field.message_type
        return st.builds(
            lambda t, n: [(d.fields_by_name["seconds"], t), (d.fields_by_name["nanos"], n)],
            st.integers(_now - 86400, _now + 60),
            st.integers(0, 10**9 - 1),
        )
    return SCALARS.get(field.type, st.nothing())


def value(field: FieldDescriptor, depth: int, sane: bool = False) -> st.SearchStrategy:
    if field.type == F.TYPE_MESSAGE:
        if field.message_type.full_name.startswith("google.protobuf."):
            return (
                valid(field)
                if sane
                else st.one_of(valid(field), message(field.message_type, depth + 1))
            )
        return message(field.message_type, depth + 1, sane)
    if sane:
        return valid(field)
    return st.one_of(valid(field), valid(field), SCALARS[field.type])  # 2:1 valid:garbage


@st.composite
def wire_request(draw, descriptor: Descriptor) -> bytes:
    if draw(st.integers(0, 2)) == 0:  # a third: requests that should be answered OK
        return encode(draw(message(descriptor, sane=True)))
    data = encode(draw(message(descriptor)))
    damage = draw(st.integers(0, 7))
    if data and damage == 0:  # cut short
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif data and damage == 1:  # one byte flipped
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    elif damage == 2:  # trailing junk
        data += draw(st.binary(min_size=1, max_size=16))
    return data


# --- the server -----------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fuzz_target(tmp_path_factory, make_settings):
    """One in-process server for the module, with a fitted cluster model so the cluster RPCs
    reach their found-it paths; KNOWN gets its account and cluster ids."""
    data = tmp_path_factory.mktemp("fuzz")
    app = App(
        make_settings(
            data,
            cluster_min_cluster_size=5,
            cluster_min_samples=2,
            cluster_assign_interval_s=3600,
            cluster_refit_interval_s=3600,
            cluster_refit_min_gap_s=0,
            cluster_refit_pending=1,
            max_batch_size=100,
        )
    )
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    score = channel.unary_unary(
        "/ringfence.v1.RiskService/ScoreBatch",
        request_serializer=pb.ScoreBatchRequest.SerializeToString,
        response_deserializer=pb.ScoreBatchResponse.FromString,
    )
    accounts = [f"fuzz-known-{i}" for i in range(40)]
    await score(
        pb.ScoreBatchRequest(
            requests=[
                pb.ScoreRequest(
                    account_id=a,
                    client_ip=f"198.51.100.{i % 5}",
                    fingerprint=pb.DeviceFingerprint(device_id=f"dev-{i % 4}"),
                )
                for i, a in enumerate(accounts)
            ]
        ),
        timeout=30,
    )
    # Fit in this thread (the replay driver): no worker process to start for 40 accounts.
    app.clusters.run_due(app.clock.now(), app.store.active_accounts, app.store.account_profile)
    model = app.clusters.model
    KNOWN.extend([*accounts, *model.clusters, model.version, f"{model.version}:1"])
    try:
        yield channel
    finally:
        await channel.close()
        await app.stop(0)


async def call(channel: grpc.aio.Channel, method: MethodDescriptor, data: bytes) -> Code:
    service = method.containing_service.full_name
    rpc = channel.unary_unary(f"/{service}/{method.name}")  # bytes in, bytes out
    try:
        reply = await rpc(data, timeout=30)
    except grpc.aio.AioRpcError as err:
        oversize = err.code() is Code.RESOURCE_EXHAUSTED and len(data) > MAX_MESSAGE_BYTES
        assert oversize or err.code() in ALLOWED[method.name], (
            method.name,
            err.code(),
            err.details()[:300],
        )
        SEEN[method.name, err.code().name] += 1
        return err.code()
    response = method.output_type._concrete_class.FromString(reply)
    check_response(method.name, response)
    SEEN[method.name, "OK"] += 1
    return Code.OK


def check_response(name: str, response) -> None:
    if name == "Score":
        assert 0.0 <= response.risk_score <= 1.0
    elif name == "ScoreBatch":
        for result in response.results:
            if result.HasField("error"):
                assert result.error.code not in (2, 13), result.error  # UNKNOWN, INTERNAL
            else:
                assert 0.0 <= result.response.risk_score <= 1.0
    elif name in ("GetCluster", "ListClusters"):
        clusters = [response.cluster] if name == "GetCluster" else response.clusters
        assert all(math.isfinite(c.risk) for c in clusters)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
async def test_generated_messages_get_ok_or_a_documented_status(fuzz_target, method, data):
    await call(fuzz_target, method, data.draw(wire_request(method.input_type)))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
async def test_random_bytes_get_ok_or_a_documented_status(fuzz_target, method):
    rng = random.Random(method.name)  # the same bytes every run
    for _ in range(15):
        await call(fuzz_target, method, rng.randbytes(rng.choice((1, 7, 64, 1500))))


STREAM = pb.DESCRIPTOR.services_by_name["RiskService"].methods_by_name["StreamDecisions"]


async def open_stream(channel: grpc.aio.Channel, data: bytes) -> Code:
    """StreamDecisions with hostile bytes: the first message (SNAPSHOT_END or a snapshot entry)
    parses as a DecisionEvent, or the stream ends with INVALID_ARGUMENT; then we hang up."""
    rpc = channel.unary_stream("/ringfence.v1.RiskService/StreamDecisions")  # bytes in and out
    call = rpc(data, timeout=30)
    try:
        first = await asyncio.wait_for(call.read(), timeout=10)
    except grpc.aio.AioRpcError as err:
        oversize = err.code() is Code.RESOURCE_EXHAUSTED and len(data) > MAX_MESSAGE_BYTES
        assert oversize or err.code() is Code.INVALID_ARGUMENT, (
            err.code(),
            err.details()[:300],
        )
        SEEN["StreamDecisions", err.code().name] += 1
        return err.code()
    finally:
        call.cancel()
    assert first is not grpc.aio.EOF, "the stream ended without a first event"
    event = pb.DecisionEvent.FromString(first)
    assert event.kind != pb.DecisionEvent.KIND_UNSPECIFIED, event
    SEEN["StreamDecisions", "OK"] += 1
    return Code.OK


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_stream_decisions_generated_requests(fuzz_target, data):
    await open_stream(fuzz_target, data.draw(wire_request(STREAM.input_type)))


async def test_stream_decisions_random_bytes(fuzz_target):
    rng = random.Random("StreamDecisions")
    codes = Counter()
    for _ in range(15):
        codes[await open_stream(fuzz_target, rng.randbytes(rng.choice((1, 7, 64, 1500))))] += 1
    assert sum(codes.values()) == 15


async def test_the_server_is_still_serving(fuzz_target):
    health = health_pb2_grpc.HealthStub(fuzz_target)
    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    print("\n".join(f"{m} {code}: {n}" for (m, code), n in sorted(SEEN.items())))
