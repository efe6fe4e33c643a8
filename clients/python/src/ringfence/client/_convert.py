"""Client dataclasses ⇄ `ringfence.v1` protobuf messages: the only module that knows wire types."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from ringfence.client.types import (
    AccountInfo,
    AccountProfile,
    Action,
    ActiveDecision,
    ClusterInfo,
    Decision,
    FieldViolation,
    Fingerprint,
    ItemError,
    Limit,
    LimitScope,
    LimitUnit,
    Reason,
    RequestContext,
    ScoreRequest,
    TaskCategory,
    TaskCount,
    WindowCounts,
)
from ringfence.v1 import risk_pb2 as pb

_E = TypeVar("_E", Action, TaskCategory, LimitScope, LimitUnit)

_STATUS_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def _enum(kind: type[_E], number: int) -> _E:
    # A newer server may send a value this client does not know yet; reading it as
    # UNSPECIFIED keeps old clients working instead of raising on a decision.
    try:
        return kind(number)
    except ValueError:
        return kind(0)


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _datetime(message: Message, name: str) -> datetime | None:
    # Unset and the epoch are different things (unset means "unknown" or "now").
    if not message.HasField(name):
        return None
    stamp: Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=UTC)


def status_code(number: int) -> grpc.StatusCode:
    """The `grpc.StatusCode` for a google.rpc.Code number (UNKNOWN for numbers not known)."""
    return _STATUS_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


# --- ScoreRequest --------------------------------------------------------------------------------


def fingerprint_to_proto(fingerprint: Fingerprint) -> pb.DeviceFingerprint:
    return pb.DeviceFingerprint(
        ja4=fingerprint.ja4,
        ja3=fingerprint.ja3,
        user_agent=fingerprint.user_agent,
        header_names=fingerprint.header_names,
        sdk_name=fingerprint.sdk_name,
        sdk_version=fingerprint.sdk_version,
        device_id=fingerprint.device_id,
        accept_language=fingerprint.accept_language,
        extra_fingerprints=fingerprint.extra_fingerprints,
        attributes=fingerprint.attributes,
    )


def fingerprint_from_proto(message: pb.DeviceFingerprint) -> Fingerprint:
    return Fingerprint(
        ja4=message.ja4,
        ja3=message.ja3,
        user_agent=message.user_agent,
        header_names=tuple(message.header_names),
        sdk_name=message.sdk_name,
        sdk_version=message.sdk_version,
        device_id=message.device_id,
        accept_language=message.accept_language,
        extra_fingerprints=dict(message.extra_fingerprints),
        attributes=dict(message.attributes),
    )


def context_to_proto(context: RequestContext) -> pb.RequestContext:
    message = pb.RequestContext(
        endpoint=context.endpoint,
        model=context.model,
        task_category=int(context.task_category),  # type: ignore[arg-type]
        input_tokens=context.input_tokens,
        output_tokens=context.output_tokens,
    )
    if context.event_time is not None:
        message.event_time.CopyFrom(_timestamp(context.event_time))
    if context.content_signature is not None:
        message.content_signature = context.content_signature
    return message


def context_from_proto(message: pb.RequestContext) -> RequestContext:
    return RequestContext(
        event_time=_datetime(message, "event_time"),
        endpoint=message.endpoint,
        model=message.model,
        task_category=_enum(TaskCategory, message.task_category),
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        content_signature=(
            message.content_signature if message.HasField("content_signature") else None
        ),
    )


def score_request_to_proto(request: ScoreRequest) -> pb.ScoreRequest:
    message = pb.ScoreRequest(
        account_id=request.account_id,
        api_key_id=request.api_key_id,
        org_id=request.org_id,
        client_ip=request.client_ip,
        forwarded_for=request.forwarded_for,
        fingerprint=fingerprint_to_proto(request.fingerprint),
        context=context_to_proto(request.context),
    )
    if request.account_created_at is not None:
        message.account_created_at.CopyFrom(_timestamp(request.account_created_at))
    return message


def score_request_from_proto(message: pb.ScoreRequest) -> ScoreRequest:
    return ScoreRequest(
        account_id=message.account_id,
        client_ip=message.client_ip,
        api_key_id=message.api_key_id,
        org_id=message.org_id,
        forwarded_for=tuple(message.forwarded_for),
        fingerprint=fingerprint_from_proto(message.fingerprint),
        context=context_from_proto(message.context),
        account_created_at=_datetime(message, "account_created_at"),
    )


# --- Decision ------------------------------------------------------------------------------------


def decision_to_proto(decision: Decision) -> pb.ScoreResponse:
    """Encode a decision; `fail_open` is client-side only and is not sent."""
    ttl = Duration()
    ttl.FromTimedelta(decision.decision_ttl)
    message = pb.ScoreResponse(
        risk_score=decision.risk_score,
        action=int(decision.action),  # type: ignore[arg-type]
        policy_action=int(decision.policy_action),  # type: ignore[arg-type]
        shadow=decision.shadow,
        route_to_fallback=decision.route_to_fallback,
        limit_key=decision.limit_key,
        limit_scope=int(decision.limit_scope),  # type: ignore[arg-type]
        suggested_limit=pb.Limit(
            requests_per_unit=decision.suggested_limit.requests_per_unit,
            unit=int(decision.suggested_limit.unit),  # type: ignore[arg-type]
        ),
        decision_ttl=ttl,
        reasons=[
            pb.Reason(code=reason.code, weight=reason.weight, message=reason.message)
            for reason in decision.reasons
        ],
        model_version=decision.model_version,
        policy_version=decision.policy_version,
        degraded=decision.degraded,
    )
    if decision.cluster is not None:
        message.cluster.cluster_id = decision.cluster.cluster_id
        message.cluster.size = decision.cluster.size
    if decision.decided_at is not None:
        message.decided_at.CopyFrom(_timestamp(decision.decided_at))
    return message


def decision_from_proto(message: pb.ScoreResponse) -> Decision:
    # The contract says the cluster is "empty until clustering is enabled": a present but
    # empty ClusterInfo means no cluster, just like an absent one.
    cluster = (
        ClusterInfo(cluster_id=message.cluster.cluster_id, size=message.cluster.size)
        if message.HasField("cluster") and message.cluster.cluster_id
        else None
    )
    return Decision(
        risk_score=message.risk_score,
        action=_enum(Action, message.action),
        policy_action=_enum(Action, message.policy_action),
        shadow=message.shadow,
        route_to_fallback=message.route_to_fallback,
        limit_key=message.limit_key,
        limit_scope=_enum(LimitScope, message.limit_scope),
        suggested_limit=Limit(
            requests_per_unit=message.suggested_limit.requests_per_unit,
            unit=_enum(LimitUnit, message.suggested_limit.unit),
        ),
        decision_ttl=(
            message.decision_ttl.ToTimedelta() if message.HasField("decision_ttl") else timedelta(0)
        ),
        reasons=tuple(
            Reason(code=reason.code, weight=reason.weight, message=reason.message)
            for reason in message.reasons
        ),
        cluster=cluster,
        model_version=message.model_version,
        policy_version=message.policy_version,
        degraded=message.degraded,
        decided_at=_datetime(message, "decided_at"),
    )


# --- ScoreBatch ----------------------------------------------------------------------------------


def item_error_to_proto(error: ItemError) -> pb.ItemError:
    return pb.ItemError(
        code=error.code.value[0],
        message=error.message,
        field_violations=[
            pb.FieldViolation(field=violation.field, description=violation.description)
            for violation in error.field_violations
        ],
    )


def item_error_from_proto(message: pb.ItemError) -> ItemError:
    return ItemError(
        code=status_code(message.code),
        message=message.message,
        field_violations=tuple(
            FieldViolation(field=violation.field, description=violation.description)
            for violation in message.field_violations
        ),
    )


def batch_request_to_proto(requests: Iterable[ScoreRequest]) -> pb.ScoreBatchRequest:
    return pb.ScoreBatchRequest(requests=[score_request_to_proto(r) for r in requests])


def batch_response_to_proto(results: Iterable[Decision | ItemError]) -> pb.ScoreBatchResponse:
    response = pb.ScoreBatchResponse()
    for result in results:
        if isinstance(result, ItemError):
            response.results.add(error=item_error_to_proto(result))
        else:
            response.results.add(response=decision_to_proto(result))
    return response


def batch_response_from_proto(message: pb.ScoreBatchResponse) -> list[Decision | ItemError]:
    results: list[Decision | ItemError] = []
    for result in message.results:
        if result.WhichOneof("outcome") == "error":
            results.append(item_error_from_proto(result.error))
        else:
            # An empty oneof cannot come from a conforming server; decoding it as the
            # default response (UNSPECIFIED action) lets the caller's policy decide.
            results.append(decision_from_proto(result.response))
    return results


# --- GetAccount ----------------------------------------------------------------------------------


def profile_to_proto(profile: AccountProfile) -> pb.AccountProfile:
    message = pb.AccountProfile(
        account_id=profile.account_id,
        total_requests=profile.total_requests,
        requests=pb.WindowCounts(
            last_5m=profile.requests.last_5m,
            last_1h=profile.requests.last_1h,
            last_24h=profile.requests.last_24h,
        ),
        distinct_ips=profile.distinct_ips,
        distinct_prefixes=profile.distinct_prefixes,
        distinct_asns=profile.distinct_asns,
        distinct_countries=profile.distinct_countries,
        distinct_devices=profile.distinct_devices,
        task_mix=[
            pb.TaskCount(
                task_category=int(count.task_category),  # type: ignore[arg-type]
                requests=count.requests,
            )
            for count in profile.task_mix
        ],
        input_tokens=profile.input_tokens,
        output_tokens=profile.output_tokens,
        anonymized_share=profile.anonymized_share,
    )
    if profile.first_seen is not None:
        message.first_seen.CopyFrom(_timestamp(profile.first_seen))
    if profile.last_seen is not None:
        message.last_seen.CopyFrom(_timestamp(profile.last_seen))
    return message


def profile_from_proto(message: pb.AccountProfile) -> AccountProfile:
    return AccountProfile(
        account_id=message.account_id,
        first_seen=_datetime(message, "first_seen"),
        last_seen=_datetime(message, "last_seen"),
        total_requests=message.total_requests,
        requests=WindowCounts(
            last_5m=message.requests.last_5m,
            last_1h=message.requests.last_1h,
            last_24h=message.requests.last_24h,
        ),
        distinct_ips=message.distinct_ips,
        distinct_prefixes=message.distinct_prefixes,
        distinct_asns=message.distinct_asns,
        distinct_countries=message.distinct_countries,
        distinct_devices=message.distinct_devices,
        task_mix=tuple(
            TaskCount(
                task_category=_enum(TaskCategory, count.task_category), requests=count.requests
            )
            for count in message.task_mix
        ),
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        anonymized_share=message.anonymized_share,
    )


def account_info_to_proto(info: AccountInfo) -> pb.GetAccountResponse:
    message = pb.GetAccountResponse(profile=profile_to_proto(info.profile))
    if info.last_decision is not None:
        message.last_decision.CopyFrom(decision_to_proto(info.last_decision))
    return message


def account_info_from_proto(message: pb.GetAccountResponse) -> AccountInfo:
    return AccountInfo(
        profile=profile_from_proto(message.profile),
        last_decision=(
            decision_from_proto(message.last_decision)
            if message.HasField("last_decision")
            else None
        ),
    )


# --- StreamDecisions -----------------------------------------------------------------------------


def stream_request_to_proto(
    min_action: Action, scopes: Iterable[LimitScope], *, snapshot: bool
) -> pb.StreamDecisionsRequest:
    return pb.StreamDecisionsRequest(
        min_action=int(min_action),  # type: ignore[arg-type]
        scopes=[int(scope) for scope in scopes],  # type: ignore[misc]
        skip_snapshot=not snapshot,
    )


def active_decision_to_proto(decision: ActiveDecision) -> pb.ActiveDecision:
    ttl = Duration()
    ttl.FromTimedelta(decision.ttl)
    message = pb.ActiveDecision(
        scope=int(decision.scope),  # type: ignore[arg-type]
        limit_key=decision.limit_key,
        subject_id=decision.subject_id,
        action=int(decision.action),  # type: ignore[arg-type]
        risk_score=decision.risk_score,
        suggested_limit=pb.Limit(
            requests_per_unit=decision.suggested_limit.requests_per_unit,
            unit=int(decision.suggested_limit.unit),  # type: ignore[arg-type]
        ),
        ttl=ttl,
        reason_codes=decision.reason_codes,
        model_version=decision.model_version,
        policy_version=decision.policy_version,
    )
    if decision.expires_at is not None:
        message.expires_at.CopyFrom(_timestamp(decision.expires_at))
    if decision.decided_at is not None:
        message.decided_at.CopyFrom(_timestamp(decision.decided_at))
    return message


def active_decision_from_proto(message: pb.ActiveDecision) -> ActiveDecision:
    return ActiveDecision(
        limit_key=message.limit_key,
        action=_enum(Action, message.action),
        scope=_enum(LimitScope, message.scope),
        subject_id=message.subject_id,
        risk_score=message.risk_score,
        suggested_limit=Limit(
            requests_per_unit=message.suggested_limit.requests_per_unit,
            unit=_enum(LimitUnit, message.suggested_limit.unit),
        ),
        ttl=message.ttl.ToTimedelta() if message.HasField("ttl") else timedelta(0),
        expires_at=_datetime(message, "expires_at"),
        decided_at=_datetime(message, "decided_at"),
        reason_codes=tuple(message.reason_codes),
        model_version=message.model_version,
        policy_version=message.policy_version,
    )
