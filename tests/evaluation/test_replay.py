"""Replay: event time drives the clock and the hook, decisions are recorded with the truth and
the baselines, invalid events are named or skipped; the gRPC mode talks to a real server."""

import asyncio
import itertools
import json
from dataclasses import replace

import pytest

from ringfence.service.app import App
from ringfence.service.core.policy import Policy, Thresholds
from ringfence.service.evaluation.baselines import default_baselines
from ringfence.service.evaluation.events import EventFormatError, parse_event, read_events
from ringfence.service.evaluation.remote import RemoteError, RemoteReplay
from ringfence.service.evaluation.replay import InProcessReplay, geo_paths_in
from ringfence.service.settings import Settings

T = 1_776_816_000  # 2026-04-22T00:00:00Z


def _event(line, account, seconds, ip="10.0.0.1", label="benign", campaign=""):
    stamp = f"2026-04-22T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"
    return parse_event(json.dumps({
        "accountId": account, "clientIp": ip, "context": {"eventTime": stamp},
        "fingerprint": {"userAgent": "python-requests/2.31.0"},
        "label": label, "campaign": campaign}), line)


def test_clock_hook_truth_and_baselines():
    events = [_event(1, "a", 0), _event(2, "a", 0), _event(3, "b", 60, label="attack",
                                                            campaign="c"),
              _event(4, "a", 120), _event(5, "a", 60)]  # the last one is out of order
    seen = []
    with InProcessReplay.create(baselines=default_baselines(account_per_day=2),
                                on_time=seen.append) as replay:
        records = list(replay.run(events))
        assert replay.clock.now() == T + 60  # the clock follows each event's time
    assert seen == [T, T + 60, T + 120]  # only when time moves forward, before scoring
    assert [r.account for r in records] == ["a", "a", "b", "a", "a"]
    assert records[2].label == "attack" and records[2].campaign == "c"
    # Per-account baseline: 2 a day; account a's 3rd and 4th requests are over it.
    assert [dict(r.baselines)["account_2_per_day"] for r in records] == [
        "ALLOW", "ALLOW", "ALLOW", "THROTTLE", "THROTTLE"]
    line = json.loads(records[0].to_json())
    assert line["t"] == T and line["action"] in ("ALLOW", "THROTTLE", "CHALLENGE", "BLOCK")
    assert set(line) == {"account", "t", "score", "action", "policy_action", "reasons",
                         "cluster", "label", "campaign", "group", "segment", "baselines"}


def test_invalid_events_are_named_or_skipped():
    events = [_event(1, "a", 0), _event(2, "a", 1, ip="999.1.1.1"), _event(3, "a", 2)]
    with InProcessReplay.create() as replay, pytest.raises(
            EventFormatError, match=r"ev:2: invalid request: client_ip: is not an IPv4"):
        list(replay.run(events, source="ev"))
    with InProcessReplay.create() as replay:
        assert len(list(replay.run(events, skip_invalid=True))) == 2
        assert replay.invalid == 1


def test_enrichment_and_shadow_policy_on_simulated_traffic(tiny_sim):
    events = list(itertools.islice(read_events(tiny_sim.events), 2000))
    strict = Policy(thresholds=Thresholds(throttle=0.3))  # a given policy is the one used
    with InProcessReplay.create(geo_dir=tiny_sim.geo, policy=strict) as replay:
        enforcing = list(replay.run(events))
    with InProcessReplay.create(geo_dir=tiny_sim.geo,
                                policy=replace(strict, shadow=True)) as replay:
        shadow = list(replay.run(events))
    assert all(r.score < 0.3 for r in enforcing if r.policy_action == "ALLOW")
    assert any("IP_ANONYMIZED" in r.reasons for r in enforcing)  # the .mmdb set is used
    assert any(r.policy_action != "ALLOW" for r in enforcing)
    # Same decisions in shadow mode, but nothing enforced: the policy action tells.
    assert [r.policy_action for r in shadow] == [r.policy_action for r in enforcing]
    assert {r.action for r in shadow} == {"ALLOW"}


def test_geo_paths_are_found_by_maxmind_file_names(tiny_sim, tmp_path):
    paths = geo_paths_in(tiny_sim.geo)
    assert paths.asn.name == "GeoLite2-ASN.mmdb"
    assert paths.anonymous_ip.name == "GeoIP2-Anonymous-IP.mmdb"
    assert paths.isp.name == "GeoIP2-ISP.mmdb"
    assert geo_paths_in(tmp_path).asn is None
    with pytest.raises(FileNotFoundError):
        geo_paths_in(tmp_path / "missing")


async def test_remote_replay_scores_every_event_on_a_running_server(tiny_sim, tmp_path):
    geo = geo_paths_in(tiny_sim.geo)
    app = App(Settings(host="127.0.0.1", port=0, data_dir=tmp_path, persist=False,
                       hash_key="00" * 32, geoip_asn_db=geo.asn,
                       geoip_anonymous_ip_db=geo.anonymous_ip, shutdown_grace_s=0.5,
                       geoip_reload_interval_s=3600, checkpoint_interval_s=3600))
    port = await app.start()
    try:
        events = list(itertools.islice(read_events(tiny_sim.events), 400))
        # A huge speed maps hours of events into well under a second of wall time.
        replay = RemoteReplay(f"127.0.0.1:{port}", speed=1e6, chunk=64,
                              baselines=default_baselines())
        records = await asyncio.to_thread(lambda: list(replay.run(events)))
    finally:
        await app.stop(0)
    assert len(records) == 400 and replay.errors == 0
    assert [r.account for r in records] == [e.request.account_id for e in events]
    assert [r.event_time for r in records] == [e.event_time for e in events]  # original times
    assert {r.label for r in records} == {e.label for e in events}
    assert any("IP_ANONYMIZED" in r.reasons for r in records)


def test_remote_replay_reports_an_unreachable_server():
    replay = RemoteReplay("127.0.0.1:1", speed=1e6, timeout_s=2)
    with pytest.raises(RemoteError, match=r"127\.0\.0\.1:1: ScoreBatch failed: UNAVAILABLE"):
        list(replay.run([_event(1, "a", 0)]))
