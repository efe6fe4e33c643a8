"""The compact forms behind the memory and CPU work: last decisions kept as shared shapes, their
stored JSON built from cut parts, large key sets searched in bulk, and the one-pass request
check. Each is checked against the plain form it replaces."""

import dataclasses
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.service.adapters.codec import (
    decision_json_parts,
    decision_to_json,
    join_decision_json,
)
from ringfence.service.adapters.embedded_store import LastDecisions
from ringfence.service.api.convert import (
    Limits,
    _checked_observation,
    _valid_observation,
)
from ringfence.service.core.errors import InvalidInput
from ringfence.service.core.model import (
    Action,
    ClusterRef,
    Decision,
    Limit,
    LimitScope,
    LimitUnit,
    Reason,
)
from ringfence.service.core.profiles import SHARED_CAPACITY, RecentKeys, SharedProfile
from ringfence.v1 import risk_pb2 as pb

T0 = 1_790_000_000.0


def _decision(account: str, *, cluster: str | None = None, **changes) -> Decision:
    d = Decision(
        risk_score=0.42,
        action=Action.THROTTLE,
        policy_action=Action.THROTTLE,
        shadow=False,
        route_to_fallback=False,
        limit_key=f"cluster:{cluster}" if cluster else f"account:{account}",
        limit_scope=LimitScope.CLUSTER if cluster else LimitScope.ACCOUNT,
        suggested_limit=Limit(10, LimitUnit.MINUTE),
        ttl_seconds=300.0,
        reasons=(
            Reason("DEVICE_SHARED_BY_ACCOUNTS", 0.3, "device id used by 9 accounts"),
            Reason("ACCOUNT_NEW", 0.12, "account is 0.4 h old"),
        ),
        policy_version="p1",
        decided_at=T0 + 0.125,
        model_version="m1",
        cluster=ClusterRef(cluster, 12) if cluster else None,
    )
    return dataclasses.replace(d, **changes)


def test_last_decisions_read_back_what_was_stored():
    book = LastDecisions()
    given_decisions = {
        "a": _decision("a"),
        "b": _decision("b", decided_at=T0 + 7),
        "c": _decision("c", cluster="k3"),
        "d": _decision("d", limit_key="account:someone-else"),  # unusual: kept whole
        "e": _decision("e", ttl_seconds=300),  # an int TTL is not shared with 300.0
        "f": _decision("f", reasons=()),
    }
    for key, d in given_decisions.items():
        book.put(key, d)
    for key, d in given_decisions.items():
        back = book.get(key)
        assert back == d and repr(back) == repr(d)
        assert book.to_json(key) == decision_to_json(d)
    assert book.get("nobody") is None and book.to_json("nobody") is None
    assert len(book) == len(given_decisions)
    book.pop("a")
    assert book.get("a") is None and "a" not in book


def test_accounts_decided_alike_share_one_shape():
    book = LastDecisions()
    book.put("a", _decision("a"))
    book.put("b", _decision("b", decided_at=T0 + 60))
    assert book._items["a"][0] is book._items["b"][0]


def test_the_shape_table_is_bounded():
    book = LastDecisions(shapes_capacity=4)
    for i in range(20):
        book.put(f"a{i}", _decision(f"a{i}", risk_score=i / 100))
    assert len(book._shapes) <= 4
    assert all(book.get(f"a{i}") == _decision(f"a{i}", risk_score=i / 100) for i in range(20))


_text = st.text(st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    limit_key=_text,
    decided_at=st.floats(allow_nan=True, allow_infinity=True) | st.integers(),
    message=_text,
    weight=st.floats() | st.integers(-3, 3),
    cluster=st.none() | _text,
)
def test_json_from_parts_is_decision_to_json(limit_key, decided_at, message, weight, cluster):
    d = _decision(
        "x",
        limit_key=limit_key,
        decided_at=decided_at,
        reasons=(Reason("C", weight, message),),
        cluster=cluster,
    )
    assert join_decision_json(decision_json_parts(d), limit_key, decided_at) == decision_to_json(d)


