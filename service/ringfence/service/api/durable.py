"""Durable acknowledgement (``event_log_ack = "committed"``): a call that scored requests
answers only once their events are committed to the event log.

An interceptor, so every transport method that scores (RiskService Score and ScoreBatch, Envoy
ext_authz Check and ShouldRateLimit) gets it without each servicer knowing; /v1/check awaits
the same barrier itself. The barrier is shared by every call that finished in one turn of the
event loop, so under load one commit acknowledges many calls (group commit). When the log
cannot commit the call ends UNAVAILABLE, never OK for an event that is not stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ringfence.service.adapters.event_log import EventLogUnavailable
from ringfence.service.api.interceptors import WrappedHandlers, method_name

# What the app hands in: the event log's committed() (None: nothing to wait for).
Barrier = Callable[[], Awaitable[None] | None]

SCORING_METHODS = frozenset(
    {
        "/ringfence.v1.RiskService/Score",
        "/ringfence.v1.RiskService/ScoreBatch",
        "/envoy.service.auth.v3.Authorization/Check",
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    }
)


async def wait_committed(barrier: Barrier) -> None:
    """Wait until the events appended so far are committed; EventLogUnavailable if they
    cannot be."""
    waiter = barrier()
    if waiter is not None:
        await waiter


class DurableAckInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, barrier: Barrier, methods: frozenset[str] = SCORING_METHODS) -> None:
        self._barrier = barrier
        self._methods = methods
        self._wrapped = WrappedHandlers()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = method_name(handler_call_details)
        if method not in self._methods:
            return handler
        return self._wrapped.get(method, handler, self._durable)

    def _durable(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behavior = handler.unary_unary
        barrier = self._barrier

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            response = await behavior(request, context)
            try:
                await wait_committed(barrier)
            except EventLogUnavailable as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            return response

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
