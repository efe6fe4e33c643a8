"""FakeRiskServer itself: what users rely on when testing their code against it."""

import time
from collections.abc import Callable

import grpc
import pytest

from ringfence.client import (
    Action,
    Client,
    Decision,
    LimitScope,
    ScoreRequest,
    _convert,
)
from ringfence.client.testing import FakeRiskServer
from ringfence.v1 import risk_pb2_grpc

SAFE_TIMEOUT = 2.0

MakeRequest = Callable[..., ScoreRequest]


def test_target_is_a_loopback_address_with_the_bound_port(fake: FakeRiskServer) -> None:
    assert fake.target == f"127.0.0.1:{fake.port}"
    assert fake.port > 0


def test_unstarted_server_has_no_target() -> None:
    with pytest.raises(RuntimeError, match="not been started"):
        _ = FakeRiskServer().target


def test_default_decision_gets_each_accounts_limit_key(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.set_default(Decision(risk_score=0.5, action=Action.THROTTLE))
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        first = client.score(make_request("a"))
        second = client.score(make_request("b"))

    assert (first.action, first.risk_score) == (Action.THROTTLE, 0.5)
    assert (first.limit_key, first.limit_scope) == ("account:a", LimitScope.ACCOUNT)
    assert second.limit_key == "account:b"


def test_a_decision_with_its_own_limit_key_is_kept(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    scripted = Decision(action=Action.BLOCK, limit_key="cluster:c", limit_scope=LimitScope.CLUSTER)
    fake.set_decision("a", scripted)
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        assert client.score(make_request("a")) == scripted
        assert client.score(make_request("b")).limit_key == "account:b"


def test_records_requests_and_calls_in_order(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        client.score(make_request("a"))
        client.score_batch([make_request("b"), make_request("c")])
        client.get_account("a")

    assert [r.account_id for r in fake.requests] == ["a", "b", "c"]
    assert fake.calls == ["Score", "ScoreBatch", "GetAccount"]


def test_records_each_calls_metadata(fake: FakeRiskServer, make_request: MakeRequest) -> None:
    metadata = [("authorization", "Bearer t0k3n")]
    with Client(fake.target, timeout=SAFE_TIMEOUT, metadata=metadata) as client:
        client.score(make_request())
        client.get_account("alice")

    assert [m["authorization"] for m in fake.metadata] == ["Bearer t0k3n", "Bearer t0k3n"]


def test_fail_next_fails_exactly_n_calls_with_the_code(
    fake: FakeRiskServer, make_request: MakeRequest
) -> None:
    fake.fail_next(2, grpc.StatusCode.RESOURCE_EXHAUSTED)
    with grpc.insecure_channel(fake.target) as channel:
        # A raw stub, so no client retry policy muddies the count.
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        message = _convert.score_request_to_proto(make_request())
        codes = []
        for _ in range(3):
            try:
                stub.Score(message, timeout=SAFE_TIMEOUT)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())

    assert codes == [
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OK,
    ]


def test_stop_cuts_delayed_calls_short(fake: FakeRiskServer, make_request: MakeRequest) -> None:
    fake.delay(30)
    with Client(fake.target, timeout=0.05) as client:
        assert client.score(make_request()).fail_open is True
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 5


def test_serves_again_on_the_same_port_after_a_restart(
    make_request: MakeRequest,
) -> None:
    with FakeRiskServer() as fake:
        port = fake.port
        fake.stop()
        fake.start()
        assert fake.port == port
        with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
            assert client.score(make_request()).fail_open is False


def test_reset_forgets_scripts_and_records(fake: FakeRiskServer, make_request: MakeRequest) -> None:
    fake.set_decision("a", Decision(action=Action.BLOCK))
    fake.fail_next(5)
    with Client(fake.target, timeout=SAFE_TIMEOUT) as client:
        client.score(make_request("a"))
        fake.reset()
        assert fake.requests == []
        decision = client.score(make_request("a"))

    assert decision.action is Action.ALLOW
    assert decision.fail_open is False
    assert len(fake.requests) == 1
