"""Domain errors, mapped to gRPC status codes at the edge (api/errors.py).

    RingfenceError
    ├── InvalidInput      a request field is wrong       -> INVALID_ARGUMENT
    ├── NotFound          the thing asked for is unknown -> NOT_FOUND
    ├── Rejected          valid, but cannot be done now  -> FAILED_PRECONDITION
    ├── NotReady          the service cannot answer yet  -> UNAVAILABLE
    ├── Overloaded        a bounded resource is full     -> RESOURCE_EXHAUSTED
    └── FellBehind        a stream's reader is too slow  -> ABORTED (resync from a snapshot)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: its path (e.g. ``fingerprint.user_agent``) and what is wrong."""

    field: str
    description: str


class RingfenceError(Exception):
    """Base of every error the domain raises on purpose."""


class InvalidInput(RingfenceError):
    """One or more request fields are invalid."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    def prefixed(self, prefix: str) -> InvalidInput:
        """The same violations with every field path under ``prefix`` (for batch items)."""
        return InvalidInput([FieldViolation(f"{prefix}.{v.field}", v.description)
                             for v in self.violations])


class NotFound(RingfenceError):
    """The account (or other object) asked for is not known."""


class Rejected(RingfenceError):
    """The request is valid but cannot be carried out now (the old state stays)."""


class NotReady(RingfenceError):
    """The service is starting or stopping and cannot answer now."""


class Overloaded(RingfenceError):
    """A bounded resource (e.g. the number of decision streams) is full; try again later."""


class FellBehind(RingfenceError):
    """A stream's reader fell too far behind and was cut off; it must start over."""
