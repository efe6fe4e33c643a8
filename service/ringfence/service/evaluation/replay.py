"""Replays events through the whole scoring pipeline in process, in event time: the clock is
set to each event's time, so 45 simulated days run as fast as the engine scores, and work
that runs "every N minutes" (background refits) runs through the ``on_time`` hook in
simulated time. Every decision is recorded next to the event's ground truth and the
baselines' verdicts."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol

from ringfence.service.adapters.clock import ManualClock
from ringfence.service.adapters.embedded_store import EmbeddedProfileStore
from ringfence.service.adapters.event_log import NullEventLog
from ringfence.service.adapters.geoip import GeoIpPaths, MaxMindGeoIp
from ringfence.service.api.convert import Limits, to_observation
from ringfence.service.core.cluster_state import ClusterState, RefitSchedule
from ringfence.service.core.clustering import ClusterParams
from ringfence.service.core.engine import RiskEngine
from ringfence.service.core.errors import InvalidInput
from ringfence.service.core.identity import Hasher
from ringfence.service.core.model import Action, Decision
from ringfence.service.core.policy import Policy
from ringfence.service.evaluation.decisions import DecisionRecord
from ringfence.service.evaluation.events import EventFormatError, LabelledEvent

# A fixed key: replays of the same events give the same hashes, hence the same decisions.
REPLAY_KEY = b"ringfence-evaluation-replay-key!"
# Replayed events are as old as the log; only the future-skew check still applies.
REPLAY_LIMITS = Limits(max_event_age_s=math.inf)

TimeHook = Callable[[float], None]
"""Called with the new simulated time whenever it moves forward, before that event is scored."""

# MaxMind file names (and the simulator's) -> GeoIpPaths field, most specific first.
_GEO_NAMES = (("anonymous_ip", "Anonymous-IP"), ("connection_type", "Connection-Type"),
              ("asn", "ASN"), ("isp", "ISP"), ("city", "City"), ("country", "Country"))


def geo_paths_in(directory: Path | None) -> GeoIpPaths:
    """The MaxMind databases in a directory, recognised by the usual file names
    (GeoLite2-ASN.mmdb, GeoIP2-Anonymous-IP.mmdb, ...). ``None`` or no files: no enrichment."""
    if directory is None:
        return GeoIpPaths()
    if not directory.is_dir():
        raise FileNotFoundError(f"geo directory not found: {directory}")
    found: dict[str, Path] = {}
    for path in sorted(directory.glob("*.mmdb")):
        for kind, marker in _GEO_NAMES:
            if marker in path.name and kind not in found:
                found[kind] = path
                break
    return GeoIpPaths(**found)


class Baseline(Protocol):
    name: str

    def throttles(self, event: LabelledEvent) -> bool: ...


def baseline_verdicts(baselines: Iterable[Baseline], event: LabelledEvent,
                      ) -> tuple[tuple[str, str], ...]:
    return tuple((b.name, Action.THROTTLE.name if b.throttles(event) else Action.ALLOW.name)
                 for b in baselines)


def record_of(event: LabelledEvent, decision: Decision,
              baselines: tuple[tuple[str, str], ...]) -> DecisionRecord:
    return DecisionRecord(
        account=event.request.account_id, event_time=event.event_time,
        score=decision.risk_score, action=decision.action.name,
        policy_action=decision.policy_action.name,
        reasons=tuple(r.code for r in decision.reasons),
        cluster=decision.cluster.cluster_id if decision.cluster else "",
        label=event.label, campaign=event.campaign, group=event.group, segment=event.segment,
        baselines=baselines)


def _clustering_hook(clusters: ClusterState, store: EmbeddedProfileStore, tick_s: float,
                     then: TimeHook | None) -> TimeHook:
    next_tick = -math.inf

    def hook(now: float) -> None:
        nonlocal next_tick
        if now >= next_tick:
            clusters.run_due(now, store.active_accounts, store.account_profile)
            next_tick = now + tick_s
        if then is not None:
            then(now)
    return hook


# Refits in simulated time on the service's default schedule (every 15 min, early once 500
# accounts wait, never within 60 s of the last), and waiting accounts placed every simulated
# minute (the service places them every second): a replay measures what a server with the
# default settings would have decided.
REPLAY_REFIT = RefitSchedule()
REPLAY_TICK_S = 60.0


def create_compared(*, geo_dir: Path | None, policy: Policy | None,
                    baselines: Iterable[Baseline], clustering: bool = True,
                    compare: bool = True) -> InProcessReplay:
    """The replay the CLI runs: ringfence as served (clustering on by default), and, to show
    what clustering adds, the same ringfence without it as one more system in the report."""
    systems = list(baselines)
    if clustering and compare:
        systems.append(EngineBaseline("ringfence_without_clustering",
                                      InProcessReplay.create(geo_dir=geo_dir, policy=policy)))
    return InProcessReplay.create(geo_dir=geo_dir, policy=policy, baselines=systems,
                                  clustering=ClusterParams() if clustering else None,
                                  refit=REPLAY_REFIT, tick_s=REPLAY_TICK_S)


class EngineBaseline:
    """Another ringfence configuration scored side by side on the same events, reported as a
    system of its own (e.g. ringfence without clustering, to show what clusters add)."""

    def __init__(self, name: str, replay: InProcessReplay) -> None:
        self.name = name
        self._replay = replay

    def throttles(self, event: LabelledEvent) -> bool:
        try:
            return self._replay.score(event).action != Action.ALLOW.name
        except InvalidInput:
            return False

    def close(self) -> None:
        self._replay.close()


class InProcessReplay:
    """A RiskEngine composed like app.py does (in-memory profiles, no event log, MaxMind
    enrichment, fixed hash key) on a ManualClock. Pass your own ``engine``/``clock`` to
    replay through a differently composed engine (e.g. one with clustering)."""

    def __init__(self, *, engine: RiskEngine, clock: ManualClock,
                 baselines: Iterable[Baseline] = (), on_time: TimeHook | None = None,
                 closers: Iterable[Callable[[], None]] = ()) -> None:
        self.engine = engine
        self.clock = clock
        self.baselines = list(baselines)
        self.on_time = on_time
        self.invalid = 0
        self._latest = -math.inf
        self._closers = list(closers)

    @classmethod
    def create(cls, *, geo_dir: Path | None = None, policy: Policy | None = None,
               baselines: Iterable[Baseline] = (), on_time: TimeHook | None = None,
               start: float = 0.0, clustering: ClusterParams | None = None,
               refit: RefitSchedule | None = None, tick_s: float = 600.0) -> InProcessReplay:
        """With ``clustering``, accounts are clustered as the server does, in simulated time:
        every ``tick_s`` of event time waiting accounts are placed and a refit runs when due
        (in this thread, so a replay is deterministic)."""
        clock = ManualClock(start)
        geoip = MaxMindGeoIp(geo_paths_in(geo_dir))
        store = EmbeddedProfileStore(None)
        events = NullEventLog()
        policy = policy or Policy()
        clusters = (ClusterState(clustering, refit or RefitSchedule(), policy.cluster)
                    if clustering is not None else None)
        engine = RiskEngine(policy=policy, geoip=geoip, store=store, events=events,
                            clock=clock, hasher=Hasher(REPLAY_KEY), clusters=clusters)
        hook = on_time
        if clusters is not None:
            hook = _clustering_hook(clusters, store, tick_s, on_time)
        return cls(engine=engine, clock=clock, baselines=baselines, on_time=hook,
                   closers=(events.close, store.close, geoip.close))

    def score(self, event: LabelledEvent) -> DecisionRecord:
        """Scores one event at its event time; raises InvalidInput as the server would."""
        t = event.event_time
        self.clock.set(t)
        if t > self._latest:
            self._latest = t
            if self.on_time is not None:
                self.on_time(t)
        obs = to_observation(event.request, now=t, limits=REPLAY_LIMITS)
        decision = self.engine.score(obs)
        return record_of(event, decision, baseline_verdicts(self.baselines, event))

    def run(self, events: Iterable[LabelledEvent], *, skip_invalid: bool = False,
            source: str = "<events>") -> Iterator[DecisionRecord]:
        """Scores every event in order. An event the server would reject raises
        EventFormatError naming its line, or is counted in ``invalid`` and skipped."""
        for event in events:
            try:
                yield self.score(event)
            except InvalidInput as exc:
                if not skip_invalid:
                    raise EventFormatError(source, event.line, f"invalid request: {exc}"
                                           ) from None
                self.invalid += 1

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers.clear()
        for baseline in self.baselines:
            if isinstance(baseline, EngineBaseline):
                baseline.close()

    def __enter__(self) -> InProcessReplay:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
