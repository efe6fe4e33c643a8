"""The one table from domain errors to gRPC status codes, with rich details.

    InvalidInput  -> INVALID_ARGUMENT, google.rpc.BadRequest listing every field violation
    NotFound      -> NOT_FOUND
    Rejected      -> FAILED_PRECONDITION
    NotReady      -> UNAVAILABLE
    Overloaded    -> RESOURCE_EXHAUSTED
    FellBehind    -> ABORTED (a decision stream's reader must resync from a new snapshot)
    anything else -> INTERNAL with a generic message; the cause is logged, never sent
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ringfence.service.core.errors import (
    FellBehind,
    InvalidInput,
    NotFound,
    NotReady,
    Overloaded,
    Rejected,
)
from ringfence.v1 import risk_pb2 as pb

log = logging.getLogger(__name__)

_CODES: tuple[tuple[type[Exception], grpc.StatusCode, int], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    (Rejected, grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    (NotReady, grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    (FellBehind, grpc.StatusCode.ABORTED, code_pb2.ABORTED),
)
INTERNAL_MESSAGE = "internal error; the server logged the cause"
# Messages quote what the client sent (an unknown account id, say); a 200 KB id must not become
# a 200 KB trailer the client's HTTP/2 layer refuses (it then sees RESOURCE_EXHAUSTED instead).
MAX_MESSAGE = 1024
# The same for the BadRequest details (grpc-status-details-bin): a request with 10,000 bad
# repeated values would otherwise list 10,000 violations, ~100 KB past the 16 KB trailer limit.
MAX_VIOLATIONS = 20
MAX_FIELD = 256


def _message(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "… (truncated)"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "… (truncated)"


def _violations(exc: InvalidInput) -> list[tuple[str, str]]:
    """(field, description) pairs to send: the first MAX_VIOLATIONS, then one line counting
    the rest, each part capped so the whole fits well inside a trailer."""
    shown = [(_cut(v.field, MAX_FIELD), _cut(v.description, MAX_FIELD))
             for v in exc.violations[:MAX_VIOLATIONS]]
    rest = len(exc.violations) - len(shown)
    if rest > 0:
        field = _cut(exc.violations[MAX_VIOLATIONS].field, MAX_FIELD)
        shown.append((field, f"and {rest} more invalid fields, not listed"))
    return shown


def rich_status(exc: Exception) -> grpc.Status:
    """The status (with google.rpc details where they help) for a domain error."""
    for kind, _, code in _CODES:
        if isinstance(exc, kind):
            status = status_pb2.Status(code=code, message=_message(exc))
            if isinstance(exc, InvalidInput):
                detail = any_pb2.Any()
                detail.Pack(error_details_pb2.BadRequest(field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in _violations(exc)]))
                status.details.append(detail)
            return rpc_status.to_status(status)
    log.error("unexpected error while serving a request", exc_info=exc)
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL,
                                                  message=INTERNAL_MESSAGE))


def item_error(exc: Exception) -> pb.ItemError:
    """The error of one batch item (same mapping, as a message inside the response)."""
    for kind, _, code in _CODES:
        if isinstance(exc, kind):
            violations = _violations(exc) if isinstance(exc, InvalidInput) else []
            return pb.ItemError(code=code, message=_message(exc), field_violations=[
                pb.FieldViolation(field=f, description=d) for f, d in violations])
    log.error("unexpected error while scoring a batch item", exc_info=exc)
    return pb.ItemError(code=code_pb2.INTERNAL, message=INTERNAL_MESSAGE)
