"""The detection rules that keep fleets' clusters from enforcing on honest accounts, and that
link a fleet's accounts early: attributes need evidence, one address is not a link, template
ties must chain into a group, sign-up batches, ties to the cluster, bounded caches."""

from __future__ import annotations

import dataclasses

import numpy as np

from ringfence.service.core.cluster_profiles import (
    TEMPLATE_GROUP_MIN,
    ClusterProfile,
    _created_together_share,
    _network_concentration,
    _template_linked_share,
    assess_cluster,
)
from ringfence.service.core.cluster_state import ClusterState, RefitSchedule
from ringfence.service.core.clustering import (
    Assignment,
    Beacon,
    ClusterParams,
    linked_by_beacons,
)
from ringfence.service.core.model import (
    Action,
    ClientKind,
    DeviceAnalysis,
    IpInfo,
    Linkage,
    WindowCounts,
)
from ringfence.service.core.policy import Policy
from ringfence.service.core.scoring import ATTRIBUTE_CODES, assess

NOW = 1_790_000_000.0
CLOUD = IpInfo(version=4, prefix="198.51.100.0/24", wide_prefix="198.51.0.0/16", asn=64700,
               is_hosting=True)


def _link(**overrides: object) -> Linkage:
    base: dict[str, object] = dict(
        account_first_seen=NOW - 600, account_created_at=NOW - 600,
        account_requests=WindowCounts(1, 3, 20), account_ips=1, account_prefixes=1,
        account_asns=1, account_countries=1, account_devices=1, account_anonymized_share=1.0,
        device_accounts=1, device_first_seen=NOW - 86400, prefix_accounts=1)
    return Linkage(**{**base, **overrides})  # type: ignore[arg-type]


SDK = DeviceAnalysis(device_key="s", stack_key="s", has_device_id=False,
                     client_kind=ClientKind.SDK)


def test_attributes_alone_stay_below_the_throttle_threshold():
    # a brand-new backend on a cloud host with the popular SDK, busy: every attribute at once
    policy = Policy()
    a = assess(policy, _link(device_accounts=500, account_requests=WindowCounts(20, 900, 900)),
               CLOUD, SDK, NOW)
    assert {r.code for r in a.reasons} == {"ACCOUNT_NEW", "IP_ANONYMIZED",
                                             "STACK_SHARED_BY_ACCOUNTS",
                                             "ACCOUNT_HIGH_VELOCITY"} <= ATTRIBUTE_CODES
    assert a.score == policy.weights.attributes_cap
    assert policy.action_for(a.score) is Action.ALLOW
    # ... and linkage evidence (its /24 shared by many accounts) on top of them does enforce
    linked = assess(policy, _link(device_accounts=500, prefix_accounts=200), CLOUD, SDK, NOW)
    assert policy.action_for(linked.score) >= Action.THROTTLE
    # the cap is the policy's
    loose = Policy(weights=dataclasses.replace(policy.weights, attributes_cap=1.0))
    capped = assess(policy, _link(device_accounts=500), CLOUD, SDK, NOW).score
    assert assess(loose, _link(device_accounts=500), CLOUD, SDK, NOW).score > capped


def test_one_address_does_not_link_but_an_address_pair_or_a_template_does():
    beacons = {1: Beacon("c-fleet", address=True), 2: Beacon("c-fleet", address=True),
               3: Beacon("c-fleet", address=False), 4: Beacon("c-other", address=True)}
    assert linked_by_beacons(beacons, [1]) is None  # a proxy exit's /24: honest neighbours
    assert linked_by_beacons(beacons, [1, 4]) is None  # two addresses, two clusters
    assert linked_by_beacons(beacons, [1, 2]) == "c-fleet"  # its IP and its /24
    assert linked_by_beacons(beacons, [3]) == "c-fleet"  # a device id or template
    assert linked_by_beacons(beacons, [4, 99, 3]) == "c-fleet"
    assert linked_by_beacons({}, [1, 2, 3]) is None


def _sigs(*members: tuple[int, ...]) -> list[np.ndarray]:
    return [np.array(m, dtype=np.uint64) for m in members]


def _df(counts: dict[int, int]):
    def df(tokens: np.ndarray) -> np.ndarray:
        return np.array([counts.get(int(t), 0) for t in tokens], dtype=np.int64)
    return df


def test_template_ties_count_once_they_chain_into_a_group():
    # a company's four backends share their own templates: a clique too small to count
    company = _sigs((1,), (1, 2), (2,), (1,), (50,), (51,), (52,), (53,))
    assert _template_linked_share(company, _df({1: 3, 2: 2})) == 0.0
    # a young fleet: each template sent by two accounts only, but the ties chain across six
    fleet = _sigs((10,), (10, 11), (11, 12), (12, 13), (13, 14), (14,), (60,), (61,))
    assert TEMPLATE_GROUP_MIN <= 6
    assert _template_linked_share(fleet, _df({t: 2 for t in range(10, 15)})) == 6 / 8
    # the same ties through a popular prompt (most of its senders outside the cluster) count
    # for nothing
    popular = _df({t: 40 for t in range(10, 15)})
    assert _template_linked_share(fleet, popular) == 0.0


