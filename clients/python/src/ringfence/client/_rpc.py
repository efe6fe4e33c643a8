"""Call policy shared by `Client` and `AsyncClient`: deadline budget, retry backoff, status →
exception mapping and fail-open decisions. Transport-neutral: no channel or stub lives here.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import grpc

from ringfence.client.errors import (
    InvalidRequestError,
    NotFoundError,
    RingfenceError,
    RingfenceRpcError,
    ServiceUnavailableError,
)
from ringfence.client.types import (
    Action,
    Decision,
    FieldViolation,
    LimitScope,
    OnUnavailable,
    Reason,
    ScoreRequest,
)

try:  # googleapis-common-protos is optional: without it violations come from the message.
    from google.rpc import error_details_pb2, status_pb2
except ImportError:  # pragma: no cover - exercised only where the package is absent
    error_details_pb2 = None  # type: ignore[assignment]
    status_pb2 = None  # type: ignore[assignment]

_log = logging.getLogger("ringfence.client")

DEFAULT_TIMEOUT = 0.05
"""Seconds a call may take in all, retries included: a rate limiter sits on the request path."""

DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # The service allows a ping every 10 s at most and none without calls; pinging less
    # often than that keeps it from answering GOAWAY "too_many_pings".
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # gRPC backs off reconnecting up to 120 s by default; a fail-open client would keep
    # allowing everything that long after the service is back.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)
"""Channel options every client channel gets; `channel_options=` entries override them."""

FAIL_OPEN_REASON = "CLIENT_FAIL_OPEN"
"""Reason code of a decision the client made itself because the service was unavailable."""

_FAIL_OPEN_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_INITIAL_BACKOFF = 0.005
_MAX_BACKOFF = 0.05
# An attempt with less time than this left can only end in DEADLINE_EXCEEDED.
_MIN_ATTEMPT_TIME = 0.005
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class _RpcFailure(Protocol):
    # What sync (`grpc.Call`) and asyncio (`grpc.aio.AioRpcError`) failures both offer.
    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def trailing_metadata(self) -> Any: ...


@dataclass(frozen=True)
class CallPolicy:
    """How a client makes each call; validated once at construction."""

    timeout: float
    max_attempts: int
    on_unavailable: OnUnavailable
    metadata: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {self.timeout}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: must be >= 1, got {self.max_attempts}")
        if not isinstance(self.on_unavailable, OnUnavailable):
            raise TypeError(
                f"on_unavailable: must be an OnUnavailable, got {self.on_unavailable!r}"
            )

    def call_timeout(self, timeout: float | None) -> float:
        """The overall budget of one call: its own `timeout=` or the client's default."""
        if timeout is None:
            return self.timeout
        if not timeout > 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {timeout}")
        return timeout


def make_policy(
    timeout: float,
    max_attempts: int,
    on_unavailable: OnUnavailable,
    metadata: Iterable[tuple[str, str]],
) -> CallPolicy:
    return CallPolicy(
        timeout=timeout,
        max_attempts=max_attempts,
        on_unavailable=on_unavailable,
        metadata=tuple((str(key), str(value)) for key, value in metadata),
    )


def channel_options(
    overrides: Iterable[tuple[str, Any]],
) -> list[tuple[str, Any]]:
    """The default channel options with `overrides` applied (last one wins per key)."""
    merged: dict[str, Any] = dict(DEFAULT_CHANNEL_OPTIONS)
    merged.update(dict(overrides))
    return list(merged.items())


class Budget:
    """One call's overall deadline: every attempt and backoff must fit inside it."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadline = clock() + timeout

    def remaining(self) -> float:
        return self._deadline - self._clock()


def retry_pause(
    code: grpc.StatusCode,
    attempt: int,
    max_attempts: int,
    remaining: float,
    rng: random.Random,
) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None when the failure is final.

    Only UNAVAILABLE is retried: it means the request did not reach a server that could
    act on it. Everything else (INVALID_ARGUMENT above all) would fail the same way again.
    """
    if code is not grpc.StatusCode.UNAVAILABLE or attempt >= max_attempts:
        return None
    cap = min(_MAX_BACKOFF, _INITIAL_BACKOFF * 2 ** (attempt - 1))
    # "Equal jitter": spread clients that failed together, yet keep a floor so a
    # retry does not hit a restarting server at once.
    pause = rng.uniform(cap / 2, cap)
    if remaining - pause < _MIN_ATTEMPT_TIME:
        return None
    return pause


