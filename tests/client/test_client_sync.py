"""The sync Client against a FakeRiskServer over real loopback gRPC."""

import random
import time
from collections.abc import Callable

import grpc
import pytest

from ringfence.client import (
    DEFAULT_TIMEOUT,
    FAIL_OPEN_REASON,
    AccountInfo,
    AccountProfile,
    Action,
    Client,
    Decision,
    FieldViolation,
    InvalidRequestError,
    ItemError,
    LimitScope,
    NotFoundError,
    OnUnavailable,
    RingfenceRpcError,
    ScoreRequest,
    ServiceUnavailableError,
    WindowCounts,
    _rpc,
)
from ringfence.client.testing import FakeRiskServer

# Generous for calls that must succeed, so a loaded CI machine cannot turn them into
# fail-opens; the deadline tests set their own short timeouts.
SAFE_TIMEOUT = 2.0

MakeRequest = Callable[..., ScoreRequest]


def assert_fail_open(decision: Decision, account_id: str) -> None:
    assert decision.fail_open is True
    assert decision.action is Action.ALLOW
    assert decision.policy_action is Action.ALLOW
    assert decision.limit_key == f"account:{account_id}"
    assert decision.limit_scope is LimitScope.ACCOUNT
    assert [reason.code for reason in decision.reasons] == [FAIL_OPEN_REASON]
    assert decision.decided_at is not None


def test_score_round_trips_a_decision_and_the_request(
    fake: FakeRiskServer, make_request: MakeRequest, blocking_decision: Decision
) -> None:
    fake.set_decision("mallory", blocking_decision)
    request = make_request("mallory")
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        decision = client.score(request)

    assert decision == blocking_decision
    assert decision.fail_open is False
    assert fake.requests == [request]


