"""Envoy's external authorization and rate limit services over the same engine.

* ``envoy.service.auth.v3.Authorization/Check``: the request's source address and headers →
  ``Gateway.check`` → ``CheckResponse`` (OK with x-ringfence-* headers, or a denied response),
  always with ``dynamic_metadata["ringfence"]`` for the ratelimit filter (docs/envoy.md).
* ``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``: each descriptor is either
  pre-scored (a ``limit_key`` entry taken from ext_authz metadata, counted against the
  descriptor's ``limit`` override) or scored here (an ``account`` entry plus fingerprint
  entries), then charged to a fixed-window ``HitCounter`` keyed by domain and limit key.

Both fail open: neither ever answers with an error status for a request it cannot judge.
Protobuf stays in this module; the judging is in api/gateway.py and core/.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from envoy.type.v3 import ratelimit_unit_pb2
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2

from ringfence.service.api.gateway import (
    API_KEY_HEADER,
    DEVICE_ID_HEADER,
    JA3_HEADER,
    JA4_HEADER,
    LIMIT_KEY,
    MODEL_HEADER,
    ORG_HEADER,
    SDK_HEADER,
    Gateway,
    GatewayRequest,
    Verdict,
)
from ringfence.service.core.errors import InvalidInput
from ringfence.service.core.model import Decision
from ringfence.service.core.ports import Clock
from ringfence.service.core.ratelimit import Budget, HitCounter, LimitStatus, charge

log = logging.getLogger(__name__)

AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
RATE_LIMIT_SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
METADATA_KEY = "ringfence"  # the key of our Struct inside the filter's metadata namespace

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_DENY_CODES = {400: code_pb2.INVALID_ARGUMENT, 429: code_pb2.RESOURCE_EXHAUSTED}
_WINDOW_S = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400, "WEEK": 7 * 86400,
             "MONTH": 30 * 86400, "YEAR": 365 * 86400}
_Code = rls_pb2.RateLimitResponse.Code
_Unit = rls_pb2.RateLimitResponse.RateLimit.Unit

# RateLimitService descriptor entry keys that carry request attributes (for scoring).
# Values become the headers the gateway mapping reads; "remote_address" is the key Envoy's
# remote_address action uses.
DESCRIPTOR_HEADERS = {
    "ja4": JA4_HEADER, "ja3": JA3_HEADER, "user_agent": "user-agent",
    "accept_language": "accept-language", "device_id": DEVICE_ID_HEADER, "sdk": SDK_HEADER,
    "api_key_id": API_KEY_HEADER, "org": ORG_HEADER, "model": MODEL_HEADER,
}
ACCOUNT_KEY = "account"
ADDRESS_KEYS = ("client_ip", "remote_address")
ENDPOINT_KEYS = ("endpoint", "path")
LIMIT_KEY_KEY = "limit_key"


# --- ext_authz ---------------------------------------------------------------------------

def gateway_request(check: external_auth_pb2.CheckRequest) -> GatewayRequest:
    """The parts of a CheckRequest the gateway mapping reads.

    With ``encode_raw_headers: true`` Envoy sends ``header_map`` (a list, in the order the
    client sent the headers); otherwise ``headers`` (a map, order lost).
    """
    attrs = check.attributes
    http = attrs.request.http
    source = attrs.source.address
    peer = source.socket_address.address if source.HasField("socket_address") else ""
    if http.header_map.headers:
        headers = tuple((h.key.lower(), h.raw_value.decode("utf-8", "replace") or h.value)
                        for h in http.header_map.headers)
        ordered = True
    else:
        headers = tuple((k.lower(), v) for k, v in http.headers.items())
        ordered = False
    return GatewayRequest(peer=peer, headers=headers, path=http.path.partition("?")[0],
                          header_order_known=ordered)


def _struct(values: dict[str, object]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def check_response(v: Verdict) -> external_auth_pb2.CheckResponse:
    """A verdict as Envoy's CheckResponse."""
    response = external_auth_pb2.CheckResponse(
        dynamic_metadata=_struct({METADATA_KEY: dict(v.metadata)}))
    headers = [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=value),
                                          append_action=_OVERWRITE)
               for k, value in v.headers]
    if v.allowed:
        response.status.code = code_pb2.OK
        response.ok_response.headers.extend(headers)
        response.ok_response.headers_to_remove.extend(v.headers_to_remove)
    else:
        response.status.code = _DENY_CODES.get(v.status, code_pb2.PERMISSION_DENIED)
        response.denied_response.status.code = v.status  # type: ignore[assignment]
        response.denied_response.headers.extend(headers)
        response.denied_response.body = v.body
    return response