def rpc_code(exc: grpc.RpcError) -> grpc.StatusCode:
    code = getattr(exc, "code", None)
    return cast(_RpcFailure, exc).code() if callable(code) else grpc.StatusCode.UNKNOWN


def _rpc_message(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    message = cast(_RpcFailure, exc).details() if callable(details) else None
    return message or str(exc)


def parse_violation_message(message: str) -> tuple[FieldViolation, ...]:
    """Violations from a message the service formats as "field: description; field2: ...".

    Returns () when the message is not in that format (a field path never has a space).
    """
    violations: list[FieldViolation] = []
    for part in message.split("; "):
        field, separator, description = part.partition(": ")
        if not separator or not field or " " in field:
            return ()
        violations.append(FieldViolation(field=field, description=description))
    return tuple(violations)


def _status_details_violations(exc: grpc.RpcError) -> tuple[FieldViolation, ...] | None:
    """Violations from a google.rpc.Status/BadRequest trailer; None if there is none to read."""
    if status_pb2 is None or error_details_pb2 is None:
        return None
    trailing = getattr(exc, "trailing_metadata", None)
    metadata = cast(_RpcFailure, exc).trailing_metadata() if callable(trailing) else None
    for key, value in metadata or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # a garbled trailer must not hide the real error
            return None
        violations: list[FieldViolation] = []
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    FieldViolation(field=v.field, description=v.description)
                    for v in bad_request.field_violations
                )
        return tuple(violations) if violations else None
    return None


def to_error(exc: grpc.RpcError) -> RingfenceError:
    """The client exception for a failed RPC (retries already spent)."""
    code = rpc_code(exc)
    message = _rpc_message(exc)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        violations = _status_details_violations(exc)
        if violations is None:
            violations = parse_violation_message(message)
        return InvalidRequestError(message, field_violations=violations)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFoundError(message)
    if code in _FAIL_OPEN_CODES:
        return ServiceUnavailableError(message, code=code)
    return RingfenceRpcError(message, code=code)


def fail_open_decision(request: ScoreRequest, code: grpc.StatusCode) -> Decision:
    """The ALLOW decision the client makes itself when the service cannot answer."""
    return Decision(
        risk_score=0.0,
        action=Action.ALLOW,
        policy_action=Action.ALLOW,
        limit_key=f"account:{request.account_id}",
        limit_scope=LimitScope.ACCOUNT,
        reasons=(
            Reason(
                code=FAIL_OPEN_REASON,
                weight=0.0,
                message=f"ringfence did not answer ({code.name}); the client allowed the request",
            ),
        ),
        # The decision used no input at all; a zero TTL keeps it out of decision caches.
        degraded=True,
        decided_at=datetime.now(UTC),
        fail_open=True,
    )


def score_failure(
    exc: grpc.RpcError, policy: CallPolicy, requests: Sequence[ScoreRequest]
) -> list[Decision]:
    """Fail-open decisions for `requests`, or raise the client error for `exc`."""
    code = rpc_code(exc)
    if code in _FAIL_OPEN_CODES and policy.on_unavailable is OnUnavailable.ALLOW:
        _log.debug(
            "ringfence unavailable (%s); failing open for %d request(s)", code.name, len(requests)
        )
        return [fail_open_decision(request, code) for request in requests]
    raise to_error(exc) from exc


def check_batch_size(results: Sequence[object], expected: int) -> None:
    if len(results) != expected:
        raise RingfenceError(f"ScoreBatch returned {len(results)} results for {expected} requests")
