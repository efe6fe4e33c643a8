import ipaddress

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from ringfence.service.api.convert import Limits, to_observation
from ringfence.service.api.wire import find_bad_field
from ringfence.service.core.errors import InvalidInput
from ringfence.service.core.model import TaskCategory
from ringfence.v1 import risk_pb2 as pb

NOW = 1_790_000_000.0
LIMITS = Limits()


def _fields(req: pb.ScoreRequest) -> set[str]:
    with pytest.raises(InvalidInput) as err:
        to_observation(req, now=NOW, limits=LIMITS)
    return {v.field for v in err.value.violations}


def _ts(t: float) -> Timestamp:
    ts = Timestamp()
    ts.seconds = int(t)
    return ts


def test_a_full_request_converts():
    req = pb.ScoreRequest(
        account_id="acct-1", api_key_id="k", org_id="o", client_ip="::ffff:198.51.100.7",
        forwarded_for=["10.0.0.1", "2001:db8::1"],
        fingerprint=pb.DeviceFingerprint(ja4="t13d", user_agent="curl/8", header_names=["a"],
                                         attributes={"k": "v"}),
        context=pb.RequestContext(event_time=_ts(NOW - 5), task_category=2, input_tokens=7,
                                  content_signature=2**64 - 1),
        account_created_at=_ts(NOW - 86400))
    obs = to_observation(req, now=NOW, limits=LIMITS)
    assert obs.client_ip == ipaddress.ip_address("198.51.100.7")  # v4-mapped → v4
    assert obs.context.event_time == NOW - 5
    assert obs.context.task is TaskCategory.CODE
    assert obs.context.content_signature == 2**64 - 1
    assert obs.account_created_at == NOW - 86400
    assert obs.fingerprint.attributes == {"k": "v"}


def test_missing_event_time_means_now_and_signature_is_optional():
    obs = to_observation(pb.ScoreRequest(account_id="a", client_ip="1.2.3.4"), now=NOW,
                         limits=LIMITS)
    assert obs.context.event_time == NOW
    assert obs.context.content_signature is None


def test_every_bad_field_is_named_at_once():
    req = pb.ScoreRequest(
        account_id=" ", client_ip="300.1.2.3", forwarded_for=["nope"],
        fingerprint=pb.DeviceFingerprint(user_agent="x" * 5000, header_names=["ok", ""],
                                         attributes={f"k{i}": "v" for i in range(40)},
                                         device_id="a\x00b"),
        context=pb.RequestContext(event_time=_ts(NOW + 3600), task_category=99))
    assert _fields(req) == {
        "account_id", "client_ip", "forwarded_for[0]", "fingerprint.user_agent",
        "fingerprint.header_names[1]", "fingerprint.attributes", "fingerprint.device_id",
        "context.event_time", "context.task_category"}


def test_time_bounds():
    old = pb.ScoreRequest(account_id="a", client_ip="1.2.3.4",
                          context=pb.RequestContext(event_time=_ts(NOW - 30 * 86400)))
    assert _fields(old) == {"context.event_time"}
    created_future = pb.ScoreRequest(account_id="a", client_ip="1.2.3.4",
                                     account_created_at=_ts(NOW + 86400))
    assert _fields(created_future) == {"account_created_at"}
    absurd = pb.ScoreRequest(account_id="a", client_ip="1.2.3.4")
    absurd.context.event_time.seconds = 2**62
    assert _fields(absurd) == {"context.event_time"}


def test_required_fields():
    assert _fields(pb.ScoreRequest()) == {"account_id", "client_ip"}


@given(account=st.text(max_size=300), ip=st.text(max_size=80), ua=st.text(max_size=1100),
       headers=st.lists(st.text(max_size=130), max_size=70),
       attrs=st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=40),
       seconds=st.integers(-2**40, 2**40), task=st.integers(0, 2**31 - 1))
def test_any_input_converts_or_raises_invalid_input(account, ip, ua, headers, attrs, seconds,
                                                    task):
    req = pb.ScoreRequest(account_id=account, client_ip=ip,
                          fingerprint=pb.DeviceFingerprint(user_agent=ua, header_names=headers,
                                                           attributes=attrs),
                          context=pb.RequestContext(task_category=task))
    req.context.event_time.seconds = seconds
    try:
        to_observation(req, now=NOW, limits=LIMITS)
    except InvalidInput as exc:
        assert exc.violations
        assert all(v.field and v.description for v in exc.violations)


def test_find_bad_field_names_the_invalid_utf8_string():
    ok = pb.ScoreBatchRequest(requests=[
        pb.ScoreRequest(account_id="a"),
        pb.ScoreRequest(account_id="b", fingerprint=pb.DeviceFingerprint(
            user_agent="UUUU", header_names=["h", "HHHH"], attributes={"KKKK": "v"}))])
    data = ok.SerializeToString()
    assert find_bad_field(pb.ScoreBatchRequest.DESCRIPTOR, data) is None
    cases = {b"UUUU": "requests[1].fingerprint.user_agent",
             b"HHHH": "requests[1].fingerprint.header_names[1]",
             b"KKKK": "requests[1].fingerprint.attributes{}.key"}
    for marker, path in cases.items():
        bad = data.replace(marker, b"\xff\xfe\xfd\xfc")
        assert find_bad_field(pb.ScoreBatchRequest.DESCRIPTOR, bad) == path
    assert find_bad_field(pb.ScoreBatchRequest.DESCRIPTOR, data[:-2]) == "requests"
