"""Shared plumbing for server interceptors that run code around every call (metrics, tracing):
re-wrap a method handler's behaviour, whatever its shape, and read the status it ended with."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

# Around one call: entered before the behaviour runs, exited with its exception (if any).
Around = Callable[[grpc.aio.ServicerContext], contextlib.AbstractContextManager[Any]]


def status_name(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:
    """The status a call ended with, as the StatusCode name (``OK``, ``INVALID_ARGUMENT``...)."""
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    if exc is not None and not isinstance(exc, grpc.aio.AbortError):
        return "UNKNOWN"  # what grpc answers for an exception a handler let escape
    code = context.code()
    if code is None:
        return "OK" if exc is None else "UNKNOWN"
    if isinstance(code, grpc.StatusCode):
        return code.name
    for status in grpc.StatusCode:  # some grpc versions hand back the raw integer
        if status.value[0] == code:
            return status.name
    return "UNKNOWN"


def method_name(handler_call_details: grpc.HandlerCallDetails) -> str:
    method = handler_call_details.method
    return method.decode() if isinstance(method, bytes) else method


class WrappedHandlers:
    """Each method's wrapped handler, built once instead of on every call. The handler an
    interceptor gets is the same object call after call (unless an inner interceptor builds
    one per call: then the newest is kept), so this holds one entry per method that has a
    handler."""

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(self, method: str, handler: grpc.RpcMethodHandler,
            build: Callable[[grpc.RpcMethodHandler], grpc.RpcMethodHandler]
            ) -> grpc.RpcMethodHandler:
        hit = self._by_method.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        wrapped = build(handler)
        self._by_method[method] = (handler, wrapped)
        return wrapped


def wrap(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """The same handler (serializers, streaming shape) with ``around`` wrapped round each call."""
    def unary_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with around(context):
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result
        return call

    def streaming_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.isasyncgenfunction(behavior):
            return unary_response(behavior)  # writes with context.write, returns None

        async def stream(request: Any, context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[Any]:
            with around(context):
                async for item in behavior(request, context):
                    yield item
        return stream

    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary_response(handler.unary_unary), request_deserializer=des,
            response_serializer=ser)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            unary_response(handler.stream_unary), request_deserializer=des,
            response_serializer=ser)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            streaming_response(handler.unary_stream), request_deserializer=des,
            response_serializer=ser)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            streaming_response(handler.stream_stream), request_deserializer=des,
            response_serializer=ser)
    return handler