def test_accounts_registered_in_a_batch():
    day = 1 / 24 / 60  # one minute in days
    batch = np.array([1.0, 1.0 + day, 1.0 + 2 * day, 1.0 + 3 * day])
    spread = np.array([2.0, 3.5, 5.0, 9.0, 12.0])
    assert _created_together_share(np.r_[batch, spread]) == 4 / 9
    assert _created_together_share(spread) == 0.0
    # accounts older than a month are not compared (their age is coarse; batches are recent)
    assert _created_together_share(np.array([200.0, 200.0, 200.0])) == 0.0
    assert _created_together_share(np.zeros(0)) == 0.0


def _profile(**signals: float) -> ClusterProfile:
    base: dict[str, object] = dict(
        cluster_id="c", size=200, daily_volume=1000.0, baseline_daily_volume=10.0,
        median_member_volume=5.0, new_account_share=1.0, anonymized_share=0.0,
        device_diversity=1.0, shared_device_share=0.0, shared_signature_share=0.0,
        timing_sync=0.7, timing_regularity=0.4, mean_probability=0.9, fitted_at=NOW,
        created_together_share=0.9, network_concentration=1.0)
    return ClusterProfile(**{**base, **signals})  # type: ignore[arg-type]


def test_a_sign_up_batch_behind_one_network_needs_other_fleet_evidence():
    w, enforce = Policy().cluster.weights, Policy().cluster.enforce_risk

    def codes(p: ClusterProfile) -> dict[str, float]:
        return {r.code: r.weight for r in assess_cluster(w, p).reasons}

    # a company's staff onboarded together (SSO) behind its NAT: new, registered together
    company = _profile()
    assert "CLUSTER_CREATED_TOGETHER" not in codes(company)
    assert assess_cluster(w, company).risk < enforce
    # the same batch spread over many networks (a fleet's exits) is a fleet's sign-up
    spread = _profile(network_concentration=0.1)
    assert codes(spread)["CLUSTER_CREATED_TOGETHER"] == w.created_together
    assert assess_cluster(w, spread).risk >= enforce
    # ... and so is a batch behind one network that also shows what a company does not
    for evidence in (dict(shared_device_share=0.9), dict(shared_signature_share=0.8),
                     dict(anonymized_share=0.8),
                     dict(timing_sync=0.98, timing_regularity=0.75)):
        assert codes(_profile(**evidence))["CLUSTER_CREATED_TOGETHER"] == w.created_together


def test_network_concentration_is_the_largest_share_behind_one_address_or_prefix():
    # six members behind one /24 (token 7), each on its own address; three elsewhere
    tokens = [np.array([100 + i, 7], np.uint64) for i in range(6)] + [
        np.array([200, 201], np.uint64), np.array([300], np.uint64), np.zeros(0, np.uint64)]
    members = np.arange(len(tokens))
    assert _network_concentration(members, tokens) == 6 / 9
    assert _network_concentration(members[6:], tokens) == 1 / 3
    assert _network_concentration(np.array([8]), tokens) == 0.0


def test_cached_placements_and_links_are_bounded():
    state = ClusterState(ClusterParams(), RefitSchedule(max_cached=3), Policy().cluster)
    for i in range(10):
        state._remember(state._assigned, f"a{i}", Assignment("c", 0.9))
        state._remember(state._linked, f"a{i}", Assignment("c", 0.5))
    assert list(state._assigned) == ["a7", "a8", "a9"]
    assert list(state._linked) == ["a7", "a8", "a9"]
    # setting an account again makes it the newest, so the oldest other one goes first
    state._remember(state._assigned, "a7", None)
    state._remember(state._assigned, "a10", None)
    assert list(state._assigned) == ["a9", "a7", "a10"]


def test_members_are_tied_by_chained_identifiers_not_by_a_small_clique():
    from ringfence.service.core.clustering import NOISE, assemble_snapshot, tied_members
    from ringfence.service.core.features import BEHAVIOUR_NAMES, KINDS

    def account(device: int | None, templates: tuple[int, ...]) -> list[np.ndarray]:
        by_kind = [np.zeros(0, np.uint64) for _ in KINDS]
        if device is not None:
            by_kind[0] = np.array([device], np.uint64)
        by_kind[5] = np.array(templates, np.uint64)
        return by_kind

    tokens = [account(None, (10,)), account(None, (10, 11)), account(None, (11, 12)),
              account(None, (12, 13)), account(None, (13,)),  # a fleet: templates chain
              account(700, ()), account(700, ()),  # two accounts on one device id: a pair
              account(None, (90,)), account(None, (90,)),  # a company's backends
              account(None, (10,))]  # noise with a fleet template
    n = len(tokens)
    snapshot = assemble_snapshot(
        NOW, ClusterParams(), [f"a{i}" for i in range(n)], tokens,
        np.zeros((n, len(BEHAVIOUR_NAMES))), np.zeros((n, 24)), [None] * n)
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, NOISE])
    tied, tying = tied_members(labels, snapshot)
    assert tied.tolist() == [True] * 5 + [False] * 5
    assert set(tying) == {10, 11, 12, 13}  # the tokens as the snapshot holds them
    assert set(tying.values()) == {0}


