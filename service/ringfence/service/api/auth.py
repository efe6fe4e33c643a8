"""Per-caller bearer tokens: a server interceptor that answers UNAUTHENTICATED for a missing
or unknown token and PERMISSION_DENIED for a known caller whose role does not cover the RPC.

The tokens file holds only SHA-256 hashes of the tokens (docs/operations.md):

    [[caller]]
    name = "envoy-edge"
    role = "scorer"            # or a list: ["scorer", "reader"]
    token_sha256 = "<64 hex digits>"

Roles: ``scorer`` (Score, ScoreBatch, StreamDecisions, the Envoy services), ``reader`` (the read
RPCs and StreamDecisions), ``admin`` (everything, including SubmitLabel). An RPC not listed
here is admin-only until it is. Health and reflection stay open. The file is re-read when it
changes (checked at most every few seconds); a broken edit keeps the previous callers.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import logging
import re
import secrets
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ringfence.v1 import risk_pb2 as pb

log = logging.getLogger(__name__)

TOKEN_PREFIX = "rft_"  # lets secret scanners recognise a leaked ringfence token
_HEX64 = re.compile(r"[0-9a-f]{64}")


class Role(enum.StrEnum):
    SCORER = "scorer"
    READER = "reader"
    ADMIN = "admin"


OPEN_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})
_RISK = f"/{pb.DESCRIPTOR.services_by_name['RiskService'].full_name}/"
METHOD_ROLES: dict[str, frozenset[Role]] = {
    _RISK + "Score": frozenset({Role.SCORER}),
    _RISK + "ScoreBatch": frozenset({Role.SCORER}),
    _RISK + "StreamDecisions": frozenset({Role.SCORER, Role.READER}),
    "/envoy.service.auth.v3.Authorization/Check": frozenset({Role.SCORER}),
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit": frozenset({Role.SCORER}),
    **{_RISK + m: frozenset({Role.READER}) for m in (
        "GetAccount", "GetCluster", "ListClusters", "ExplainAccount", "GetModelInfo")},
}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made the call (never the token itself)."""

    name: str
    roles: frozenset[Role]


CURRENT_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "ringfence_caller", default=None)


def is_open(method: str) -> bool:
    """Health and reflection need no token."""
    return method.lstrip("/").split("/", 1)[0] in OPEN_SERVICES


def permits(caller: Caller, method: str) -> bool:
    if Role.ADMIN in caller.roles:
        return True
    return bool(caller.roles & METHOD_ROLES.get(method, frozenset()))


def token_hash(token: str) -> str:
    """What the tokens file stores: SHA-256 of the token, hex. Tokens are random (256 bits),
    so a fast hash is enough: there is nothing to brute-force."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class TokenBook:
    """Callers by token hash, loaded from a tokens file."""

    def __init__(self, callers: dict[str, Caller]) -> None:
        self._by_hash = callers

    def __len__(self) -> int:
        return len(self._by_hash)

    @classmethod
    def load(cls, path: Path) -> TokenBook:
        with path.open("rb") as f:
            data = tomllib.load(f)
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "tokens file") -> TokenBook:
        unknown = set(data) - {"caller"}
        if unknown:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}; expected [[caller]]")
        callers: dict[str, Caller] = {}
        for i, entry in enumerate(data.get("caller", [])):
            where = f"{source}: caller[{i}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{where} must be a table")
            extra = set(entry) - {"name", "role", "token_sha256"}
            if extra:
                raise ValueError(f"{where} has unknown keys {sorted(extra)}")
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}.name must be a non-empty string")
            digest = str(entry.get("token_sha256", "")).lower()
            if not _HEX64.fullmatch(digest):
                raise ValueError(f"{where}.token_sha256 must be 64 hex digits (the SHA-256 "
                                 "of the token, e.g. `printf %s TOKEN | sha256sum`)")
            if digest in callers:
                raise ValueError(f"{where}.token_sha256 repeats the token of "
                                 f"{callers[digest].name!r}")
            callers[digest] = Caller(name, _roles(entry.get("role"), where))
        return cls(callers)

    def authenticate(self, token: str) -> Caller | None:
        return self._by_hash.get(token_hash(token))


def _roles(value: Any, where: str) -> frozenset[Role]:
    names = [value] if isinstance(value, str) else value
    valid = ", ".join(r.value for r in Role)
    if not isinstance(names, list) or not names:
        raise ValueError(f"{where}.role must be one of {valid} (or a list of them)")
    try:
        return frozenset(Role(n) for n in names)
    except ValueError:
        raise ValueError(f"{where}.role {value!r} is not one of {valid}") from None


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class _WatchedFile:
    """A tokens file re-read when its mtime or size changes, checked at most every
    ``recheck_s`` seconds."""

    def __init__(self, path: Path, recheck_s: float, monotonic: Callable[[], float]) -> None:
        self.path = path
        self._recheck_s = recheck_s
        self._monotonic = monotonic
        self._checked = monotonic()
        self._stamp = self._stat()
        self.book = TokenBook.load(path)

    def _stat(self) -> tuple[int, int]:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size

    def current(self) -> TokenBook:
        now = self._monotonic()
        if now - self._checked < self._recheck_s:
            return self.book
        self._checked = now
        try:
            stamp = self._stat()
            if stamp != self._stamp:
                self.book = TokenBook.load(self.path)
                self._stamp = stamp
                log.info("tokens file reloaded", extra={"callers": len(self.book)})
        except Exception as exc:
            log.error("tokens file could not be reloaded; keeping the previous callers",
                      extra={"error": str(exc)})
        return self.book


def _deny(handler: grpc.RpcMethodHandler, code: grpc.StatusCode,
          message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that only aborts."""
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks ``authorization: Bearer <token>`` against the tokens file on every RPC that is
    not health or reflection; the caller is available to handlers as ``CURRENT_CALLER``."""

    def __init__(self, tokens_file: Path, *, recheck_s: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._file = _WatchedFile(tokens_file, recheck_s, monotonic)

    @property
    def callers(self) -> int:
        return len(self._file.book)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        handler = await continuation(handler_call_details)
        if handler is None or is_open(method):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        caller = self._file.current().authenticate(token) if token else None
        if caller is None:
            return _deny(handler, grpc.StatusCode.UNAUTHENTICATED,
                         "a valid bearer token is required (metadata "
                         "'authorization: Bearer <token>')")
        if not permits(caller, method):
            roles = ", ".join(sorted(caller.roles))
            return _deny(handler, grpc.StatusCode.PERMISSION_DENIED,
                         f"caller {caller.name!r} (role {roles}) may not call {method}")
        CURRENT_CALLER.set(caller)
        return handler
