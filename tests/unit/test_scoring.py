import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringfence.service.core.errors import InvalidInput
from ringfence.service.core.model import (
    Action,
    ClientKind,
    DeviceAnalysis,
    IpInfo,
    LimitScope,
    Linkage,
    WindowCounts,
)
from ringfence.service.core.policy import Policy
from ringfence.service.core.scoring import assess, decide, ramp

NOW = 1_790_000_000.0
CLEAN_IP = IpInfo(version=4, prefix="203.0.113.0/24", wide_prefix="203.0.0.0/16", asn=64500)


def _link(**overrides):
    base = dict(account_first_seen=NOW - 30 * 86400, account_created_at=None,
                account_requests=WindowCounts(1, 3, 20), account_ips=1, account_prefixes=1,
                account_asns=1, account_countries=1, account_devices=1,
                account_anonymized_share=0.0, device_accounts=1, device_first_seen=NOW - 86400,
                prefix_accounts=1)
    return Linkage(**{**base, **overrides})


def _device(has_id=True, inconsistencies=()):
    return DeviceAnalysis(device_key="d", stack_key="s", has_device_id=has_id,
                          client_kind=ClientKind.BROWSER, inconsistencies=inconsistencies)


def test_an_ordinary_request_is_allowed_with_no_reasons():
    a = assess(Policy(), _link(), CLEAN_IP, _device(), NOW)
    assert a.score == 0.0
    assert a.reasons == ()
    d = decide(Policy(), "alice", a, now=NOW, degraded=False)
    assert d.action is Action.ALLOW and d.policy_action is Action.ALLOW
    assert d.limit_key == "account:alice" and d.limit_scope is LimitScope.ACCOUNT
    assert d.suggested_limit.requests_per_unit == 60


def test_a_device_shared_by_fifty_new_accounts_outranks_a_lone_device():
    new = dict(account_first_seen=NOW - 600)
    shared = assess(Policy(), _link(device_accounts=50, **new), CLEAN_IP, _device(), NOW)
    lone = assess(Policy(), _link(device_accounts=1, **new), CLEAN_IP, _device(), NOW)
    assert shared.score > lone.score + 0.5
    assert shared.reasons[0].code == "DEVICE_SHARED_BY_ACCOUNTS"
    assert "50 accounts" in shared.reasons[0].message
    assert Policy().action_for(shared.score) >= Action.CHALLENGE


def test_a_shared_stack_without_device_id_counts_less():
    with_id = assess(Policy(), _link(device_accounts=50), CLEAN_IP, _device(True), NOW)
    stack = assess(Policy(), _link(device_accounts=50), CLEAN_IP, _device(False), NOW)
    assert stack.score < with_id.score
    assert stack.reasons[0].code == "STACK_SHARED_BY_ACCOUNTS"
    assert Policy().action_for(stack.score) is Action.ALLOW


def test_anonymizers_and_inconsistencies_add_reasons():
    ip = IpInfo(version=4, prefix="p", wide_prefix="w", is_hosting=True)
    tor = IpInfo(version=4, prefix="p", wide_prefix="w", is_tor=True, is_anonymous=True)
    a = assess(Policy(), _link(), ip, _device(inconsistencies=("FP_BROWSER_UA_SCRIPT_TLS",)),
               NOW)
    codes = [r.code for r in a.reasons]
    assert codes == ["FP_BROWSER_UA_SCRIPT_TLS", "IP_ANONYMIZED"]
    assert "hosting" in a.reasons[1].message
    assert assess(Policy(), _link(), tor, _device(), NOW).reasons[0].code == "IP_TOR_EXIT"


def test_account_created_at_beats_first_seen_for_newness():
    old_by_creation = _link(account_first_seen=NOW - 60, account_created_at=NOW - 90 * 86400)
    assert assess(Policy(), old_by_creation, CLEAN_IP, _device(), NOW).score == 0.0


def test_shadow_mode_always_allows_but_keeps_the_policy_action():
    policy = Policy(shadow=True)
    a = assess(policy, _link(device_accounts=50, account_ips=40), CLEAN_IP, _device(), NOW)
    d = decide(policy, "x", a, now=NOW, degraded=False)
    assert d.action is Action.ALLOW
    assert d.policy_action >= Action.CHALLENGE
    assert d.shadow
    assert d.ttl_seconds == policy.ttl_seconds[Action.ALLOW]


@given(
    device=st.integers(0, 10_000), prefix=st.integers(0, 10_000), ips=st.integers(0, 64),
    asns=st.integers(0, 32), countries=st.integers(0, 16), devices=st.integers(0, 32),
    rate=st.integers(0, 100_000), share=st.floats(0, 1), age=st.floats(0, 1e8),
    hosting=st.booleans(), tor=st.booleans(), has_id=st.booleans(),
)
def test_score_is_in_unit_interval_and_reasons_sorted(device, prefix, ips, asns, countries,
                                                      devices, rate, share, age, hosting, tor,
                                                      has_id):
    link = _link(device_accounts=device, prefix_accounts=prefix, account_ips=ips,
                 account_asns=asns, account_countries=countries, account_devices=devices,
                 account_requests=WindowCounts(0, rate, rate), account_anonymized_share=share,
                 account_first_seen=NOW - age)
    ip = IpInfo(version=4, prefix="p", wide_prefix="w", is_hosting=hosting, is_tor=tor)
    a = assess(Policy(), link, ip, _device(has_id), NOW)
    assert 0.0 <= a.score <= 1.0
    weights = [r.weight for r in a.reasons]
    assert weights == sorted(weights, reverse=True)
    assert all(0 < w <= 1 for w in weights)
    # more accounts on the device never lowers the score
    more = assess(Policy(), dataclasses.replace(link, device_accounts=device + 10), ip,
                  _device(has_id), NOW)
    assert more.score >= a.score


def test_ramp():
    assert ramp(1, 2, 10) == 0 and ramp(10, 2, 10) == 1 and ramp(6, 2, 10) == 0.5


def test_policy_from_toml_mapping_and_errors():
    p = Policy.from_mapping({"version": "v7", "shadow": True, "thresholds": {"block": 0.95},
                             "limit_per_minute": {"throttle": 3}})
    assert (p.version, p.shadow, p.thresholds.block, p.limit_per_minute.throttle) == \
        ("v7", True, 0.95, 3)
    with pytest.raises(InvalidInput) as err:
        Policy.from_mapping({"nope": 1, "weights": {"device_shared": 3},
                             "thresholds": {"throttle": 0.99}, "shadow": "yes"})
    fields = {v.field for v in err.value.violations}
    assert fields == {"nope", "weights.device_shared", "thresholds", "shadow"}