def test_unscripted_account_is_allowed_under_its_own_limit_key(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        decision = client.score(make_request("bob"))

    assert decision.action is Action.ALLOW
    assert decision.risk_score == 0.0
    assert decision.limit_key == "account:bob"
    assert decision.limit_scope is LimitScope.ACCOUNT
    assert decision.fail_open is False


def test_fails_open_when_the_server_is_gone(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        client.score(make_request())  # connected once, so the outage is a real disconnect
        fake.stop()
        started = time.monotonic()
        decision = client.score(make_request("carol"))
        elapsed = time.monotonic() - started

    assert_fail_open(decision, "carol")
    # A refused connection is UNAVAILABLE at once: no need to wait out the deadline.
    assert elapsed < SAFE_TIMEOUT / 2


def test_fails_open_when_unavailable_outlasts_the_attempts(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.fail_next(2)
    with Client(fake.target, timeout=SAFE_TIMEOUT, max_attempts=2) as client:
        decision = client.score(make_request("dave"))
        after = client.score(make_request("dave"))

    assert_fail_open(decision, "dave")
    assert len(fake.requests) == 3
    assert after.fail_open is False


def test_one_unavailable_is_retried_and_succeeds(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.fail_next(1)
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        decision = client.score(make_request())

    assert decision.fail_open is False
    assert decision.limit_key == "account:alice"
    assert len(fake.requests) == 2


def test_max_attempts_one_never_retries(fake: FakeRiskServer, make_request: MakeRequest) -> None:
    fake.fail_next(1)
    with Client(fake.target, timeout=SAFE_TIMEOUT, max_attempts=1) as client:
        decision = client.score(make_request())

    assert decision.fail_open is True
    assert len(fake.requests) == 1


def test_raise_policy_raises_service_unavailable(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.fail_next(2)
    with (
        Client(fake.target, timeout=SAFE_TIMEOUT, on_unavailable=OnUnavailable.RAISE) as client,
        pytest.raises(ServiceUnavailableError) as caught,
    ):
        client.score(make_request())

    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert isinstance(caught.value.__cause__, grpc.RpcError)
    assert len(fake.requests) == 2


def test_raise_policy_raises_when_the_server_is_gone(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.stop()
    with (
        Client(fake.target, timeout=SAFE_TIMEOUT, on_unavailable=OnUnavailable.RAISE) as client,
        pytest.raises(ServiceUnavailableError),
    ):
        client.score(make_request())


def test_invalid_argument_raises_with_violations_and_is_not_retried(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    violations = [
        FieldViolation("fingerprint.user_agent", "must be at most 1024 characters"),
        FieldViolation("forwarded_for", "must hold at most 16 addresses"),
    ]
    # The message is not in "field: description" form, so the violations can only have
    # come from the google.rpc.BadRequest trailer.
    fake.fail_next(1, grpc.StatusCode.INVALID_ARGUMENT, message="bad", field_violations=violations)
    with (
        Client(fake.target, timeout=SAFE_TIMEOUT, max_attempts=3) as client,
        pytest.raises(InvalidRequestError) as caught,
    ):
        client.score(make_request())

    assert caught.value.field_violations == tuple(violations)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert len(fake.requests) == 1


def test_invalid_argument_violations_come_from_the_message_without_google_rpc(
    fake: FakeRiskServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_rpc, "status_pb2", None)
    with (
        Client(fake.target, timeout=SAFE_TIMEOUT) as client,
        pytest.raises(InvalidRequestError) as caught,
    ):
        client.score(ScoreRequest(account_id="", client_ip="not-an-ip"))

    assert caught.value.field_violations == (
        FieldViolation("account_id", "is required"),
        FieldViolation("client_ip", "must be an IPv4 or IPv6 address"),
    )


def test_deadline_fails_open_quickly(fake: FakeRiskServer, make_request: MakeRequest) -> None:
    fake.delay(0.2)
    with Client(fake.target) as client:  # the default 50 ms budget
        started = time.monotonic()
        decision = client.score(make_request())
        elapsed = time.monotonic() - started

    assert_fail_open(decision, "alice")
    assert "DEADLINE_EXCEEDED" in decision.reasons[0].message
    assert elapsed < 0.2
    assert len(fake.requests) == 1  # a deadline is never retried: the budget is spent


def test_deadline_with_raise_policy_raises(fake: FakeRiskServer, make_request: MakeRequest) -> None:
    fake.delay(0.2)
    with (
        Client(fake.target, timeout=0.05, on_unavailable=OnUnavailable.RAISE) as client,
        pytest.raises(ServiceUnavailableError) as caught,
    ):
        client.score(make_request())

    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_per_call_timeout_overrides_the_default(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.delay(0.1)
    with Client(fake.target, timeout=0.01) as client:
        decision = client.score(make_request(), timeout=SAFE_TIMEOUT)

    assert decision.fail_open is False


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INTERNAL])
def test_other_statuses_raise_rpc_error_without_retry(
    fake: FakeRiskServer, make_request: MakeRequest, code: grpc.StatusCode
) -> None:
    fake.fail_next(1, code)
    with (
        Client(fake.target, timeout=SAFE_TIMEOUT, max_attempts=3) as client,
        pytest.raises(RingfenceRpcError) as caught,
    ):
        client.score(make_request())

    assert caught.value.code is code
    assert len(fake.requests) == 1


def test_score_batch_keeps_request_order_and_item_errors(
    fake: FakeRiskServer, make_request: MakeRequest, blocking_decision: Decision
) -> None:
    fake.set_decision("mallory", blocking_decision)
    requests = [make_request("alice"), make_request("x", client_ip="nope"), make_request("mallory")]
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        results = client.score_batch(requests)

    assert len(results) == 3
    assert isinstance(results[0], Decision)
    assert results[0].limit_key == "account:alice"
    assert results[1] == ItemError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "requests[1].client_ip: must be an IPv4 or IPv6 address",
        (FieldViolation("requests[1].client_ip", "must be an IPv4 or IPv6 address"),),
    )
    assert results[2] == blocking_decision
    assert fake.requests == requests


def test_score_batch_fails_open_once_per_request(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.stop()
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        results = client.score_batch([make_request("a"), make_request("b")])

    assert len(results) == 2
    for result, account_id in zip(results, ["a", "b"], strict=True):
        assert isinstance(result, Decision)
        assert_fail_open(result, account_id)


def test_score_batch_of_nothing_makes_no_call(fake: FakeRiskServer) -> None:
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        assert client.score_batch([]) == []
    assert fake.calls == []


def test_get_account_returns_the_profile_and_last_decision(
    fake: FakeRiskServer, blocking_decision: Decision
) -> None:
    info = AccountInfo(
        profile=AccountProfile(
            account_id="mallory", total_requests=42, requests=WindowCounts(1, 2, 3)
        ),
        last_decision=blocking_decision,
    )
    fake.set_account(info)
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        assert client.get_account("mallory") == info


def test_get_account_of_an_unknown_account_raises_not_found(fake: FakeRiskServer) -> None:
    with (
        Client(fake.target, timeout=SAFE_TIMEOUT) as client,
        pytest.raises(NotFoundError) as caught,
    ):
        client.get_account("nobody")

    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert "nobody" in caught.value.message


def test_get_account_never_fails_open(fake: FakeRiskServer) -> None:
    fake.stop()
    with (
        Client(fake.target, timeout=SAFE_TIMEOUT) as client,
        pytest.raises(ServiceUnavailableError),
    ):
        client.get_account("alice")


def test_from_channel_leaves_the_callers_channel_open(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    with grpc.insecure_channel(fake.target) as channel:
        with Client.from_channel(channel, timeout=SAFE_TIMEOUT) as client:
            client.score(make_request())
        # Still usable after the client closed.
        with Client.from_channel(channel, timeout=SAFE_TIMEOUT) as again:
            assert again.score(make_request()).fail_open is False


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout": 0}, {"timeout": -1.0}, {"max_attempts": 0}, {"on_unavailable": "allow"}],
)
def test_constructor_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Client("127.0.0.1:1", **kwargs)  # type: ignore[arg-type]


def test_per_call_timeout_must_be_positive(make_request: MakeRequest) -> None:
    with Client("127.0.0.1:1") as client, pytest.raises(ValueError, match="timeout"):
        client.score(make_request(), timeout=0)


def test_defaults() -> None:
    assert DEFAULT_TIMEOUT == 0.05
    options = dict(_rpc.channel_options([("grpc.keepalive_time_ms", 60_000), ("x", 1)]))
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 0
    assert options["x"] == 1
    assert dict(_rpc.DEFAULT_CHANNEL_OPTIONS)["grpc.keepalive_time_ms"] == 30_000


class TestRetryPause:
    rng = random.Random(7)

    def test_only_unavailable_is_retried(self) -> None:
        for code in grpc.StatusCode:
            pause = _rpc.retry_pause(code, 1, 3, remaining=1.0, rng=self.rng)
            assert (pause is not None) == (code is grpc.StatusCode.UNAVAILABLE)

    def test_no_retry_after_the_last_attempt(self) -> None:
        assert _rpc.retry_pause(grpc.StatusCode.UNAVAILABLE, 2, 2, 1.0, self.rng) is None

    def test_pause_is_jittered_within_a_growing_cap(self) -> None:
        first = [
            _rpc.retry_pause(grpc.StatusCode.UNAVAILABLE, 1, 9, 1.0, self.rng) for _ in range(200)
        ]
        third = [
            _rpc.retry_pause(grpc.StatusCode.UNAVAILABLE, 3, 9, 1.0, self.rng) for _ in range(200)
        ]
        assert all(p is not None and 0.0025 <= p <= 0.005 for p in first)
        assert all(p is not None and 0.01 <= p <= 0.02 for p in third)
        assert len(set(first)) > 1

    def test_no_retry_that_cannot_fit_the_budget(self) -> None:
        assert _rpc.retry_pause(grpc.StatusCode.UNAVAILABLE, 1, 3, 0.004, self.rng) is None
