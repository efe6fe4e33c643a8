"""A fake ringfence service, to test your own code (a rate limiter, a gateway) against the client.

`FakeRiskServer` is a real gRPC server on 127.0.0.1 (a free port) whose answers you script.
It runs on threads, so it serves `Client` and `AsyncClient` alike::

    from ringfence.client import Action, Client, Decision, ScoreRequest
    from ringfence.client.testing import FakeRiskServer

    def test_gateway_rejects_a_blocked_account() -> None:
        with FakeRiskServer() as fake, Client(fake.target, timeout=1.0) as client:
            fake.set_decision("mallory", Decision(risk_score=0.97, action=Action.BLOCK,
                                                  policy_action=Action.BLOCK))
            gateway = MyGateway(client)
            assert gateway.handle(account="mallory", ip="203.0.113.7").status == 429
            assert fake.requests[0].client_ip == "203.0.113.7"

    fake.fail_next(3)   # the next 3 calls answer UNAVAILABLE: exercise your fail-open path
    fake.delay(0.2)     # every call answers after 0.2 s: exercise your deadline

It also serves `StreamDecisions`, so a `DecisionCache` can follow it. Push decisions to every
subscribed cache (and to the snapshot of later ones) and lift them again::

    with FakeRiskServer() as fake, Client(fake.target) as client, DecisionCache(client) as cache:
        fake.push_decision(ActiveDecision(limit_key="account:mallory", action=Action.BLOCK,
                                          ttl=timedelta(minutes=5)))
        cache.wait_for_events(1, timeout=5)
        assert cache.lookup(account_id="mallory").action is Action.BLOCK
        fake.lift_decision("account:mallory")

    fake.end_streams()  # drop open decision streams: exercise your reconnect path

Unscripted accounts get ALLOW (risk 0, limit key "account:<id>"). Like the real service, the
fake rejects a request without `account_id` or with a `client_ip` that is not an IP address
(INVALID_ARGUMENT with field violations), and `GetAccount` knows the accounts it has scored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import NoReturn, Self

import grpc
from google.protobuf import any_pb2, duration_pb2

from ringfence.client import _convert
from ringfence.client.types import (
    AccountInfo,
    AccountProfile,
    Action,
    ActiveDecision,
    Decision,
    FieldViolation,
    ItemError,
    LimitScope,
    ScoreRequest,
)
from ringfence.v1 import risk_pb2, risk_pb2_grpc

try:  # optional, as in the client: with it, violations also travel as google.rpc.BadRequest
    from google.rpc import error_details_pb2, status_pb2
except ImportError:  # pragma: no cover - exercised only where the package is absent
    error_details_pb2 = None  # type: ignore[assignment]
    status_pb2 = None  # type: ignore[assignment]

__all__ = ["FakeRiskServer"]

_MAX_BATCH = 1000
_MAX_ID_LENGTH = 256


@dataclasses.dataclass(frozen=True)
class _Failure:
    code: grpc.StatusCode
    message: str
    field_violations: tuple[FieldViolation, ...]


@dataclasses.dataclass
class _Seen:
    requests: int
    last_decision: Decision


_END = object()  # ends one decision stream normally
_SCOPE_PREFIXES = {"account:": LimitScope.ACCOUNT, "cluster:": LimitScope.CLUSTER}


@dataclasses.dataclass(eq=False)
class _Subscriber:
    min_action: Action
    scopes: frozenset[LimitScope]
    inbox: queue.Queue[object] = dataclasses.field(default_factory=queue.Queue)

    def wants(self, decision: ActiveDecision) -> bool:
        return decision.action >= self.min_action and (
            not self.scopes or decision.scope in self.scopes
        )


def _stream_filter(request: risk_pb2.StreamDecisionsRequest) -> tuple[Action, list[FieldViolation]]:
    violations: list[FieldViolation] = []
    min_action = Action.THROTTLE
    if request.min_action == risk_pb2.ACTION_ALLOW or request.min_action not in set(Action):
        violations.append(FieldViolation("min_action", "must be THROTTLE, CHALLENGE or BLOCK"))
    elif request.min_action != risk_pb2.ACTION_UNSPECIFIED:
        min_action = Action(request.min_action)
    for index, scope in enumerate(request.scopes):
        if scope not in (LimitScope.ACCOUNT, LimitScope.CLUSTER):
            violations.append(FieldViolation(f"scopes[{index}]", "must be ACCOUNT or CLUSTER"))
    return min_action, violations


def _validate(request: ScoreRequest, prefix: str = "") -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not request.account_id:
        violations.append(FieldViolation(f"{prefix}account_id", "is required"))
    elif len(request.account_id) > _MAX_ID_LENGTH:
        violations.append(
            FieldViolation(f"{prefix}account_id", f"must be at most {_MAX_ID_LENGTH} characters")
        )
    try:
        ipaddress.ip_address(request.client_ip)
    except ValueError:
        violations.append(FieldViolation(f"{prefix}client_ip", "must be an IPv4 or IPv6 address"))
    return violations


def _describe(violations: Iterable[FieldViolation]) -> str:
    # The service's message format, which clients without google.rpc parse back.
    return "; ".join(f"{v.field}: {v.description}" for v in violations)


def _abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    violations: tuple[FieldViolation, ...] = (),
) -> NoReturn:
    if violations and status_pb2 is not None and error_details_pb2 is not None:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
    context.abort(code, message)
    raise AssertionError("ServicerContext.abort returned")  # it always raises


class FakeRiskServer:
    """An in-process RiskService with scriptable answers; see the module docstring.

    Use it as a context manager (or call `start()`/`stop()`); `target` is "127.0.0.1:PORT".
    All methods are thread-safe.
    """

    def __init__(self, *, max_workers: int = 8, heartbeat_interval: float = 5.0) -> None:
        """`max_workers` bounds concurrent calls (each open decision stream holds one);
        decision streams send a heartbeat after `heartbeat_interval` seconds of silence."""
        self._max_workers = max_workers
        self._heartbeat_interval = heartbeat_interval
        self._streams_changed = threading.Condition(threading.Lock())
        self._active: dict[str, tuple[ActiveDecision, float]] = {}  # with monotonic expiry
        self._subscribers: list[_Subscriber] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._port: int | None = None
        self._default = Decision(action=Action.ALLOW, policy_action=Action.ALLOW)
        self._decisions: dict[str, Decision] = {}
        self._accounts: dict[str, AccountInfo] = {}
        self._seen: dict[str, _Seen] = {}
        self._failures: deque[_Failure] = deque()
        self._delay = 0.0
        self._requests: list[ScoreRequest] = []
        self._calls: list[str] = []
        self._metadata: list[dict[str, str | bytes]] = []

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving. After a `stop()` it serves again on the same port."""
        if self._server is not None:
            raise RuntimeError("FakeRiskServer is already running")
        self._stopping.clear()
        self._executor = ThreadPoolExecutor(
            max_workers=self._max_workers, thread_name_prefix="fake-ringfence"
        )
        server = grpc.server(self._executor)
        risk_pb2_grpc.add_RiskServiceServicer_to_server(_Servicer(self), server)
        port = server.add_insecure_port(f"127.0.0.1:{self._port or 0}")
        if port == 0:  # older grpcio reports a failed bind this way instead of raising
            raise RuntimeError(f"FakeRiskServer could not bind 127.0.0.1:{self._port or 0}")
        server.start()
        self._server, self._port = server, port
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; clients then see UNAVAILABLE. Delayed calls are cut short."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self.end_streams()
        server.stop(grace).wait()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on (once started)."""
        if self._port is None:
            raise RuntimeError("FakeRiskServer has not been started")
        return self._port

    @property
    def target(self) -> str:
        """What to pass to `Client`: "127.0.0.1:PORT"."""
        return f"127.0.0.1:{self.port}"

    # --- scripting -------------------------------------------------------------------------------

    def set_default(self, decision: Decision) -> None:
        """The decision for accounts without their own (initially ALLOW, risk 0).

        An empty `limit_key` is answered as "account:<id>" with scope ACCOUNT.
        """
        with self._lock:
            self._default = decision

    def set_decision(self, account_id: str, decision: Decision) -> None:
        """The decision for every request of `account_id` (limit key filled in as above)."""
        with self._lock:
            self._decisions[account_id] = decision

    def set_account(self, info: AccountInfo) -> None:
        """What `GetAccount` answers for `info.profile.account_id`."""
        with self._lock:
            self._accounts[info.profile.account_id] = info

    def fail_next(
        self,
        n: int = 1,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        *,
        message: str | None = None,
        field_violations: Iterable[FieldViolation] = (),
    ) -> None:
        """Answer the next `n` calls (any method) with `code` instead of serving them.

        For INVALID_ARGUMENT pass `field_violations`; the message defaults to the service's
        "field: description; ..." format.
        """
        violations = tuple(field_violations)
        if message is None:
            message = _describe(violations) if violations else f"fake failure: {code.name}"
        with self._lock:
            self._failures.extend(_Failure(code, message, violations) for _ in range(n))

    def delay(self, seconds: float) -> None:
        """Answer every following call after `seconds` (0 to stop delaying)."""
        with self._lock:
            self._delay = seconds

    def reset(self) -> None:
        """Forget all scripting and everything recorded."""
        with self._lock:
            self._default = Decision(action=Action.ALLOW, policy_action=Action.ALLOW)
            self._decisions.clear()
            self._accounts.clear()
            self._seen.clear()
            self._failures.clear()
            self._delay = 0.0
            self._active.clear()
            self._requests.clear()
            self._calls.clear()
            self._metadata.clear()

    def push_decision(self, decision: ActiveDecision) -> None:
        """Make `decision` active: subscribed caches get an UPSERT, later ones get it in their
        snapshot, until its `ttl` (counted from now, must be > 0) runs out. An empty `scope`
        or `subject_id` is filled in from the limit key ("account:<id>" / "cluster:<id>")."""
        if decision.ttl.total_seconds() <= 0:
            raise ValueError("push_decision: ttl must be positive")
        for prefix, scope in _SCOPE_PREFIXES.items():
            if decision.limit_key.startswith(prefix):
                decision = dataclasses.replace(
                    decision,
                    scope=decision.scope or scope,
                    subject_id=decision.subject_id or decision.limit_key.removeprefix(prefix),
                )
        with self._lock:
            self._active[decision.limit_key] = (
                decision,
                time.monotonic() + decision.ttl.total_seconds(),
            )
        with self._streams_changed:
            for subscriber in self._subscribers:
                if subscriber.wants(decision):
                    subscriber.inbox.put((risk_pb2.DecisionEvent.KIND_UPSERT, decision))

    def lift_decision(self, limit_key: str) -> None:
        """Drop the active decision for `limit_key`; subscribed caches get a DELETE."""
        with self._lock:
            held = self._active.pop(limit_key, None)
        if held is None:
            return
        with self._streams_changed:
            for subscriber in self._subscribers:
                if subscriber.wants(held[0]):
                    subscriber.inbox.put((risk_pb2.DecisionEvent.KIND_DELETE, held[0]))

    def end_streams(self, code: grpc.StatusCode | None = None) -> None:
        """End every open decision stream, normally or with `code` (e.g. UNAVAILABLE)."""
        ending = _END if code is None else _Failure(code, f"fake stream end: {code.name}", ())
        with self._streams_changed:
            for subscriber in self._subscribers:
                subscriber.inbox.put(ending)
            self._subscribers.clear()
            self._streams_changed.notify_all()

    def wait_for_subscribers(self, count: int = 1, timeout: float | None = None) -> bool:
        """Block until at least `count` decision streams are open (past their snapshot)."""
        with self._streams_changed:
            return self._streams_changed.wait_for(lambda: len(self._subscribers) >= count, timeout)

    @property
    def active_decisions(self) -> list[ActiveDecision]:
        """The decisions pushed and neither lifted nor expired."""
        now = time.monotonic()
        with self._lock:
            return [d for d, expires in self._active.values() if expires > now]

    # --- records ---------------------------------------------------------------------------------

    @property
    def requests(self) -> list[ScoreRequest]:
        """Every ScoreRequest received, failed attempts and batch items included, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> list[str]:
        """The RPC method names received ("Score", "ScoreBatch", "GetAccount"), in order."""
        with self._lock:
            return list(self._calls)

    @property
    def metadata(self) -> list[dict[str, str | bytes]]:
        """The invocation metadata of each call (e.g. "authorization"), in call order."""
        with self._lock:
            return [dict(m) for m in self._metadata]

    # --- serving (called by _Servicer on server threads) ----------------------------------------

    def _begin(
        self, method: str, requests: list[ScoreRequest], context: grpc.ServicerContext
    ) -> None:
        with self._lock:
            self._calls.append(method)
            self._metadata.append(dict(context.invocation_metadata()))
            self._requests.extend(requests)
            delay = self._delay
            failure = self._failures.popleft() if self._failures else None
        if delay > 0:
            # Waiting on the stop event lets stop() end delayed calls at once.
            self._stopping.wait(delay)
        if failure is not None:
            _abort(context, failure.code, failure.message, failure.field_violations)

    def _decide(self, request: ScoreRequest) -> Decision:
        with self._lock:
            decision = self._decisions.get(request.account_id, self._default)
            if not decision.limit_key:
                decision = dataclasses.replace(
                    decision,
                    limit_key=f"account:{request.account_id}",
                    limit_scope=decision.limit_scope or LimitScope.ACCOUNT,
                )
            seen = self._seen.get(request.account_id)
            if seen is None:
                self._seen[request.account_id] = _Seen(requests=1, last_decision=decision)
            else:
                seen.requests += 1
                seen.last_decision = decision
        return decision

    def _subscribe(
        self, min_action: Action, scopes: frozenset[LimitScope], snapshot: bool
    ) -> tuple[_Subscriber, list[tuple[ActiveDecision, float]]]:
        subscriber = _Subscriber(min_action, scopes)
        now = time.monotonic()
        with self._streams_changed:  # pushes wait, so none falls between snapshot and queue
            with self._lock:
                held = [
                    (d, expires - now)
                    for d, expires in self._active.values()
                    if snapshot and expires > now and subscriber.wants(d)
                ]
            self._subscribers.append(subscriber)
            self._streams_changed.notify_all()
        return subscriber, held

    def _unsubscribe(self, subscriber: _Subscriber) -> None:
        with self._streams_changed:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
            self._streams_changed.notify_all()

    def _account(self, account_id: str) -> AccountInfo | None:
        with self._lock:
            info = self._accounts.get(account_id)
            if info is not None:
                return info
            seen = self._seen.get(account_id)
            if seen is None:
                return None
            return AccountInfo(
                profile=AccountProfile(account_id=account_id, total_requests=seen.requests),
                last_decision=seen.last_decision,
            )


