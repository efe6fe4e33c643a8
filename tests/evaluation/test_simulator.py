"""The simulator: reproducible, lazy and bounded, schema-exact, and shaped as configured."""

import gzip
import inspect
import ipaddress
import itertools
import json
import tracemalloc
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime

import maxminddb
import pytest
from google.protobuf import json_format

from ringfence.service.api.convert import Limits, to_observation
from ringfence.service.evaluation.events import TRUTH_FIELDS, to_request
from ringfence.service.evaluation.scenario import CampaignSpec, preset
from ringfence.service.evaluation.simulator import (
    address_plan,
    simulate_events,
    simulate_lines,
    write_simulation,
)
from ringfence.v1 import risk_pb2 as pb

DAY = 86400


def test_same_seed_gives_identical_bytes_and_another_seed_differs(make_config):
    a = "".join(simulate_lines(make_config(seed=11)))
    b = "".join(simulate_lines(make_config(seed=11)))
    c = "".join(simulate_lines(make_config(seed=12)))
    assert a == b
    assert a != c
    assert len(a) > 100_000


def test_compressed_output_is_reproducible_too(tmp_path, make_config):
    config = make_config(days=0.2)
    write_simulation(config, tmp_path / "a.jsonl.gz", None)
    write_simulation(config, tmp_path / "b.jsonl.gz", None)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    text = gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()).decode()
    assert text == "".join(simulate_lines(config))


def test_events_are_generated_lazily():
    # The whole incident is ~75M events: only a generator can hand out the first few quickly.
    events = simulate_events(preset("ci").with_days(45))
    assert inspect.isgenerator(events)
    first = list(itertools.islice(events, 50))
    assert len(first) == 50
    assert inspect.getgeneratorstate(events) == inspect.GEN_SUSPENDED


def _peak_while_consuming(config, n):
    tracemalloc.start()
    try:
        consumed = sum(1 for _ in itertools.islice(simulate_events(config), n))
        return consumed, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_events():
    config = preset("ci").scaled(0.2).with_days(30)
    small, peak_small = _peak_while_consuming(config, 2_000)
    large, peak_large = _peak_while_consuming(config, 20_000)
    assert (small, large) == (2_000, 20_000)
    # Ten times the events, (almost) the same memory: state is per account, not per event.
    assert peak_large < peak_small * 1.25 + 256 * 1024


def test_every_line_is_a_canonical_score_request_the_service_accepts(tiny_sim):
    lines = tiny_sim.events.read_text().splitlines()
    assert len(lines) > 1000
    previous = 0.0
    for line in lines:
        d = json.loads(line)
        truth = {k: d.pop(k) for k in TRUTH_FIELDS}
        assert truth["label"] in ("benign", "attack")
        request = json_format.ParseDict(d, pb.ScoreRequest())
        # What MessageToDict writes back is exactly the line: the standard JSON mapping.
        assert json_format.MessageToDict(request) == d
        assert to_request(dict(d)) == request  # the fast parser agrees with protobuf's
        t = request.context.event_time.ToNanoseconds() / 1e9
        assert t >= previous  # event-time order
        previous = t
        obs = to_observation(request, now=t, limits=Limits(max_event_age_s=float("inf")))
        assert obs.account_created_at is not None and obs.account_created_at <= t


