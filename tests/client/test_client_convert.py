"""Client dataclasses ⇄ protobuf: round trips (property tests) and the edge cases of the wire."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringfence.client import (
    AccountInfo,
    AccountProfile,
    Action,
    ClusterInfo,
    Decision,
    FieldViolation,
    Fingerprint,
    ItemError,
    Limit,
    LimitScope,
    LimitUnit,
    Reason,
    RequestContext,
    ScoreRequest,
    TaskCategory,
    TaskCount,
    WindowCounts,
    _convert,
    _rpc,
)
from ringfence.v1 import risk_pb2

UINT32 = st.integers(0, 2**32 - 1)
UINT64 = st.integers(0, 2**64 - 1)
# Protobuf strings are UTF-8: lone surrogates cannot be encoded.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
FLOATS = st.floats(allow_nan=False)
# Microsecond precision, like datetime; any timezone (equality compares instants).
TIMES = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))]),
)
DURATIONS = st.timedeltas(min_value=timedelta(days=-3650), max_value=timedelta(days=3650))


def small_tuples(elements: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(elements, max_size=4).map(tuple)


fingerprints = st.builds(
    Fingerprint,
    ja4=TEXT,
    ja3=TEXT,
    user_agent=TEXT,
    header_names=small_tuples(TEXT),
    sdk_name=TEXT,
    sdk_version=TEXT,
    device_id=TEXT,
    accept_language=TEXT,
    extra_fingerprints=st.dictionaries(TEXT, TEXT, max_size=3),
    attributes=st.dictionaries(TEXT, TEXT, max_size=3),
)
contexts = st.builds(
    RequestContext,
    event_time=st.none() | TIMES,
    endpoint=TEXT,
    model=TEXT,
    task_category=st.sampled_from(TaskCategory),
    input_tokens=UINT32,
    output_tokens=UINT32,
    content_signature=st.none() | UINT64,
)
score_requests = st.builds(
    ScoreRequest,
    account_id=TEXT,
    client_ip=TEXT,
    api_key_id=TEXT,
    org_id=TEXT,
    forwarded_for=small_tuples(TEXT),
    fingerprint=fingerprints,
    context=contexts,
    account_created_at=st.none() | TIMES,
)
decisions = st.builds(
    Decision,
    risk_score=FLOATS,
    action=st.sampled_from(Action),
    policy_action=st.sampled_from(Action),
    shadow=st.booleans(),
    route_to_fallback=st.booleans(),
    limit_key=TEXT,
    limit_scope=st.sampled_from(LimitScope),
    suggested_limit=st.builds(Limit, requests_per_unit=UINT32, unit=st.sampled_from(LimitUnit)),
    decision_ttl=DURATIONS,
    reasons=small_tuples(st.builds(Reason, code=TEXT, weight=FLOATS, message=TEXT)),
    # An empty cluster id means "no cluster" on the wire, so a present one is never empty.
    cluster=st.none() | st.builds(ClusterInfo, cluster_id=TEXT.filter(bool), size=UINT32),
    model_version=TEXT,
    policy_version=TEXT,
    degraded=st.booleans(),
    decided_at=st.none() | TIMES,
)
item_errors = st.builds(
    ItemError,
    code=st.sampled_from(grpc.StatusCode),
    message=TEXT,
    field_violations=small_tuples(st.builds(FieldViolation, field=TEXT, description=TEXT)),
)
profiles = st.builds(
    AccountProfile,
    account_id=TEXT,
    first_seen=st.none() | TIMES,
    last_seen=st.none() | TIMES,
    total_requests=UINT64,
    requests=st.builds(WindowCounts, last_5m=UINT64, last_1h=UINT64, last_24h=UINT64),
    distinct_ips=UINT32,
    distinct_prefixes=UINT32,
    distinct_asns=UINT32,
    distinct_countries=UINT32,
    distinct_devices=UINT32,
    task_mix=small_tuples(
        st.builds(TaskCount, task_category=st.sampled_from(TaskCategory), requests=UINT64)
    ),
    input_tokens=UINT64,
    output_tokens=UINT64,
    anonymized_share=FLOATS,
)


def wire(message: risk_pb2.ScoreResponse) -> risk_pb2.ScoreResponse:
    """Through bytes, as over a channel: catches what only survives in memory."""
    return type(message).FromString(message.SerializeToString())


@given(decisions)
def test_decision_round_trips(decision: Decision) -> None:
    assert _convert.decision_from_proto(wire(_convert.decision_to_proto(decision))) == decision


@given(score_requests)
def test_score_request_round_trips(request: ScoreRequest) -> None:
    message = wire(_convert.score_request_to_proto(request))
    assert _convert.score_request_from_proto(message) == request


@given(st.lists(decisions | item_errors, max_size=4))
def test_batch_results_round_trip(results: list[Decision | ItemError]) -> None:
    message = wire(_convert.batch_response_to_proto(results))
    assert _convert.batch_response_from_proto(message) == results


@given(profiles, st.none() | decisions)
def test_account_info_round_trips(profile: AccountProfile, last: Decision | None) -> None:
    info = AccountInfo(profile=profile, last_decision=last)
    assert _convert.account_info_from_proto(wire(_convert.account_info_to_proto(info))) == info


def test_fail_open_is_never_sent() -> None:
    decision = Decision(limit_key="account:a", fail_open=True)
    assert _convert.decision_from_proto(_convert.decision_to_proto(decision)).fail_open is False


def test_unknown_enum_values_from_a_newer_server_read_as_unspecified() -> None:
    message = risk_pb2.ScoreResponse(action=99, limit_scope=42)  # type: ignore[arg-type]
    message.suggested_limit.unit = 17  # type: ignore[assignment]
    decision = _convert.decision_from_proto(wire(message))
    assert decision.action is Action.UNSPECIFIED
    assert decision.limit_scope is LimitScope.UNSPECIFIED
    assert decision.suggested_limit.unit is LimitUnit.UNSPECIFIED


def test_an_empty_cluster_message_means_no_cluster() -> None:
    message = risk_pb2.ScoreResponse()
    message.cluster.SetInParent()
    assert _convert.decision_from_proto(message).cluster is None


def test_unset_times_stay_unset() -> None:
    request = _convert.score_request_from_proto(risk_pb2.ScoreRequest(account_id="a"))
    assert request.account_created_at is None
    assert request.context.event_time is None
    assert request.context.content_signature is None


def test_item_error_codes_map_to_grpc_status_codes() -> None:
    error = _convert.item_error_from_proto(risk_pb2.ItemError(code=3, message="m"))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert _convert.item_error_from_proto(risk_pb2.ItemError(code=999)).code is (
        grpc.StatusCode.UNKNOWN
    )


def test_value_types_copy_and_freeze_containers() -> None:
    headers = ["a", "b"]
    attributes = {"k": "v"}
    fingerprint = Fingerprint(header_names=headers, attributes=attributes)  # type: ignore[arg-type]
    headers.append("c")
    attributes["k"] = "changed"
    assert fingerprint.header_names == ("a", "b")
    assert fingerprint.attributes == {"k": "v"}


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (
            lambda: ScoreRequest("a", "1.2.3.4", account_created_at=datetime(2024, 1, 1)),
            "account_created_at",
        ),
        (lambda: RequestContext(event_time=datetime(2024, 1, 1)), "event_time"),
        (lambda: RequestContext(input_tokens=-1), "input_tokens"),
        (lambda: RequestContext(output_tokens=2**32), "output_tokens"),
        (lambda: RequestContext(content_signature=2**64), "content_signature"),
        (lambda: Decision(decided_at=datetime(2024, 1, 1)), "decided_at"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(build: Callable[[], object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("account_id: is required", (FieldViolation("account_id", "is required"),)),
        (
            "requests[3].fingerprint.user_agent: too long; client_ip: must be an IP address",
            (
                FieldViolation("requests[3].fingerprint.user_agent", "too long"),
                FieldViolation("client_ip", "must be an IP address"),
            ),
        ),
        ("something went wrong", ()),
        ("bad request: see docs", ()),
        ("", ()),
    ],
)
def test_violations_parse_from_the_service_message_format(
    message: str, expected: tuple[FieldViolation, ...]
) -> None:
    assert _rpc.parse_violation_message(message) == expected