class _Servicer(risk_pb2_grpc.RiskServiceServicer):
    """The gRPC face of a FakeRiskServer: convert, ask the fake, convert back."""

    def __init__(self, fake: FakeRiskServer) -> None:
        self._fake = fake

    def Score(
        self, request: risk_pb2.ScoreRequest, context: grpc.ServicerContext
    ) -> risk_pb2.ScoreResponse:
        score_request = _convert.score_request_from_proto(request)
        self._fake._begin("Score", [score_request], context)
        violations = tuple(_validate(score_request))
        if violations:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, _describe(violations), violations)
        return _convert.decision_to_proto(self._fake._decide(score_request))

    def ScoreBatch(
        self, request: risk_pb2.ScoreBatchRequest, context: grpc.ServicerContext
    ) -> risk_pb2.ScoreBatchResponse:
        score_requests = [_convert.score_request_from_proto(r) for r in request.requests]
        self._fake._begin("ScoreBatch", score_requests, context)
        if len(score_requests) > _MAX_BATCH:
            violation = FieldViolation("requests", f"must hold at most {_MAX_BATCH} requests")
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, _describe([violation]), (violation,))
        results: list[Decision | ItemError] = []
        for index, score_request in enumerate(score_requests):
            violations = tuple(_validate(score_request, prefix=f"requests[{index}]."))
            if violations:
                results.append(
                    ItemError(grpc.StatusCode.INVALID_ARGUMENT, _describe(violations), violations)
                )
            else:
                results.append(self._fake._decide(score_request))
        return _convert.batch_response_to_proto(results)

    def GetAccount(
        self, request: risk_pb2.GetAccountRequest, context: grpc.ServicerContext
    ) -> risk_pb2.GetAccountResponse:
        self._fake._begin("GetAccount", [], context)
        if not request.account_id:
            violation = FieldViolation("account_id", "is required")
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, _describe([violation]), (violation,))
        info = self._fake._account(request.account_id)
        if info is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"account {request.account_id!r} not found")
        return _convert.account_info_to_proto(info)

    def StreamDecisions(
        self, request: risk_pb2.StreamDecisionsRequest, context: grpc.ServicerContext
    ) -> Iterator[risk_pb2.DecisionEvent]:
        self._fake._begin("StreamDecisions", [], context)
        min_action, violations = _stream_filter(request)
        if violations:
            _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, _describe(violations), tuple(violations)
            )
        scopes = frozenset(LimitScope(scope) for scope in request.scopes)
        subscriber, snapshot = self._fake._subscribe(
            min_action, scopes, snapshot=not request.skip_snapshot
        )
        # A cancelled call ends the loop below at once instead of at the next heartbeat.
        context.add_callback(lambda: subscriber.inbox.put(_END))
        heartbeat = _seconds(self._fake._heartbeat_interval)
        try:
            for decision, ttl in snapshot:
                yield _event(risk_pb2.DecisionEvent.KIND_SNAPSHOT, decision, ttl)
            yield risk_pb2.DecisionEvent(
                kind=risk_pb2.DecisionEvent.KIND_SNAPSHOT_END, heartbeat_interval=heartbeat
            )
            while True:
                try:
                    item = subscriber.inbox.get(timeout=self._fake._heartbeat_interval)
                except queue.Empty:
                    yield risk_pb2.DecisionEvent(
                        kind=risk_pb2.DecisionEvent.KIND_HEARTBEAT, heartbeat_interval=heartbeat
                    )
                    continue
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    _abort(context, item.code, item.message)
                kind, decision = item  # type: ignore[misc]
                yield _event(kind, decision, decision.ttl.total_seconds())
        finally:
            self._fake._unsubscribe(subscriber)


def _seconds(value: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(value * 1e9))
    return message


def _event(
    kind: risk_pb2.DecisionEvent.Kind.ValueType, decision: ActiveDecision, ttl: float
) -> risk_pb2.DecisionEvent:
    message = _convert.active_decision_to_proto(decision)
    message.ttl.CopyFrom(_seconds(max(0.0, ttl)))
    return risk_pb2.DecisionEvent(kind=kind, decision=message)