def test_placements_between_refits_are_checked_against_the_fits_ties():
    from types import SimpleNamespace

    from ringfence.service.core.clustering import tie_placements
    from ringfence.service.core.features import KINDS
    from ringfence.service.core.profiles import AccountEvent, AccountProfile

    def profile(signature: int, created_at: float | None) -> AccountProfile:
        p = AccountProfile(NOW)
        p.record(AccountEvent(t=NOW, account_token=1, ip_token=2, prefix_token=3, asn=0,
                              country_token=0, device_token=4, stack_token=4,
                              content_signature=signature, anonymized=False, task=0,
                              input_tokens=10, output_tokens=10), created_at)
        return p

    template = 77
    salted = template ^ KINDS[5][1]  # how account_tokens names a template
    model = SimpleNamespace(
        params=ClusterParams(), tying_tokens={salted: "c-fleet"},
        tied_created={"c-fleet": np.array([NOW - 86400.0])})
    fleet_template = profile(template, None)
    fleet_batch = profile(5, NOW - 86400.0 + 120)  # registered 2 min after a tied member
    neighbour = profile(5, NOW - 40 * 86400.0)
    placed = tie_placements(
        model, [fleet_template, fleet_batch, neighbour, fleet_template],  # type: ignore[arg-type]
        [Assignment("c-fleet", 0.9), Assignment("c-fleet", 0.9), Assignment("c-fleet", 0.9),
         None], NOW)
    assert placed[0] == Assignment("c-fleet", 0.9)
    assert placed[1] == Assignment("c-fleet", 0.9)
    assert placed[2] == Assignment("c-fleet", 0.36)  # untied: 0.4 of its membership
    assert placed[3] == Assignment("c-fleet", ClusterParams().absorbed_probability)
    # a model saved before ties were kept leaves placements alone
    old = SimpleNamespace(params=ClusterParams())
    assert tie_placements(old, [neighbour], [Assignment("c", 0.9)],  # type: ignore[arg-type]
                          NOW) == [Assignment("c", 0.9)]


def test_a_company_onboarding_its_staff_in_one_batch_behind_its_nat_is_not_enforced(tmp_path):
    # the benign corporate NAT, newly onboarded: 250 accounts provisioned by SSO within
    # ten minutes, all behind one /24, each on its own device and browser, working-hour timing,
    # no shared templates — new accounts registered together and nothing a fleet shows besides
    import ipaddress

    from test_clustering import CHROME, CHROME_HEADERS, FIREFOX, T0, World

    from ringfence.service.core.model import (
        Fingerprint,
        LimitScope,
        Observation,
        RequestContext,
        TaskCategory,
    )

    w = World(tmp_path, seed=11)
    w.benign(300, 2)
    onboarded = T0 - 3600
    for i in range(250):
        account = f"staff-{i}"
        ip = ipaddress.ip_address(f"100.66.7.{w.rng.randrange(2, 250)}")
        version = w.rng.randint(110, 130)
        ua = CHROME.format(version) if i % 2 else FIREFOX.format(version, version)
        headers = CHROME_HEADERS if i % 2 else ()
        w.add("staff", account, w.human_times(2, w.rng.randint(3, 15)),
              lambda t, a=account, d=f"laptop-{i}", ip=ip, ua=ua, h=headers,
              created=onboarded + 2.0 * i: Observation(
                  account_id=a, client_ip=ip,
                  context=RequestContext(event_time=t, task=TaskCategory.CODE,
                                         input_tokens=w.rng.randint(200, 2000),
                                         output_tokens=w.rng.randint(200, 2000)),
                  fingerprint=Fingerprint(device_id=d, user_agent=ua, header_names=h),
                  account_created_at=created))
    decisions = w.run()
    staff = [d for a, d in decisions.items() if w.group[a] == "staff"]
    assert len(staff) == 250
    # the company is one cluster, and the batch is seen ...
    clusters = {d.cluster.cluster_id for d in staff if d.cluster is not None}
    assert clusters
    seen = {r.code for c in clusters if (a := w.clusters.assessment(c)) for r in a.reasons}
    assert "CLUSTER_NEW_ACCOUNTS" in seen
    # ... but it does not make the company a fleet: not the limit key, nobody throttled
    risks = {c: a.risk for c in clusters if (a := w.clusters.assessment(c))}
    assert max(risks.values()) < Policy().cluster.enforce_risk, risks
    assert not [d for d in staff if d.limit_scope is LimitScope.CLUSTER]
    assert not [d for d in staff if d.policy_action is not Action.ALLOW]
