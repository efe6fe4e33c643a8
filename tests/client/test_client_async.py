"""The AsyncClient against a FakeRiskServer over real loopback gRPC (same cases as the sync one)."""

import time
from collections.abc import Callable

import grpc
import pytest

from ringfence.client import (
    FAIL_OPEN_REASON,
    Action,
    AsyncClient,
    Decision,
    FieldViolation,
    InvalidRequestError,
    ItemError,
    LimitScope,
    NotFoundError,
    OnUnavailable,
    ScoreRequest,
    ServiceUnavailableError,
)
from ringfence.client.testing import FakeRiskServer

SAFE_TIMEOUT = 2.0

MakeRequest = Callable[..., ScoreRequest]


def assert_fail_open(decision: Decision, account_id: str) -> None:
    assert decision.fail_open is True
    assert decision.action is Action.ALLOW
    assert decision.limit_key == f"account:{account_id}"
    assert decision.limit_scope is LimitScope.ACCOUNT
    assert [reason.code for reason in decision.reasons] == [FAIL_OPEN_REASON]


async def test_score_round_trips_a_decision_and_the_request(
    fake: FakeRiskServer, make_request: MakeRequest, blocking_decision: Decision
) -> None:
    fake.set_decision("mallory", blocking_decision)
    request = make_request("mallory")
    async with AsyncClient(fake.target, timeout=SAFE_TIMEOUT) as client:
        decision = await client.score(request)

    assert decision == blocking_decision
    assert fake.requests == [request]


async def test_fails_open_when_the_server_is_gone(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    async with AsyncClient(fake.target, timeout=SAFE_TIMEOUT) as client:
        await client.score(make_request())
        fake.stop()
        decision = await client.score(make_request("carol"))

    assert_fail_open(decision, "carol")


async def test_fails_open_when_unavailable_outlasts_the_attempts(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.fail_next(2)
    async with AsyncClient(fake.target, timeout=SAFE_TIMEOUT, max_attempts=2) as client:
        decision = await client.score(make_request("dave"))

    assert_fail_open(decision, "dave")
    assert len(fake.requests) == 2


async def test_raise_policy_raises_service_unavailable(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.fail_next(2)
    async with AsyncClient(
        fake.target, timeout=SAFE_TIMEOUT, on_unavailable=OnUnavailable.RAISE
    ) as client:
        with pytest.raises(ServiceUnavailableError) as caught:
            await client.score(make_request())

    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


async def test_one_unavailable_is_retried_and_succeeds(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.fail_next(1)
    async with AsyncClient(fake.target, timeout=SAFE_TIMEOUT) as client:
        decision = await client.score(make_request())

    assert decision.fail_open is False
    assert len(fake.requests) == 2


async def test_invalid_argument_raises_with_violations_and_is_not_retried(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    violations = [FieldViolation("context.input_tokens", "must be at most 10000000")]
    fake.fail_next(1, grpc.StatusCode.INVALID_ARGUMENT, message="bad", field_violations=violations)
    async with AsyncClient(fake.target, timeout=SAFE_TIMEOUT, max_attempts=3) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.score(make_request())

    assert caught.value.field_violations == tuple(violations)
    assert len(fake.requests) == 1


async def test_deadline_fails_open_quickly(fake: FakeRiskServer, make_request: MakeRequest) -> None:
    fake.delay(0.2)
    async with AsyncClient(fake.target, timeout=0.05) as client:
        started = time.monotonic()
        decision = await client.score(make_request())
        elapsed = time.monotonic() - started

    assert_fail_open(decision, "alice")
    assert "DEADLINE_EXCEEDED" in decision.reasons[0].message
    assert elapsed < 0.2


async def test_score_batch_keeps_order_and_item_errors(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    requests = [make_request("x", client_ip="nope"), make_request("alice")]
    async with AsyncClient(fake.target, timeout=SAFE_TIMEOUT) as client:
        results = await client.score_batch(requests)

    assert isinstance(results[0], ItemError)
    assert results[0].field_violations[0].field == "requests[0].client_ip"
    assert isinstance(results[1], Decision)
    assert results[1].limit_key == "account:alice"


async def test_score_batch_fails_open_once_per_request(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.fail_next(2)
    async with AsyncClient(fake.target, timeout=SAFE_TIMEOUT) as client:
        results = await client.score_batch([make_request("a"), make_request("b")])

    for result, account_id in zip(results, ["a", "b"], strict=True):
        assert isinstance(result, Decision)
        assert_fail_open(result, account_id)


async def test_get_account_of_an_unknown_account_raises_not_found(fake: FakeRiskServer) -> None:
    async with AsyncClient(fake.target, timeout=SAFE_TIMEOUT) as client:
        with pytest.raises(NotFoundError):
            await client.get_account("nobody")


async def test_get_account_knows_scored_accounts(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    async with AsyncClient(fake.target, timeout=SAFE_TIMEOUT) as client:
        decision = await client.score(make_request("alice"))
        info = await client.get_account("alice")

    assert info.profile.account_id == "alice"
    assert info.profile.total_requests == 1
    assert info.last_decision == decision


async def test_from_channel_leaves_the_callers_channel_open(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    async with grpc.aio.insecure_channel(fake.target) as channel:
        async with AsyncClient.from_channel(channel, timeout=SAFE_TIMEOUT) as client:
            await client.score(make_request())
        again = AsyncClient.from_channel(channel, timeout=SAFE_TIMEOUT)
        assert (await again.score(make_request())).fail_open is False
