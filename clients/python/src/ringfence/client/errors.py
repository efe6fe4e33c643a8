"""Exceptions the client raises. Every one derives from `RingfenceError`:

    RingfenceError                  base class; `.code` is the gRPC status (None if client-side)
    ├── InvalidRequestError         INVALID_ARGUMENT; `.field_violations` names each bad field
    ├── NotFoundError               NOT_FOUND (e.g. `get_account` for an unknown account)
    ├── ServiceUnavailableError     UNAVAILABLE or DEADLINE_EXCEEDED after all retries, raised
    │                               only where the client does not fail open
    └── RingfenceRpcError           any other status; `.code` says which

The `grpc.RpcError` that caused an exception is its `__cause__`.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from ringfence.client.types import FieldViolation

__all__ = [
    "InvalidRequestError",
    "NotFoundError",
    "RingfenceError",
    "RingfenceRpcError",
    "ServiceUnavailableError",
]


class RingfenceError(Exception):
    """Base class of every error the ringfence client raises."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        """The service's (or the client's) description of the error."""
        self.code = code
        """The gRPC status code; None for errors detected by the client itself."""


class InvalidRequestError(RingfenceError):
    """The service rejected the request as invalid (INVALID_ARGUMENT). Never retried."""

    def __init__(
        self,
        message: str,
        *,
        field_violations: Iterable[FieldViolation] = (),
        code: grpc.StatusCode | None = grpc.StatusCode.INVALID_ARGUMENT,
    ) -> None:
        super().__init__(message, code=code)
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        """Each field that failed validation and why."""


class NotFoundError(RingfenceError):
    """The thing asked for does not exist (NOT_FOUND)."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = grpc.StatusCode.NOT_FOUND,
    ) -> None:
        super().__init__(message, code=code)


class ServiceUnavailableError(RingfenceError):
    """The service did not answer in time (UNAVAILABLE or DEADLINE_EXCEEDED after retries)."""


class RingfenceRpcError(RingfenceError):
    """The service answered with a status the client has no specific error for."""

    code: grpc.StatusCode

    def __init__(self, message: str, *, code: grpc.StatusCode) -> None:
        super().__init__(message, code=code)
