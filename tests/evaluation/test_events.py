"""The event format: the fast parser agrees with protobuf's, and every bad line is named."""

import gzip
import json

import pytest
from google.protobuf import json_format

from ringfence.service.evaluation.events import (
    EventFormatError,
    open_text,
    parse_event,
    read_events,
    to_request,
)
from ringfence.v1 import risk_pb2 as pb

FULL = {
    "accountId": "acct_1", "apiKeyId": "key_1", "orgId": "org_1", "clientIp": "10.0.0.1",
    "forwardedFor": ["172.16.0.9"],
    "fingerprint": {"ja4": "t13d1516h2_8daaf6152771_02713d6af862", "ja3": "abc",
                    "userAgent": "UA", "headerNames": ["user-agent", "accept"],
                    "sdkName": "openai-python", "sdkVersion": "1.40.0", "deviceId": "dev_1",
                    "acceptLanguage": "en-US", "extraFingerprints": {"ja4h": "x"},
                    "attributes": {"tier": "free"}},
    "context": {"eventTime": "2026-04-22T01:02:03.123456789Z", "endpoint": "/v1/chat",
                "model": "m", "taskCategory": "TASK_CATEGORY_CODE", "inputTokens": 4294967295,
                "outputTokens": 7, "contentSignature": "18446744073709551615"},
    "accountCreatedAt": "2025-01-01T00:00:00Z",
}


@pytest.mark.parametrize("variant", [
    FULL,
    {**FULL, "context": {**FULL["context"], "eventTime": "2026-04-22T03:02:03+02:00"}},
    {**FULL, "context": {**FULL["context"], "taskCategory": 2}},  # enum by number
    {**FULL, "context": {**FULL["context"], "contentSignature": 12345}},  # int, not string
    {**FULL, "context": {**FULL["context"], "contentSignature": "0"}},
    {"account_id": "acct_1", "client_ip": "10.0.0.1",  # proto field names
     "context": {"event_time": "2026-04-22T00:00:00Z"}},
    {"accountId": "a", "clientIp": "10.0.0.1", "context": {"eventTime": "2026-04-22T00:00:00Z"},
     "fingerprint": {}},
])
def test_fast_parser_agrees_with_protobuf(variant):
    expected = json_format.ParseDict(json.loads(json.dumps(variant)), pb.ScoreRequest())
    assert to_request(json.loads(json.dumps(variant))) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", r"x:7: not valid JSON \(Expecting property name"),
    ("[1, 2]", "x:7: not a JSON object"),
    (json.dumps({**FULL, "label": "evil"}), "x:7: label must be one of"),
    (json.dumps({**FULL, "campaign": 3}), "x:7: campaign must be a string"),
    (json.dumps({**FULL, "colour": "red"}),
     'x:7: not a ScoreRequest: .*has no field named "colour"'),
    (json.dumps({**FULL, "context": {**FULL["context"], "taskCategory": "NOPE"}}),
     "x:7: not a ScoreRequest: .*NOPE"),
    (json.dumps({**FULL, "context": {**FULL["context"], "eventTime": "2026-02-30T00:00:00Z"}}),
     "x:7: not a ScoreRequest"),
    (json.dumps({**FULL, "context": {**FULL["context"], "inputTokens": -1}}),
     "x:7: not a ScoreRequest"),
    (json.dumps({**FULL, "context": {"endpoint": "/v1/chat"}}),
     "x:7: context.eventTime is required for replay"),
])
def test_bad_lines_name_the_line_and_the_problem(text, message):
    with pytest.raises(EventFormatError, match=message):
        parse_event(text, 7, "x")


def test_truth_fields_are_kept_and_the_time_is_read():
    event = parse_event(json.dumps({**FULL, "label": "attack", "campaign": "c", "group": "g",
                                    "segment": "s"}), 1)
    assert (event.label, event.campaign, event.group, event.segment) == ("attack", "c", "g", "s")
    assert event.event_time == pytest.approx(1776819723.123456789)
    unlabelled = parse_event(json.dumps(FULL), 1)
    assert unlabelled.label == ""


def test_read_events_streams_plain_and_gzip_and_rejects_empty(tmp_path):
    lines = [json.dumps(FULL), "", json.dumps({**FULL, "accountId": "acct_2"})]
    (tmp_path / "e.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "e.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    for name in ("e.jsonl", "e.jsonl.gz"):
        events = list(read_events(tmp_path / name))
        assert [e.request.account_id for e in events] == ["acct_1", "acct_2"]
        assert [e.line for e in events] == [1, 3]
    (tmp_path / "empty.jsonl").write_text("\n \n")
    with pytest.raises(EventFormatError, match="no events in the input"):
        list(read_events(tmp_path / "empty.jsonl"))


def test_open_text_round_trips_gzip(tmp_path):
    with open_text(tmp_path / "x.gz", "w") as f:
        f.write("héllo\n")
    with open_text(tmp_path / "x.gz", "r") as f:
        assert f.read() == "héllo\n"
