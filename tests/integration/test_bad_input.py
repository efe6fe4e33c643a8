"""Every invalid input gets INVALID_ARGUMENT naming the field, never a crash or INTERNAL."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfence.v1 import risk_pb2 as pb


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None, "INVALID_ARGUMENT must carry google.rpc.Status details"
    out = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        out.update({v.field: v.description for v in bad.field_violations})
    return out


async def expect_invalid(stub, req: pb.ScoreRequest) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Score(req, timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    return violations(err.value)


@pytest.mark.parametrize(("req", "field"), [
    (pb.ScoreRequest(account_id="a", client_ip="1.2.3.999"), "client_ip"),
    (pb.ScoreRequest(account_id="", client_ip="1.2.3.4"), "account_id"),
    (pb.ScoreRequest(account_id="a", client_ip="1.2.3.4",
                     fingerprint=pb.DeviceFingerprint(user_agent="u" * 2000)),
     "fingerprint.user_agent"),
    (pb.ScoreRequest(account_id="a", client_ip="1.2.3.4", fingerprint=pb.DeviceFingerprint(
        attributes={str(i): "v" for i in range(33)})), "fingerprint.attributes"),
    (pb.ScoreRequest(account_id="a", client_ip="1.2.3.4",
                     forwarded_for=["1.1.1.1"] * 17), "forwarded_for"),
    (pb.ScoreRequest(account_id="a", client_ip="1.2.3.4",
                     context=pb.RequestContext(task_category=42)), "context.task_category"),
])
async def test_invalid_fields_are_named(stub, req, field):
    assert field in await expect_invalid(stub, req)


async def test_timestamps_far_in_the_future_are_rejected(stub):
    req = pb.ScoreRequest(account_id="a", client_ip="1.2.3.4")
    req.context.event_time.GetCurrentTime()
    req.context.event_time.seconds += 86400 * 365 * 100
    found = await expect_invalid(stub, req)
    assert "in the future" in found["context.event_time"]


async def test_non_utf8_bytes_on_the_wire_name_the_field(target):
    good = pb.ScoreRequest(account_id="a", client_ip="1.2.3.4",
                           fingerprint=pb.DeviceFingerprint(user_agent="MARK"))
    raw = good.SerializeToString().replace(b"MARK", b"\xff\xfe\xfd\xfc")
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary("/ringfence.v1.RiskService/Score")  # bytes in, bytes out
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(raw, timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "fingerprint.user_agent" in violations(err.value)


async def test_random_bytes_are_invalid_argument_not_internal(target):
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary("/ringfence.v1.RiskService/Score")
        for payload in (b"\xff" * 10, b"\x0a\xff\xff\xff\xff\x0f", bytes(range(256))):
            try:
                await call(payload, timeout=5)
            except grpc.aio.AioRpcError as err:
                assert err.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_oversize_message_is_refused_by_the_transport(start_app, tmp_path):
    app = await start_app(data_dir=tmp_path / "small", max_message_bytes=4096)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        from ringfence.v1 import risk_pb2_grpc
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        req = pb.ScoreRequest(account_id="a", client_ip="1.2.3.4",
                              fingerprint=pb.DeviceFingerprint(ja3="x" * 10_000))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Score(req, timeout=5)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_batch_too_large_names_requests(start_app, tmp_path):
    app = await start_app(data_dir=tmp_path / "b", max_batch_size=3)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        from ringfence.v1 import risk_pb2_grpc
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        item = pb.ScoreRequest(account_id="a", client_ip="1.2.3.4")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ScoreBatch(pb.ScoreBatchRequest(requests=[item] * 4), timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "requests" in violations(err.value)


_text = st.text(max_size=300)
_ips = st.one_of(st.ip_addresses().map(str), st.text(max_size=45))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(account=_text, ip=_ips, ua=st.text(max_size=1100), ja4=_text,
       headers=st.lists(st.text(max_size=140), max_size=70),
       attrs=st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=35),
       fwd=st.lists(_ips, max_size=18), seconds=st.integers(-2**40, 2**40),
       task=st.integers(0, 10), tokens=st.integers(0, 2**32 - 1))
async def test_random_requests_get_ok_or_invalid_argument(stub, account, ip, ua, ja4, headers,
                                                          attrs, fwd, seconds, task, tokens):
    req = pb.ScoreRequest(account_id=account, client_ip=ip, forwarded_for=fwd,
                          fingerprint=pb.DeviceFingerprint(user_agent=ua, ja4=ja4,
                                                           header_names=headers,
                                                           attributes=attrs),
                          context=pb.RequestContext(task_category=task, input_tokens=tokens))
    req.context.event_time.seconds = seconds
    try:
        response = await stub.Score(req, timeout=5)
    except grpc.aio.AioRpcError as err:
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert violations(err)
    else:
        assert 0.0 <= response.risk_score <= 1.0