class _ReferenceKeys:
    """RecentKeys as a plain list: the behaviour the bulk searches must keep."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.members, self.evicted = capacity, [], 0

    def add(self, key: int, minute: int) -> bool:
        for member in self.members:
            if member[0] == key:
                member[1] = max(member[1], minute)
                return False
        if len(self.members) < self.capacity:
            self.members.append([key, minute])
        else:
            oldest = min(range(len(self.members)), key=lambda i: self.members[i][1])
            self.members[oldest] = [key, minute]
            self.evicted += 1
        return True


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 256, 2**63]), st.integers(0, 50)
        ),
        min_size=1,
        max_size=900,
    ),
    st.sampled_from([3, 40, SHARED_CAPACITY]),
)
def test_recent_keys_match_the_reference_at_every_size(adds, capacity):
    keys, ref = RecentKeys(capacity), _ReferenceKeys(capacity)
    minute = 29_000_000
    for key, step in adds:
        minute += step
        assert keys.add(key, minute) == ref.add(key, minute)
    assert [[k, s] for k, s in zip(keys.keys, keys.seen, strict=True)] == ref.members
    assert keys.evicted == ref.evicted
    for since in (0, minute - 100, minute, minute + 1):
        assert keys.count_since(since) == sum(1 for _, s in ref.members if s >= since)


def test_shared_profile_with_more_accounts_than_it_keeps():
    p = SharedProfile(T0)
    for i in range(SHARED_CAPACITY + 100):
        p.record(T0 + i * 60, 1_000_000 + i)
    assert p.evicted == 100
    assert p.accounts_since(0) == SHARED_CAPACITY
    assert p.accounts_since(int(T0 // 60) + SHARED_CAPACITY + 50) == 50
    again = SharedProfile.from_bytes(p.to_bytes())
    assert again.to_bytes() == p.to_bytes()
    assert list(again.accounts.keys) == list(p.accounts.keys)


_field = st.text(st.sampled_from("ab \t\x00\x1f\x7fé/-"), max_size=6) | st.sampled_from(
    ["", "acct-1", "x" * 300, " ", "\x1f"]
)


@settings(max_examples=300, deadline=None)
@given(
    account_id=_field,
    org_id=_field,
    user_agent=_field,
    header=_field,
    key=_field,
    value=_field,
    endpoint=_field,
    ip=st.sampled_from(
        [
            "203.0.113.7",
            "",
            "::ffff:1.2.3.4",
            "2001:db8::1",
            "300.1.1.1",
            "01.2.3.4",
            "1.2.3.4" * 20,
        ]
    ),
    forwarded=st.lists(st.sampled_from(["10.0.0.1", "", "nope"]), max_size=3),
    task=st.integers(0, 7),
    event_offset=st.none() | st.sampled_from([-10.0, 1000.0, -1e7]),
)
def test_one_pass_check_accepts_exactly_what_the_field_check_accepts(
    account_id, org_id, user_agent, header, key, value, endpoint, ip, forwarded, task, event_offset
):
    now = time.time()
    req = pb.ScoreRequest(
        account_id=account_id, org_id=org_id, client_ip=ip, forwarded_for=forwarded
    )
    req.fingerprint.user_agent = user_agent
    req.fingerprint.header_names.extend([header, "accept"])
    req.fingerprint.attributes[key] = value
    req.context.endpoint = endpoint
    req.context.task_category = task
    if event_offset is not None:
        req.context.event_time.FromNanoseconds(int((now + event_offset) * 1e9))
    fast = _valid_observation(req, now, Limits())
    try:
        checked = _checked_observation(req, now=now, limits=Limits())
    except InvalidInput:
        assert fast is None
    else:
        assert fast == checked  # every valid request takes the one-pass path
