"""The asyncio client: the surface of `Client`, awaited, over a `grpc.aio` channel."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import grpc

from ringfence.client import _convert, _rpc
from ringfence.client.types import AccountInfo, Decision, ItemError, OnUnavailable, ScoreRequest
from ringfence.v1 import risk_pb2, risk_pb2_grpc


class AsyncClient:
    """Asyncio ringfence client; the methods of `Client`, awaited. Share one per event loop.

    Every call has a deadline (`timeout`, default 50 ms) that covers all its attempts.
    UNAVAILABLE is retried up to `max_attempts` in all, with a small jittered backoff.
    When the service stays unavailable or the deadline passes, `score` and `score_batch`
    fail open (ALLOW decisions with `fail_open=True`) unless `on_unavailable` is RAISE.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = _rpc.DEFAULT_TIMEOUT,
        on_unavailable: OnUnavailable = OnUnavailable.ALLOW,
        max_attempts: int = 2,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Iterable[tuple[str, str]] = (),
        channel_options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        """Connect to `target` ("host:port"); TLS when `credentials` are given.

        `channel_options` are merged over `DEFAULT_CHANNEL_OPTIONS`; `metadata` is sent
        with every call (e.g. an authorization header).
        """
        policy = _rpc.make_policy(timeout, max_attempts, on_unavailable, metadata)
        options = _rpc.channel_options(channel_options)
        channel = (
            grpc.aio.secure_channel(target, credentials, options=options)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=options)
        )
        self._setup(channel, policy, owns_channel=True)

    @classmethod
    def from_channel(
        cls,
        channel: grpc.aio.Channel,
        *,
        timeout: float = _rpc.DEFAULT_TIMEOUT,
        on_unavailable: OnUnavailable = OnUnavailable.ALLOW,
        max_attempts: int = 2,
        metadata: Iterable[tuple[str, str]] = (),
    ) -> Self:
        """A client over a channel the caller built and keeps: `close()` leaves it open."""
        client = cls.__new__(cls)
        client._setup(
            channel,
            _rpc.make_policy(timeout, max_attempts, on_unavailable, metadata),
            owns_channel=False,
        )
        return client

    def _setup(
        self, channel: grpc.aio.Channel, policy: _rpc.CallPolicy, *, owns_channel: bool
    ) -> None:
        self._channel = channel
        self._owns_channel = owns_channel
        self._policy = policy
        self._stub = risk_pb2_grpc.RiskServiceStub(channel)
        self._rng = random.Random()

    async def score(self, request: ScoreRequest, *, timeout: float | None = None) -> Decision:
        """Score one request.

        Raises `InvalidRequestError` for a request the service rejects, and
        `ServiceUnavailableError` on outage only when `on_unavailable` is RAISE.
        """
        message = _convert.score_request_to_proto(request)
        try:
            response: risk_pb2.ScoreResponse = await self._call(self._stub.Score, message, timeout)
        except grpc.RpcError as exc:
            return _rpc.score_failure(exc, self._policy, [request])[0]
        return _convert.decision_from_proto(response)

    async def score_batch(
        self, requests: Sequence[ScoreRequest], *, timeout: float | None = None
    ) -> list[Decision | ItemError]:
        """Score many requests in one call; one result per request, in order.

        An invalid item comes back as an `ItemError` without failing the others. On outage
        every item gets its own fail-open decision (or `ServiceUnavailableError` is raised).
        """
        requests = list(requests)
        if not requests:
            return []
        message = _convert.batch_request_to_proto(requests)
        try:
            response: risk_pb2.ScoreBatchResponse = await self._call(
                self._stub.ScoreBatch, message, timeout
            )
        except grpc.RpcError as exc:
            return list(_rpc.score_failure(exc, self._policy, requests))
        results = _convert.batch_response_from_proto(response)
        _rpc.check_batch_size(results, len(requests))
        return results

    async def get_account(self, account_id: str, *, timeout: float | None = None) -> AccountInfo:
        """An account's live profile and last decision.

        Raises `NotFoundError` for an account the service has not seen. This call never
        fails open: on outage it raises `ServiceUnavailableError`.
        """
        message = risk_pb2.GetAccountRequest(account_id=account_id)
        try:
            response: risk_pb2.GetAccountResponse = await self._call(
                self._stub.GetAccount, message, timeout
            )
        except grpc.RpcError as exc:
            raise _rpc.to_error(exc) from exc
        return _convert.account_info_from_proto(response)

    async def close(self) -> None:
        """Close the channel (unless it came from `from_channel`)."""
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        budget = _rpc.Budget(self._policy.call_timeout(timeout))
        attempt = 1
        while True:
            try:
                return await method(
                    request, timeout=budget.remaining(), metadata=self._policy.metadata
                )
            except grpc.RpcError as exc:
                pause = _rpc.retry_pause(
                    _rpc.rpc_code(exc),
                    attempt,
                    self._policy.max_attempts,
                    budget.remaining(),
                    self._rng,
                )
                if pause is None:
                    raise
                await asyncio.sleep(pause)
                attempt += 1
