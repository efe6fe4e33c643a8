"""The per-call plumbing of the server interceptors: wrapped handlers built once per method, and
the metrics interceptor's cached label children counting exactly what the plain lookups did."""

import asyncio

import grpc

from ringfence.service.adapters.clock import ManualClock
from ringfence.service.api.interceptors import WrappedHandlers
from ringfence.service.core.model import Action, Decision, Limit, LimitScope, LimitUnit, Reason
from ringfence.service.metrics import Metrics

SCORE = "/ringfence.v1.RiskService/Score"


async def _echo(request: object, context: object) -> object:
    return request


def test_a_method_is_wrapped_once_while_its_handler_stays_the_same():
    built = []

    def build(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        built.append(handler)
        return grpc.unary_unary_rpc_method_handler(_echo)

    cache = WrappedHandlers()
    first = grpc.unary_unary_rpc_method_handler(_echo)
    a = cache.get(SCORE, first, build)
    assert cache.get(SCORE, first, build) is a
    assert built == [first]
    second = grpc.unary_unary_rpc_method_handler(_echo)  # an inner interceptor built a new one
    b = cache.get(SCORE, second, build)
    assert b is not a
    assert built == [first, second]
    assert cache.get(SCORE, second, build) is b
    assert len(cache._by_method) == 1


class _Context:
    def __init__(self, code: grpc.StatusCode | None = None) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code


class _Details:
    method = SCORE
    invocation_metadata = ()


def test_metrics_count_calls_and_decisions_by_label():
    metrics = Metrics(clock=ManualClock(0.0))
    handler = grpc.unary_unary_rpc_method_handler(_echo)

    async def continuation(details: object) -> grpc.RpcMethodHandler:
        return handler

    async def calls() -> None:
        interceptor = metrics.interceptor()
        for _ in range(3):
            wrapped = await interceptor.intercept_service(continuation, _Details())
            assert await wrapped.unary_unary("x", _Context()) == "x"
        wrapped = await interceptor.intercept_service(continuation, _Details())
        assert await wrapped.unary_unary("y", _Context(grpc.StatusCode.INVALID_ARGUMENT)) == "y"

    asyncio.run(calls())
    value = metrics.registry.get_sample_value
    assert value("ringfence_grpc_requests_total", {"method": SCORE, "code": "OK"}) == 3
    assert (
        value("ringfence_grpc_requests_total", {"method": SCORE, "code": "INVALID_ARGUMENT"}) == 1
    )
    assert value("ringfence_grpc_request_seconds_count", {"method": SCORE}) == 4
    assert value("ringfence_grpc_requests_in_flight") == 0

    decision = Decision(
        risk_score=0.6,
        action=Action.THROTTLE,
        policy_action=Action.BLOCK,
        shadow=False,
        route_to_fallback=False,
        limit_key="account:a",
        limit_scope=LimitScope.ACCOUNT,
        suggested_limit=Limit(10, LimitUnit.MINUTE),
        ttl_seconds=60.0,
        reasons=(Reason("ACCOUNT_NEW", 0.1, "new"), Reason("not a code", 0.2, "bad")),
        policy_version="p",
        decided_at=1.0,
        model_version="",
        cluster=None,
    )
    metrics.observe_decision(decision)
    metrics.observe_decision(decision)
    assert value("ringfence_decisions_total", {"action": "throttle"}) == 2
    assert value("ringfence_decisions_total", {"action": "allow"}) == 0
    assert value("ringfence_policy_decisions_total", {"action": "block"}) == 2
    assert value("ringfence_decision_reasons_total", {"code": "ACCOUNT_NEW"}) == 2
    assert value("ringfence_decision_reasons_total", {"code": "OTHER"}) == 2
    assert value("ringfence_decision_risk_score_count") == 2
