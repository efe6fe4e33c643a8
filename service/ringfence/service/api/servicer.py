"""The RiskService servicer: convert the request, call the engine, convert the answer."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from ringfence.service.api.convert import (
    Limits,
    to_account_profile,
    to_cluster,
    to_explanation,
    to_label,
    to_model_info,
    to_observation,
    to_score_response,
)
from ringfence.service.api.decision_stream import follow, to_decision_filter
from ringfence.service.api.errors import item_error, rich_status
from ringfence.service.api.wire import find_bad_field
from ringfence.service.core.decision_feed import DecisionFeed
from ringfence.service.core.engine import RiskEngine
from ringfence.service.core.errors import FieldViolation, InvalidInput, Rejected
from ringfence.service.core.model import Decision, Observation
from ringfence.service.core.ports import Clock
from ringfence.v1 import risk_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RiskService"].full_name
_YIELD_EVERY = 64  # batch items scored between yields to the event loop

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands in for a request protobuf could not parse, so the error can name the field."""

    field: str | None


def _deserializer(message: type[Message]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError:
            return Undecodable(find_bad_field(message.DESCRIPTOR, data))
    return deserialize


def _check_decoded(request: Any) -> None:
    if isinstance(request, Undecodable):
        field = request.field or "(message)"
        raise InvalidInput([FieldViolation(field, "is not valid protobuf "
                                           "(a string must be valid UTF-8)")])


def _rpc(method: Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Resp]]
         ) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Resp]]:
    """Reject undecodable requests and map domain errors to statuses (api/errors.py)."""
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Resp:
        try:
            _check_decoded(request)
            return await method(self, request, context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:  # every error leaves as a deliberate status
            status = rich_status(exc)
            await context.abort(status.code, status.details, status.trailing_metadata)
            raise  # abort raises; this line is never reached
    return wrapper


def _stream_rpc(method: Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[Resp]]
                ) -> Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """`_rpc` for server-streaming methods: an error ends the stream with its status."""
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
        try:
            _check_decoded(request)
            async for response in method(self, request, context):
                yield response
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            status = rich_status(exc)
            await context.abort(status.code, status.details, status.trailing_metadata)
            raise
    return wrapper


