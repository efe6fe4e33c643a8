"""Seeded scenarios through the real engine with in-process refits (no server)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from ringfence.service.adapters.clock import ManualClock
from ringfence.service.adapters.embedded_store import EmbeddedProfileStore
from ringfence.service.adapters.event_log import NullEventLog
from ringfence.service.adapters.geoip import MaxMindGeoIp
from ringfence.service.adapters.labels import MemoryLabelStore
from ringfence.service.core.cluster_state import ClusterState, RefitSchedule
from ringfence.service.core.clustering import ClusterParams
from ringfence.service.core.engine import RiskEngine
from ringfence.service.core.identity import Hasher
from ringfence.service.core.model import (
    Action,
    Fingerprint,
    Label,
    LabelTarget,
    LabelValue,
    LimitScope,
    Observation,
    RequestContext,
    TaskCategory,
)
from ringfence.service.core.policy import Policy
from ringfence.service.geodata import NetworkRecord, write_geo_databases

T0 = 1_790_000_000.0 - 1_790_000_000.0 % 86400
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/{}.0.0.0 Safari/537.36")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:{}.0) Gecko/20100101 Firefox/{}.0"
CHROME_HEADERS = ("sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform", "user-agent", "accept",
                  "accept-encoding", "accept-language")
SDK_JA4 = "t13d181000_85036bcba153_d41ae481755e"

NETWORKS = [
    NetworkRecord(cidr="100.64.0.0/16", asn=64601, as_org="Home Cable", country="US"),
    NetworkRecord(cidr="100.65.0.0/16", asn=64602, as_org="Fibre Co", country="DE"),
    NetworkRecord(cidr="100.66.7.0/24", asn=64603, as_org="Big Corp", country="US"),
    NetworkRecord(cidr="198.18.0.0/16", asn=64700, as_org="Resi Proxy Net", country="US",
                  is_residential_proxy=True),
    NetworkRecord(cidr="198.19.0.0/16", asn=64701, as_org="Cheap Cloud", country="NL",
                  is_hosting=True),
]


class World:
    """A deterministic population replayed through the engine, hour by hour."""

    def __init__(self, tmp_path, seed: int = 7) -> None:
        paths = write_geo_databases(NETWORKS, tmp_path / "geo")
        self.rng = random.Random(seed)
        self.clock = ManualClock(T0)
        self.store = EmbeddedProfileStore(None)
        self.clusters = ClusterState(
            ClusterParams(min_cluster_size=15, min_samples=5),
            RefitSchedule(interval_s=6 * 3600, min_gap_s=3600, pending_threshold=10**9),
            Policy().cluster)
        self.engine = RiskEngine(policy=Policy(), geoip=MaxMindGeoIp(paths), store=self.store,
                                 events=NullEventLog(), clock=self.clock,
                                 hasher=Hasher(bytes(range(32))), clusters=self.clusters,
                                 labels=MemoryLabelStore())
        self.schedule: list[tuple[float, Observation]] = []
        self.group: dict[str, str] = {}

    def ip(self, net: str) -> ipaddress.IPv4Address:
        network = ipaddress.ip_network(net)
        return network[self.rng.randrange(1, network.num_addresses - 1)]

    def add(self, group: str, account: str, times, make) -> None:
        self.group[account] = group
        for t in times:
            self.schedule.append((t, make(t)))

    def human_times(self, days: int, per_day: int):
        out = []
        for d in range(days):
            for _ in range(per_day):
                out.append(T0 + d * 86400 + self.rng.gauss(14, 3) % 24 * 3600)
        return out

    def benign(self, n: int, days: int) -> None:
        for i in range(n):
            acct = f"user-{i}"
            device = f"dev-user-{i}"
            net = self.rng.choice(["100.64.0.0/16", "100.65.0.0/16"])
            ip = self.ip(net)
            ua = CHROME.format(self.rng.randint(118, 122))
            self.add("benign", acct, self.human_times(days, self.rng.randint(2, 12)),
                     lambda t, a=acct, d=device, ip=ip, ua=ua: Observation(
                         account_id=a, client_ip=ip,
                         context=RequestContext(event_time=t, task=TaskCategory.CHAT,
                                                input_tokens=300, output_tokens=400),
                         fingerprint=Fingerprint(device_id=d, user_agent=ua,
                                                 header_names=CHROME_HEADERS),
                         account_created_at=T0 - 200 * 86400))

    def corporate_nat(self, n: int, days: int) -> None:
        ip = ipaddress.ip_address("100.66.7.10")
        for i in range(n):
            acct = f"corp-{i}"
            version = self.rng.randint(100, 130)
            self.add("nat", acct, self.human_times(days, self.rng.randint(3, 15)),
                     lambda t, a=acct, d=f"dev-corp-{i}", v=version:
                     Observation(
                         account_id=a, client_ip=ip,
                         context=RequestContext(event_time=t, task=TaskCategory.CODE,
                                                input_tokens=800, output_tokens=900),
                         fingerprint=Fingerprint(device_id=d, user_agent=FIREFOX.format(v, v)),
                         account_created_at=T0 - 400 * 86400))

    def sdk_users(self, n: int, days: int) -> None:
        for i in range(n):
            acct = f"sdk-{i}"
            ip = self.ip(self.rng.choice(["100.64.0.0/16", "100.65.0.0/16"]))
            self.add("sdk", acct, self.human_times(days, self.rng.randint(5, 40)),
                     lambda t, a=acct, ip=ip: Observation(
                         account_id=a, client_ip=ip,
                         context=RequestContext(event_time=t, task=TaskCategory.CODE),
                         fingerprint=Fingerprint(ja4=SDK_JA4, user_agent="python-requests/2.32",
                                                 sdk_name="openai-python", sdk_version="1.40"),
                         account_created_at=T0 - 300 * 86400))

    def fleet(self, n: int, days: int, devices: int = 6) -> None:
        pool = [f"fleet-dev-{k}" for k in range(devices)]
        templates = [0xABCDEF0012345678 + k for k in range(3)]
        for i in range(n):
            acct = f"fleet-{i}"
            offset = self.rng.uniform(0, 120)
            times = [T0 + h * 3600 + offset + 60 * (i % 3) for h in range(24 * days)
                     if h % 24 not in (3, 4)]  # ~22 a day, on the same clock
            self.add("fleet", acct, times,
                     lambda t, a=acct: Observation(
                         account_id=a,
                         client_ip=self.ip(self.rng.choice(["198.18.0.0/16", "198.19.0.0/16"])),
                         context=RequestContext(event_time=t, task=TaskCategory.REASONING,
                                                input_tokens=2000, output_tokens=4000,
                                                content_signature=self.rng.choice(templates)),
                         fingerprint=Fingerprint(device_id=self.rng.choice(pool),
                                                 ja4=SDK_JA4, user_agent="python-httpx/0.27"),
                         account_created_at=T0 - self.rng.uniform(0, 2) * 86400))

    def run(self, until: float | None = None):
        """Replay in time order, giving the cluster state its turn every simulated 10 min."""
        self.schedule.sort(key=lambda x: x[0])
        decisions = {}
        next_tick = T0
        for t, obs in self.schedule:
            if until is not None and t > until:
                break
            while t >= next_tick:
                self.clock.set(next_tick)
                self.clusters.run_due(next_tick, self.store.active_accounts,
                                      self.store.account_profile)
                next_tick += 600
            self.clock.set(t)
            decisions[obs.account_id] = self.engine.score(obs)
        return decisions


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[World, dict]:
    w = World(tmp_path_factory.mktemp("world"))
    w.benign(400, 2)
    w.corporate_nat(200, 2)
    w.sdk_users(150, 2)
    w.fleet(250, 2)
    decisions = w.run()
    return w, decisions


def _by_group(world: World, decisions: dict, group: str) -> list:
    return [d for a, d in decisions.items() if world.group[a] == group]


def test_the_planted_fleet_is_found_and_enforced_as_one_cluster(world):
    w, decisions = world
    fleet = _by_group(w, decisions, "fleet")
    clusters = {d.cluster.cluster_id for d in fleet if d.cluster}
    in_main = max((sum(1 for d in fleet if d.cluster and d.cluster.cluster_id == c), c)
                  for c in clusters)
    assert in_main[0] >= 0.9 * len(fleet), clusters
    enforced = [d for d in fleet if d.action is not Action.ALLOW
                and d.limit_scope is LimitScope.CLUSTER]
    assert len(enforced) >= 0.9 * len(fleet)
    assert {d.limit_key for d in enforced} == {f"cluster:{in_main[1]}"}
    codes = {r.code for d in fleet for r in d.reasons}
    assert "CLUSTER_SHARED_DEVICES" in codes


def test_nat_sdk_and_ordinary_users_are_not_enforced(world):
    w, decisions = world
    for group in ("benign", "nat", "sdk"):
        members = _by_group(w, decisions, group)
        throttled = [d for d in members if d.policy_action is not Action.ALLOW]
        assert len(throttled) <= 0.01 * len(members), (group, throttled[:3])
        assert not [d for d in members if d.limit_scope is LimitScope.CLUSTER], group


def test_cluster_ids_survive_a_refit(world):
    w, decisions = world
    before = {a: d.cluster.cluster_id for a, d in decisions.items()
              if w.group[a] == "fleet" and d.cluster}
    assert len(before) >= 0.9 * len(_by_group(w, decisions, "fleet"))
    refits = w.clusters.refits
    w.clusters._last_refit = -1e18  # force the next tick to refit
    w.clusters.run_due(w.clock.now() + 3600, w.store.active_accounts, w.store.account_profile)
    assert w.clusters.refits == refits + 1
    # what the rate limiter sees: the limit key of each fleet account's next request
    last = {o.account_id: o for _, o in w.schedule if o.account_id in before}
    after = {a: d.cluster.cluster_id for a, o in last.items()
             if (d := w.engine.score(o)).cluster is not None}
    assert len(after) >= 0.9 * len(before)
    agree = sum(after[a] == before[a] for a in after)
    assert agree >= 0.95 * len(after)


def test_labels_change_decisions(world):
    w, decisions = world
    fleet_account = next(a for a, d in decisions.items()
                         if w.group[a] == "fleet" and d.cluster)
    cluster_id = w.clusters.assignment(fleet_account).cluster_id
    benign_account = next(a for a in decisions if w.group[a] == "benign")

    def rescore(account):
        obs = next(o for _, o in reversed(w.schedule) if o.account_id == account)
        return w.engine.score(obs)

    w.engine.submit_label(Label(LabelTarget.CLUSTER, cluster_id, LabelValue.BENIGN, T0))
    cleared = rescore(fleet_account)
    assert cleared.limit_scope is LimitScope.ACCOUNT
    assert not any(r.code.startswith("CLUSTER_") for r in cleared.reasons)

    w.engine.submit_label(Label(LabelTarget.CLUSTER, cluster_id, LabelValue.ABUSIVE, T0))
    blocked = rescore(fleet_account)
    assert blocked.action is Action.BLOCK and blocked.reasons[0].code == "LABEL_ABUSIVE_CLUSTER"

    w.engine.submit_label(Label(LabelTarget.ACCOUNT, benign_account, LabelValue.ABUSIVE, T0))
    assert rescore(benign_account).action is Action.BLOCK
    w.engine.submit_label(Label(LabelTarget.ACCOUNT, benign_account, LabelValue.BENIGN, T0))
    assert rescore(benign_account).action is Action.ALLOW


def test_a_new_account_on_a_fleet_device_is_linked_on_its_first_request(world):
    w, decisions = world
    fleet_cluster = next(d.cluster.cluster_id for a, d in decisions.items()
                         if w.group[a] == "fleet" and d.cluster)
    assert w.clusters.beacons > 0

    def first_request(account: str, device: str) -> Observation:
        return Observation(
            account_id=account, client_ip=ipaddress.ip_address("100.65.9.9"),
            context=RequestContext(event_time=w.clock.now(), task=TaskCategory.CHAT),
            fingerprint=Fingerprint(device_id=device, user_agent=CHROME.format(120),
                                    header_names=CHROME_HEADERS))

    linked = w.engine.score(first_request("fresh-fleet-1", "fleet-dev-0"))
    assert linked.cluster is not None and linked.cluster.cluster_id == fleet_cluster
    assert linked.limit_scope is LimitScope.CLUSTER and linked.action is not Action.ALLOW
    honest = w.engine.score(first_request("fresh-user-1", "dev-fresh-user-1"))
    assert honest.cluster is None and honest.action is Action.ALLOW