def test_labels_campaigns_and_volumes_follow_the_config():
    config = preset("ci")
    per_account = Counter()
    campaign_accounts = defaultdict(set)
    segments = Counter()
    groups = defaultdict(set)
    for event in simulate_events(config):
        segments[event["segment"]] += 1
        if event["label"] == "attack":
            assert event["campaign"] == event["segment"] and event["group"] == ""
            per_account[event["accountId"]] += 1
            campaign_accounts[event["campaign"]].add(event["accountId"])
        else:
            assert event["label"] == "benign" and event["campaign"] == ""
            if event["group"]:
                groups[event["segment"]].add(event["group"])
    for spec in config.campaigns:
        seen = len(campaign_accounts[spec.id])
        # Each slot's account, plus the few that churn replaced (2%/day for ~1.25 days).
        assert spec.accounts <= seen <= spec.accounts * 1.1
    attack_days = config.days - config.campaigns[0].start_h / 24
    mean_rate = sum(per_account.values()) / config.attack_accounts / attack_days
    assert 21 <= mean_rate <= 27  # ~25.6 queries per account-day, less the 1 h ramp
    assert set(segments) >= {"browser", "mobile", "enterprise", "developer", "backend", "vpn",
                             "heavy", *(c.id for c in config.campaigns)}
    # Shared-address groups are tagged so collateral per group can be computed.
    assert groups["enterprise"] and groups["backend"] and groups["vpn"] and groups["mobile"]
    attack_share = sum(v for k, v in segments.items()
                       if k in {c.id for c in config.campaigns}) / sum(segments.values())
    assert 0.15 < attack_share < 0.4


def test_fleet_accounts_are_registered_in_bursts_before_they_start():
    spec = CampaignSpec("burst", accounts=60, burst_size=20, created_lead_h=10, start_h=1,
                        churn_per_day=0)
    config = replace(preset("ci"), campaigns=(spec,), days=0.5)
    created = {}
    for event in simulate_events(config):
        if event["label"] == "attack":
            created[event["accountId"]] = event["accountCreatedAt"]
    assert len(created) == 60
    times = sorted(datetime.fromisoformat(c).timestamp() for c in created.values())
    start = config.start + spec.start_h * 3600
    assert times[-1] < start
    # Three bursts of twenty sign-ups each within two minutes, hours apart.
    bursts = [times[i:i + 20] for i in range(0, 60, 20)]
    assert all(b[-1] - b[0] <= 120 for b in bursts)
    assert all(later[0] - earlier[-1] >= 3600 for earlier, later in itertools.pairwise(bursts))


def test_the_geo_databases_know_the_simulated_networks(tiny_sim):
    seen = defaultdict(set)
    for line in tiny_sim.events.read_text().splitlines():
        d = json.loads(line)
        seen[d["segment"]].add(d["clientIp"])
    anon = maxminddb.open_database(tiny_sim.geo / "GeoIP2-Anonymous-IP.mmdb")
    asn = maxminddb.open_database(tiny_sim.geo / "GeoLite2-ASN.mmdb")
    try:
        farm = next(iter(seen["hosting-farm"]))
        assert anon.get(farm)["is_hosting_provider"] is True
        assert 64512 <= asn.get(farm)["autonomous_system_number"] <= 65534  # private-use
        flagged = [ip for ip in seen["resi-sdk"] if (anon.get(ip) or {}).get(
            "is_residential_proxy")]
        assert 0 < len(flagged) < len(seen["resi-sdk"])  # partial proxy coverage
        for ips in seen.values():
            for ip in ips:
                assert asn.get(ip) is not None, ip  # every address has an ASN
    finally:
        anon.close()
        asn.close()


def test_addresses_come_only_from_reserved_ranges():
    reserved = [ipaddress.ip_network(n) for n in
                ("10.0.0.0/8", "100.64.0.0/10", "198.18.0.0/15", "2001:db8::/32")]
    for record in address_plan(preset("ci")).records():
        network = record.network
        assert any(network.subnet_of(r) for r in reserved if r.version == network.version)
        assert 64512 <= record.asn <= 65534


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_scaling_multiplies_accounts(factor):
    base = preset("ci")
    scaled = base.scaled(factor)
    assert scaled.attack_accounts == pytest.approx(base.attack_accounts * factor, rel=0.05)
    assert scaled.benign.total == pytest.approx(base.benign.total * factor, rel=0.05)


def test_incident_preset_is_the_incident():
    config = preset("incident")
    assert config.attack_accounts == 25_000
    fleet_days = config.days - config.campaigns[0].start_h / 24
    queries = sum(c.accounts * c.queries_per_day for c in config.campaigns) * fleet_days
    assert queries == pytest.approx(28.8e6, rel=0.01)
