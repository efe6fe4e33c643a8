"""Replays events against a running ringfence server over gRPC (ScoreBatch in chunks).

A server judges event times by its own clock (``max_clock_skew_s`` ahead, ``max_event_age_s``
behind), so a log cannot be sent with its original times. Each time ``t`` is mapped to
``start + (t − t0) / speed`` (``t0`` the first event's time, ``start`` the wall clock when the
replay begins; ``account_created_at`` moves the same way) and the event is sent once that
moment has come. ``speed`` 1 replays in real time; a larger speed compresses time, so every
rate window on the server sees ``speed`` times the real rate — use it to exercise a deployment,
and the in-process replay (exact event time) to measure detection."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ringfence.service.evaluation.baselines import FixedWindowLimit
from ringfence.service.evaluation.events import EventFormatError, LabelledEvent
from ringfence.service.evaluation.replay import DecisionRecord, baseline_verdicts
from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc

MAX_CHUNK = 1000  # the server's default max_batch_size


class RemoteError(RuntimeError):
    """The server could not be reached or refused a whole batch."""


def _action_name(value: int) -> str:
    return pb.Action.Name(value).removeprefix("ACTION_")


def _set_time(ts: Timestamp, t: float) -> None:
    seconds = int(t // 1)
    ts.seconds = seconds
    ts.nanos = min(999_999_999, round((t - seconds) * 1e9))


@dataclass(slots=True)
class RemoteReplay:
    """One replay against ``target`` (host:port). ``errors`` counts items the server
    rejected (skipped when ``skip_invalid``, else the replay stops with EventFormatError)."""

    target: str
    speed: float = 1.0
    chunk: int = 500
    timeout_s: float = 30.0
    baselines: list[FixedWindowLimit] = field(default_factory=list)
    skip_invalid: bool = False
    source: str = "<events>"
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    errors: int = 0

    def run(self, events: Iterable[LabelledEvent]) -> Iterator[DecisionRecord]:
        if self.speed <= 0:
            raise ValueError("speed must be positive")
        if not 1 <= self.chunk <= MAX_CHUNK:
            raise ValueError(f"chunk must be in 1..{MAX_CHUNK}")
        with grpc.insecure_channel(self.target) as channel:
            stub = risk_pb2_grpc.RiskServiceStub(channel)
            pending: list[tuple[LabelledEvent, pb.ScoreRequest]] = []
            t0 = start = 0.0
            first = True
            for event in events:
                if first:
                    t0, start, first = event.event_time, self.clock(), False
                due = start + (event.event_time - t0) / self.speed
                wait = due - self.clock()
                if wait > 0:
                    yield from self._send(stub, pending)
                    pending = []
                    self.sleep(wait)
                request = pb.ScoreRequest()
                request.CopyFrom(event.request)
                _set_time(request.context.event_time, due)
                if request.HasField("account_created_at"):
                    created = request.account_created_at
                    _set_time(created, start + (created.seconds + created.nanos / 1e9 - t0)
                              / self.speed)
                pending.append((event, request))
                if len(pending) >= self.chunk:
                    yield from self._send(stub, pending)
                    pending = []
            yield from self._send(stub, pending)

    def _send(self, stub: risk_pb2_grpc.RiskServiceStub,
              items: list[tuple[LabelledEvent, pb.ScoreRequest]]) -> Iterator[DecisionRecord]:
        if not items:
            return
        try:
            response = stub.ScoreBatch(pb.ScoreBatchRequest(requests=[r for _, r in items]),
                                       timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            name = code.name if code is not None else "UNKNOWN"
            raise RemoteError(f"{self.target}: ScoreBatch failed: {name}: {details}") from None
        for (event, _), result in zip(items, response.results, strict=True):
            if result.HasField("error"):
                if not self.skip_invalid:
                    raise EventFormatError(self.source, event.line,
                                           f"server rejected the request: "
                                           f"{result.error.message}")
                self.errors += 1
                continue
            r = result.response
            yield DecisionRecord(
                account=event.request.account_id, event_time=event.event_time,
                score=r.risk_score, action=_action_name(r.action),
                policy_action=_action_name(r.policy_action),
                reasons=tuple(x.code for x in r.reasons), cluster=r.cluster.cluster_id,
                label=event.label, campaign=event.campaign, group=event.group,
                segment=event.segment, baselines=baseline_verdicts(self.baselines, event))
