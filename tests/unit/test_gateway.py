"""The gateway mapping's pure parts: client address, verdicts, fixed-window counting."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ringfence.service.adapters.memory_counter import MemoryHitCounter
from ringfence.service.api.gateway import (
    GatewayConfig,
    client_address,
    forwarded_chain,
    parse_trusted_proxies,
    verdict,
)
from ringfence.service.core.model import Action, Decision, Limit, LimitScope, LimitUnit
from ringfence.service.core.ratelimit import Budget, charge
from ringfence.service.settings import Settings

TRUSTED = parse_trusted_proxies("10.0.0.0/8, 127.0.0.1, ::1")


def decision(action: Action, *, shadow: bool = False, policy_action: Action | None = None,
             per_minute: int = 60) -> Decision:
    return Decision(risk_score=0.42, action=action, policy_action=policy_action or action,
                    shadow=shadow, route_to_fallback=False, limit_key="account:a",
                    limit_scope=LimitScope.ACCOUNT,
                    suggested_limit=Limit(per_minute, LimitUnit.MINUTE), ttl_seconds=300.5,
                    reasons=(), policy_version="p", decided_at=0.0)


def test_forwarded_chain_parses_ports_brackets_and_skips_garbage():
    chain = forwarded_chain('192.0.2.1:4711, "[2001:db8::1]:80", junk, ::ffff:198.51.100.2,')
    assert [str(ip) for ip in chain] == ["192.0.2.1", "2001:db8::1", "198.51.100.2"]


@pytest.mark.parametrize(("peer", "xff", "expected"), [
    ("203.0.113.9", "192.0.2.1", "203.0.113.9"),  # untrusted peer: XFF ignored
    ("10.0.0.5", "192.0.2.1, 10.9.9.9", "192.0.2.1"),  # trusted hops skipped from the right
    ("10.0.0.5", "6.6.6.6, 192.0.2.1", "192.0.2.1"),  # a forged left entry is not reached
    ("10.0.0.5", "", "10.0.0.5"),  # trusted peer without XFF
    ("10.0.0.5", "10.1.1.1, 10.2.2.2", "10.1.1.1"),  # all trusted: the leftmost
    ("::1", "2001:db8::7", "2001:db8::7"),
    ("::ffff:10.0.0.5", "192.0.2.1", "192.0.2.1"),  # v4-mapped peer
])
def test_client_address(peer, xff, expected):
    assert client_address(peer, forwarded_chain(xff), TRUSTED) == expected


def _plain(ip: ipaddress.IPv4Address | ipaddress.IPv6Address
           ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return getattr(ip, "ipv4_mapped", None) or ip


@given(st.lists(st.ip_addresses(), max_size=6), st.ip_addresses())
def test_client_address_is_the_peer_or_a_forwarded_hop(chain, peer):
    found = ipaddress.ip_address(client_address(str(peer), chain, TRUSTED))
    assert _plain(found) in {_plain(peer), *map(_plain, chain)}


def test_allow_and_throttle_pass_with_headers_and_metadata():
    v = verdict(decision(Action.THROTTLE, per_minute=10), GatewayConfig())
    assert v.allowed
    assert dict(v.headers) == {"x-ringfence-score": "0.4200", "x-ringfence-action": "throttle",
                               "x-ringfence-limit-key": "account:a"}
    assert "x-ringfence-error" in v.headers_to_remove
    assert v.metadata["limit"] == {"requests_per_unit": 10, "unit": "MINUTE"}
    assert v.metadata["hits_addend"] == 2


def test_block_is_429_and_challenge_follows_the_setting():
    block = verdict(decision(Action.BLOCK, per_minute=0), GatewayConfig())
    assert block.status == 429 and dict(block.headers)["retry-after"] == "301"
    assert verdict(decision(Action.CHALLENGE), GatewayConfig()).status == 403
    through = verdict(decision(Action.CHALLENGE), GatewayConfig(challenge_status=0))
    assert through.allowed and dict(through.headers)["x-ringfence-action"] == "challenge"


def test_shadow_allows_and_names_the_policy_action():
    v = verdict(decision(Action.ALLOW, shadow=True, policy_action=Action.BLOCK), GatewayConfig())
    assert v.allowed
    assert dict(v.headers)["x-ringfence-policy-action"] == "block"
    assert v.metadata["policy_action"] == "block"


async def test_fixed_windows_reset_and_memory_stays_bounded():
    counter = MemoryHitCounter(max_keys=2)
    budget = Budget(2, 60)
    results = [await charge(counter, "k", budget, 1, 120.0 + i) for i in range(3)]
    assert [r.over_limit for r in results] == [False, False, True]
    assert results[0].reset_in_s == 60.0
    assert not (await charge(counter, "k", budget, 1, 180.0)).over_limit  # next window
    await charge(counter, "a", budget, 1, 180.0)
    await charge(counter, "b", budget, 1, 180.0)
    assert len(counter) == 2  # "k" was dropped (least recently used)
    assert (await charge(counter, "k", budget, 1, 181.0)).remaining == 1


async def test_a_zero_budget_is_over_at_once_and_counts_nothing():
    counter = MemoryHitCounter()
    result = await charge(counter, "k", Budget(0, 86400), 1, 100.0)
    assert result.over_limit and result.remaining == 0
    assert len(counter) == 0


def test_settings_validate_the_gateway_options():
    s = Settings(gateway_account_header="X-User-Id", gateway_trusted_proxies="10.0.0.0/8")
    assert s.gateway_account_header == "x-user-id"
    with pytest.raises(ValidationError, match="not an IP address"):
        Settings(gateway_trusted_proxies="10.0.0.0/8, nope")
    with pytest.raises(ValidationError, match="4xx"):
        Settings(gateway_challenge_status=200)
    with pytest.raises(ValidationError, match="header name"):
        Settings(gateway_account_header="x user")
