"""The service end to end through the real Python client."""

from __future__ import annotations

import asyncio

import pytest

from ringfence.client import Action as ClientAction
from ringfence.client import (
    AsyncClient,
    Client,
    Fingerprint,
    InvalidRequestError,
    ItemError,
    NotFoundError,
    ScoreRequest,
)

CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/120.0.0.0 Safari/537.36")


def request(account: str, ip: str = "198.51.100.7", device: str = "", **fp) -> ScoreRequest:
    return ScoreRequest(account_id=account, client_ip=ip,
                        fingerprint=Fingerprint(device_id=device, user_agent=CHROME_UA, **fp))


async def test_a_client_call_gets_a_decision(target):
    async with AsyncClient(target, timeout=5) as client:
        decision = await client.score(request("alice"))
    assert decision.action is ClientAction.ALLOW
    assert decision.limit_key == "account:alice"
    assert 0.0 <= decision.risk_score < 0.5
    assert not decision.fail_open
    assert decision.policy_version == "default-1"


async def test_sync_client_works_against_the_server(target):
    def call():
        with Client(target, timeout=5) as client:
            return client.score(request("bob"))
    decision = await asyncio.to_thread(call)
    assert decision.limit_key == "account:bob"


async def test_planted_device_shared_by_fifty_new_accounts_scores_higher(target):
    async with AsyncClient(target, timeout=5) as client:
        lone = await client.score(request("lone-1", device="device-lone"))
        decisions = [await client.score(request(f"fleet-{i}", ip=f"203.0.113.{i}",
                                                device="device-planted"))
                     for i in range(50)]
    planted = decisions[-1]
    assert planted.risk_score > lone.risk_score + 0.5
    assert planted.reasons[0].code == "DEVICE_SHARED_BY_ACCOUNTS"
    assert "50 accounts" in planted.reasons[0].message
    assert planted.action in (ClientAction.CHALLENGE, ClientAction.BLOCK)
    assert "DEVICE_SHARED_BY_ACCOUNTS" not in {r.code for r in lone.reasons}
    # the score grows with the fleet
    assert decisions[1].risk_score < decisions[10].risk_score < planted.risk_score


async def test_bad_input_raises_invalid_request_naming_the_field(target):
    async with AsyncClient(target, timeout=5) as client:
        with pytest.raises(InvalidRequestError) as err:
            await client.score(ScoreRequest(account_id="", client_ip="not-an-ip"))
    fields = {v.field for v in err.value.field_violations}
    assert fields == {"account_id", "client_ip"}


async def test_batch_answers_in_order_and_isolates_bad_items(target):
    async with AsyncClient(target, timeout=5) as client:
        results = await client.score_batch([request("a1"), ScoreRequest(account_id="a2",
                                                                        client_ip="1.2.3"),
                                            request("a3")])
    assert [type(r).__name__ for r in results] == ["Decision", "ItemError", "Decision"]
    assert results[0].limit_key == "account:a1" and results[2].limit_key == "account:a3"
    bad = results[1]
    assert isinstance(bad, ItemError)
    assert [v.field for v in bad.field_violations] == ["requests[1].client_ip"]


async def test_get_account_returns_profile_and_last_decision(target):
    async with AsyncClient(target, timeout=5) as client:
        for ip in ("198.51.100.1", "198.51.100.2", "2001:db8::5"):
            last = await client.score(request("carol", ip=ip))
        info = await client.get_account("carol")
        with pytest.raises(NotFoundError):
            await client.get_account("nobody")
    assert info.profile.total_requests == 3
    assert info.profile.distinct_ips == 3
    assert info.profile.distinct_prefixes == 2
    assert info.profile.requests.last_5m == 3
    assert info.last_decision is not None
    assert info.last_decision.risk_score == last.risk_score
