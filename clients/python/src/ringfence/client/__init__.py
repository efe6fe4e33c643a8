"""Python client for ringfence, the service that scores API requests for rate limiters.

    from ringfence.client import Client, ScoreRequest

    with Client("ringfence.internal:50051") as client:
        decision = client.score(ScoreRequest(account_id="alice", client_ip="203.0.113.7"))

`AsyncClient` has the same surface for asyncio. `DecisionCache` (and `AsyncDecisionCache`)
keep a local copy of the service's active decisions warm from its decision stream, so an
enforcement point can act on known abusers without a call. `ringfence.client.testing.
FakeRiskServer` lets you test your own code without running the service.
"""

from ringfence.client._async import AsyncClient
from ringfence.client._cache import AsyncDecisionCache, DecisionCache
from ringfence.client._rpc import DEFAULT_CHANNEL_OPTIONS, DEFAULT_TIMEOUT, FAIL_OPEN_REASON
from ringfence.client._sync import Client
from ringfence.client.errors import (
    InvalidRequestError,
    NotFoundError,
    RingfenceError,
    RingfenceRpcError,
    ServiceUnavailableError,
)
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
    OnUnavailable,
    Reason,
    RequestContext,
    ScoreRequest,
    TaskCategory,
    TaskCount,
    WindowCounts,
)

__all__ = [
    "DEFAULT_CHANNEL_OPTIONS",
    "DEFAULT_TIMEOUT",
    "FAIL_OPEN_REASON",
    "AccountInfo",
    "AccountProfile",
    "Action",
    "ActiveDecision",
    "AsyncClient",
    "AsyncDecisionCache",
    "Client",
    "ClusterInfo",
    "Decision",
    "DecisionCache",
    "FieldViolation",
    "Fingerprint",
    "InvalidRequestError",
    "ItemError",
    "Limit",
    "LimitScope",
    "LimitUnit",
    "NotFoundError",
    "OnUnavailable",
    "Reason",
    "RequestContext",
    "RingfenceError",
    "RingfenceRpcError",
    "ScoreRequest",
    "ServiceUnavailableError",
    "TaskCategory",
    "TaskCount",
    "WindowCounts",
]
