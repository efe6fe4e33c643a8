"""Fixtures for the client tests: a FakeRiskServer on loopback and request builders."""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ringfence.client import (
    Action,
    ClusterInfo,
    Decision,
    Fingerprint,
    Limit,
    LimitScope,
    LimitUnit,
    Reason,
    RequestContext,
    ScoreRequest,
    TaskCategory,
)
from ringfence.client.testing import FakeRiskServer


@pytest.fixture
def fake() -> Iterator[FakeRiskServer]:
    with FakeRiskServer() as server:
        yield server


@pytest.fixture
def make_request() -> Callable[..., ScoreRequest]:
    def make(account_id: str = "alice", client_ip: str = "203.0.113.7") -> ScoreRequest:
        return ScoreRequest(
            account_id=account_id,
            client_ip=client_ip,
            api_key_id="key-1",
            org_id="org-1",
            forwarded_for=("198.51.100.1", "10.0.0.1"),
            fingerprint=Fingerprint(
                ja4="t13d1516h2_8daaf6152771_02713d6af862",
                user_agent="openai-python/1.40.0",
                header_names=("host", "user-agent", "authorization"),
                sdk_name="openai-python",
                sdk_version="1.40.0",
                device_id="dev-42",
                extra_fingerprints={"ja4h": "ge11nn05enus_1"},
                attributes={"tier": "free"},
            ),
            context=RequestContext(
                event_time=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
                endpoint="/v1/chat/completions",
                model="gpt-x",
                task_category=TaskCategory.CODE,
                input_tokens=1200,
                output_tokens=300,
                content_signature=2**64 - 1,
            ),
            account_created_at=datetime(2024, 12, 31, tzinfo=UTC),
        )

    return make


@pytest.fixture
def blocking_decision() -> Decision:
    """A decision with every field set, to catch a field lost on the way."""
    return Decision(
        risk_score=0.93,
        action=Action.BLOCK,
        policy_action=Action.BLOCK,
        shadow=False,
        route_to_fallback=True,
        limit_key="cluster:c-7",
        limit_scope=LimitScope.CLUSTER,
        suggested_limit=Limit(requests_per_unit=10, unit=LimitUnit.MINUTE),
        decision_ttl=timedelta(seconds=30),
        reasons=(
            Reason(code="DEVICE_SHARED_BY_ACCOUNTS", weight=0.6, message="device seen on 9"),
            Reason(code="NEW_ACCOUNT", weight=0.33, message="created 1 day ago"),
        ),
        cluster=ClusterInfo(cluster_id="c-7", size=9),
        model_version="m-3",
        policy_version="p-12",
        degraded=True,
        decided_at=datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC),
    )