class AuthorizationServicer:
    """envoy.service.auth.v3.Authorization: Check → gateway verdict."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def Check(self, request: external_auth_pb2.CheckRequest,
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        return check_response(self._gateway.check(gateway_request(request), transport="envoy"))


# --- rate limit service -------------------------------------------------------------------

def _override(d: ratelimit_pb2.RateLimitDescriptor) -> tuple[Budget, str] | None:
    if not d.HasField("limit") or d.limit.unit not in ratelimit_unit_pb2.RateLimitUnit.values():
        return None  # an enum value this version does not know: no override
    unit = ratelimit_unit_pb2.RateLimitUnit.Name(d.limit.unit)
    if unit not in _WINDOW_S:
        return None
    return Budget(d.limit.requests_per_unit, _WINDOW_S[unit]), unit


def _suggested(decision: Decision) -> tuple[Budget, str]:
    unit = decision.suggested_limit.unit.name
    return Budget(decision.suggested_limit.requests_per_unit, _WINDOW_S[unit]), unit


def _descriptor_request(entries: dict[str, str], account_header: str) -> GatewayRequest:
    peer = next((entries[k] for k in ADDRESS_KEYS if k in entries), "")
    path = next((entries[k] for k in ENDPOINT_KEYS if k in entries), "")
    headers = [(account_header, entries[ACCOUNT_KEY])]
    headers += [(header, entries[key]) for key, header in DESCRIPTOR_HEADERS.items()
                if key in entries]
    return GatewayRequest(peer=peer, headers=tuple(headers), path=path,
                          header_order_known=False)


def _status(result: LimitStatus | None, unit: str,
            shadow: bool) -> rls_pb2.RateLimitResponse.DescriptorStatus:
    if result is None:
        return rls_pb2.RateLimitResponse.DescriptorStatus(code=_Code.OK)
    status = rls_pb2.RateLimitResponse.DescriptorStatus(
        code=_Code.OVER_LIMIT if result.over_limit and not shadow else _Code.OK,
        current_limit=rls_pb2.RateLimitResponse.RateLimit(
            requests_per_unit=result.budget.requests, unit=_Unit.Value(unit)),
        limit_remaining=result.remaining)
    status.duration_until_reset.FromNanoseconds(round(result.reset_in_s * 1e9))
    return status


class RateLimitServicer:
    """envoy.service.ratelimit.v3.RateLimitService: ShouldRateLimit over a HitCounter.

    In shadow mode (the policy's) nothing is reported over the limit; what would have been
    is in the response's dynamic metadata (``ringfence.shadow_over_limit``).
    """

    def __init__(self, gateway: Gateway, counter: HitCounter, clock: Clock) -> None:
        self._gateway = gateway
        self._counter = counter
        self._clock = clock

    async def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest,
                              context: grpc.aio.ServicerContext) -> rls_pb2.RateLimitResponse:
        try:
            return await self._should_rate_limit(request)
        except Exception:
            log.exception("rate limit check failed; allowed")
            return rls_pb2.RateLimitResponse(overall_code=_Code.OK)

    async def _should_rate_limit(self, request: rls_pb2.RateLimitRequest
                                 ) -> rls_pb2.RateLimitResponse:
        now = self._clock.now()
        shadow = self._gateway.shadow
        statuses = []
        results: list[LimitStatus] = []
        scored: Decision | None = None
        for d in request.descriptors:
            entries = {e.key: e.value for e in d.entries}
            hits = d.hits_addend.value if d.HasField("hits_addend") else request.hits_addend
            budget = _override(d)
            key = entries.get(LIMIT_KEY_KEY, "")
            if not key and entries.get(ACCOUNT_KEY):
                try:
                    decision = self._gateway.score(_descriptor_request(
                        entries, self._gateway.config.account_header))
                except InvalidInput as exc:
                    log.warning("rate limit descriptor not scored: invalid input; allowed",
                                extra={"fields": sorted({v.field for v in exc.violations})})
                    statuses.append(_status(None, "", shadow))
                    continue
                scored = scored or decision
                key = decision.limit_key
                budget = budget or _suggested(decision)
            if not key or budget is None:  # nothing ringfence knows how to count
                statuses.append(_status(None, "", shadow))
                continue
            result = await charge(self._counter, f"{request.domain}\x1f{key}", budget[0],
                                  hits, now)
            results.append(result)
            statuses.append(_status(result, budget[1], shadow))
        over = [r for r in results if r.over_limit]
        response = rls_pb2.RateLimitResponse(
            overall_code=_Code.OVER_LIMIT if over and not shadow else _Code.OK,
            statuses=statuses)
        if over and not shadow:
            retry = max(1, math.ceil(max(r.reset_in_s for r in over)))
            response.response_headers_to_add.add(key="retry-after", value=str(retry))
        elif results:
            remaining = min(r.remaining for r in results)
            response.request_headers_to_add.add(key="x-ringfence-limit-remaining",
                                                value=str(remaining))
            if scored is not None:
                response.request_headers_to_add.add(key=LIMIT_KEY, value=scored.limit_key)
        if shadow and over:
            response.dynamic_metadata.update({METADATA_KEY: {"shadow_over_limit": True}})
        return response


def _unary(method: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
           request: type[Message], response: type[Message]) -> grpc.RpcMethodHandler:
    """A handler whose request bytes protobuf cannot parse get INVALID_ARGUMENT (the generated
    registration lets the DecodeError escape: UNKNOWN, logged as an unexpected error)."""
    undecodable = object()

    def deserialize(data: bytes) -> Any:
        try:
            return request.FromString(data)
        except DecodeError:
            return undecodable

    async def call(message: Any, context: grpc.aio.ServicerContext) -> Any:
        if message is undecodable:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"the request is not a valid {request.DESCRIPTOR.full_name}")
        return await method(message, context)

    return grpc.unary_unary_rpc_method_handler(call, request_deserializer=deserialize,
                                               response_serializer=response.SerializeToString)


def add_to_server(authorization: AuthorizationServicer, rate_limit: RateLimitServicer,
                  server: grpc.aio.Server) -> None:
    """Register both Envoy services, as the generated registration functions do but with
    request parsing that answers INVALID_ARGUMENT to bytes that are not the message."""
    for service, handlers in (
        (AUTHORIZATION_SERVICE, {"Check": _unary(
            authorization.Check, external_auth_pb2.CheckRequest,
            external_auth_pb2.CheckResponse)}),
        (RATE_LIMIT_SERVICE, {"ShouldRateLimit": _unary(
            rate_limit.ShouldRateLimit, rls_pb2.RateLimitRequest,
            rls_pb2.RateLimitResponse)}),
    ):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service,
                                                                               handlers),))
        server.add_registered_method_handlers(service, handlers)