class RiskServicer:
    def __init__(self, engine: RiskEngine, clock: Clock, limits: Limits,
                 max_batch_size: int,
                 reload_model: Callable[[], Awaitable[str]] | None = None,
                 on_decision: Callable[[Decision], None] | None = None,
                 decision_feed: DecisionFeed | None = None,
                 heartbeat_s: float = 15.0) -> None:
        self._reload_model = reload_model
        self._feed = decision_feed  # StreamDecisions' source (fed through on_decision)
        self._heartbeat_s = heartbeat_s
        self._on_decision = on_decision  # observer hook (metrics, tracing)
        self._engine = engine
        self._clock = clock
        self._limits = limits
        self._max_batch = max_batch_size

    def _decide(self, obs: Observation) -> Decision:
        decision = self._engine.score(obs)
        if self._on_decision is not None:
            self._on_decision(decision)
        return decision

    @_rpc
    async def Score(self, request: pb.ScoreRequest,
                    context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        obs = to_observation(request, now=self._clock.now(), limits=self._limits)
        return to_score_response(self._decide(obs))

    @_rpc
    async def ScoreBatch(self, request: pb.ScoreBatchRequest,
                         context: grpc.aio.ServicerContext) -> pb.ScoreBatchResponse:
        if len(request.requests) > self._max_batch:
            raise InvalidInput([FieldViolation(
                "requests", f"has {len(request.requests)} items; at most {self._max_batch} "
                            "are allowed per call")])
        results = []
        for i, item in enumerate(request.requests):
            if i and i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let other calls progress during a large batch
            try:
                obs = to_observation(item, now=self._clock.now(), limits=self._limits)
                results.append(pb.ScoreBatchResult(
                    response=to_score_response(self._decide(obs))))
            except InvalidInput as exc:
                results.append(pb.ScoreBatchResult(error=item_error(
                    exc.prefixed(f"requests[{i}]"))))
            except Exception as exc:
                results.append(pb.ScoreBatchResult(error=item_error(exc)))
        return pb.ScoreBatchResponse(results=results)

    @_rpc
    async def GetAccount(self, request: pb.GetAccountRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetAccountResponse:
        _require(request.account_id, "account_id")
        summary, decision = self._engine.account(request.account_id)
        response = pb.GetAccountResponse(profile=to_account_profile(summary))
        if decision is not None:
            response.last_decision.CopyFrom(to_score_response(decision))
        return response

    @_rpc
    async def GetCluster(self, request: pb.GetClusterRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetClusterResponse:
        _require(request.cluster_id, "cluster_id")
        sample = _bounded(request.member_sample_size, "member_sample_size", 20, 1000)
        report, members = self._engine.analyst.cluster(request.cluster_id, sample)
        return pb.GetClusterResponse(cluster=to_cluster(report), member_sample=members)

    @_rpc
    async def ListClusters(self, request: pb.ListClustersRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListClustersResponse:
        limit = _bounded(request.page_size, "page_size", 50, 500)
        version, offset = _page_token(request.page_token)
        page, more, model_version = self._engine.analyst.list_clusters(
            request.min_risk, offset, limit, version)
        return pb.ListClustersResponse(
            clusters=[to_cluster(r) for r in page], model_version=model_version,
            next_page_token=f"{model_version}:{more}" if more is not None else "")

    @_rpc
    async def ExplainAccount(self, request: pb.ExplainAccountRequest,
                             context: grpc.aio.ServicerContext) -> pb.ExplainAccountResponse:
        _require(request.account_id, "account_id")
        nearest = _bounded(request.nearest, "nearest", 5, 50)
        return to_explanation(self._engine.analyst.explain(request.account_id, nearest,
                                                           self._clock.now()))

    @_rpc
    async def SubmitLabel(self, request: pb.SubmitLabelRequest,
                          context: grpc.aio.ServicerContext) -> pb.SubmitLabelResponse:
        label = to_label(request, now=self._clock.now())
        # Writing the label waits for its commit: off the event loop.
        await asyncio.to_thread(self._engine.submit_label, label)
        if self._feed is not None:
            self._feed.note_label(label)  # a benign label lifts a held decision now
        response = pb.SubmitLabelResponse()
        response.recorded_at.FromNanoseconds(round(label.created_at * 1e9))
        return response

    @_rpc
    async def GetModelInfo(self, request: pb.GetModelInfoRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetModelInfoResponse:
        return to_model_info(self._engine.analyst.model_info())

    @_rpc
    async def ReloadModel(self, request: pb.ReloadModelRequest,
                          context: grpc.aio.ServicerContext) -> pb.ReloadModelResponse:
        if self._reload_model is None:
            raise Rejected("this server has no model directory")
        return pb.ReloadModelResponse(model_version=await self._reload_model())

    @_stream_rpc
    async def StreamDecisions(self, request: pb.StreamDecisionsRequest,
                              context: grpc.aio.ServicerContext
                              ) -> AsyncIterator[pb.DecisionEvent]:
        wanted = to_decision_filter(request)
        if self._feed is None:
            raise Rejected("this server keeps no decision feed")
        async for event in follow(self._feed, wanted, snapshot=not request.skip_snapshot,
                                  heartbeat_s=self._heartbeat_s, clock=self._clock):
            yield event

    def handler(self) -> grpc.GenericRpcHandler:
        """Method handlers whose deserializers tolerate undecodable bytes (see Undecodable)."""
        def unary(method: Callable[..., Any], req: type[Message],
                  resp: type[Message]) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=_deserializer(req),
                response_serializer=resp.SerializeToString)

        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Score": unary(self.Score, pb.ScoreRequest, pb.ScoreResponse),
            "ScoreBatch": unary(self.ScoreBatch, pb.ScoreBatchRequest, pb.ScoreBatchResponse),
            "GetAccount": unary(self.GetAccount, pb.GetAccountRequest, pb.GetAccountResponse),
            "GetCluster": unary(self.GetCluster, pb.GetClusterRequest, pb.GetClusterResponse),
            "ListClusters": unary(self.ListClusters, pb.ListClustersRequest,
                                  pb.ListClustersResponse),
            "ExplainAccount": unary(self.ExplainAccount, pb.ExplainAccountRequest,
                                    pb.ExplainAccountResponse),
            "SubmitLabel": unary(self.SubmitLabel, pb.SubmitLabelRequest,
                                 pb.SubmitLabelResponse),
            "GetModelInfo": unary(self.GetModelInfo, pb.GetModelInfoRequest,
                                  pb.GetModelInfoResponse),
            "ReloadModel": unary(self.ReloadModel, pb.ReloadModelRequest,
                                 pb.ReloadModelResponse),
            "StreamDecisions": grpc.unary_stream_rpc_method_handler(
                self.StreamDecisions,
                request_deserializer=_deserializer(pb.StreamDecisionsRequest),
                response_serializer=pb.DecisionEvent.SerializeToString),
        })


def _require(value: str, field: str) -> None:
    if not value:
        raise InvalidInput([FieldViolation(field, "is required")])


def _bounded(value: int, field: str, default: int, most: int) -> int:
    if value > most:
        raise InvalidInput([FieldViolation(field, f"is {value}; at most {most} is allowed")])
    return value or default


def _page_token(token: str) -> tuple[str | None, int]:
    if not token:
        return None, 0
    version, _, offset = token.rpartition(":")
    if not version or not offset.isdigit():
        raise InvalidInput([FieldViolation("page_token", "is not a token this service gave")])
    return version, int(offset)
