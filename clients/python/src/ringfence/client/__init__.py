"""Python client for ringfence, the service that scores API requests for rate limiters.

    from ringfence.client import Client, ScoreRequest

    with Client("ringfence.internal:50051") as client:
        decision = client.score(ScoreRequest(account_id="alice", client_ip="203.0.113.7"))

`AsyncClient` has the same surface for asyncio. `ringfence.client.testing.FakeRiskServer`
lets you test your own code without running the service.
"""

from ringfence.client._async import AsyncClient
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
    "AsyncClient",
    "Client",
    "ClusterInfo",
    "Decision",
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
