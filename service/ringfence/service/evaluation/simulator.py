"""The simulation loop: merges every account's next request time through a heap, so memory is
O(accounts) whatever the duration, and events come out in event-time order. One RNG drawn in
a fixed order makes a seed reproduce the same bytes (same Python and library versions)."""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ringfence.service.evaluation.attack import fleet_slots
from ringfence.service.evaluation.events import open_text
from ringfence.service.evaluation.networks import AddressPlan
from ringfence.service.evaluation.population import benign_accounts, mobile_users
from ringfence.service.evaluation.scenario import ScenarioConfig
from ringfence.service.evaluation.traffic import Json
from ringfence.service.geodata import write_geo_databases


class _Actor(Protocol):
    def first_time(self, rng: random.Random) -> float: ...
    def next_time(self, t: float, rng: random.Random) -> float: ...
    def event(self, t: float, rng: random.Random) -> Json: ...


def simulate_events(config: ScenarioConfig) -> Iterator[Json]:
    """Yields the scenario's events lazily, in event-time order (each a JSON-ready dict)."""
    rng = random.Random(config.seed)
    plan = AddressPlan(mobile_users(config))
    actors: list[_Actor] = [*benign_accounts(config, plan, rng), *fleet_slots(config, plan, rng)]
    end = config.end
    heap: list[tuple[float, int]] = []
    for i, actor in enumerate(actors):
        t = actor.first_time(rng)
        if t < end:
            heap.append((t, i))
    heapq.heapify(heap)
    while heap:
        t, i = heap[0]
        actor = actors[i]
        yield actor.event(t, rng)
        nt = actor.next_time(t, rng)
        if nt < end:
            heapq.heapreplace(heap, (nt, i))
        else:
            heapq.heappop(heap)


def simulate_lines(config: ScenarioConfig) -> Iterator[str]:
    """The events as JSON Lines text (compact, one object per line, newline-terminated)."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for event in simulate_events(config):
        yield dumps(event) + "\n"


def address_plan(config: ScenarioConfig) -> AddressPlan:
    return AddressPlan(mobile_users(config))


@dataclass(slots=True)
class SimulationSummary:
    events: int = 0
    attack_events: int = 0
    accounts: int = 0
    attack_accounts: int = 0
    by_campaign: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"events": self.events, "attack_events": self.attack_events,
                "accounts": self.accounts, "attack_accounts": self.attack_accounts,
                "attack_events_by_campaign": dict(sorted(self.by_campaign.items()))}


def write_simulation(config: ScenarioConfig, out: Path | str, geo_dir: Path | None,
                     ) -> SimulationSummary:
    """Writes the events (``-`` for stdout, ``.gz`` compresses) and, when ``geo_dir`` is
    given, the matching .mmdb set. Counting accounts takes one set of ids in memory."""
    if geo_dir is not None:
        write_geo_databases(address_plan(config).records(), geo_dir)
    summary = SimulationSummary()
    accounts: set[str] = set()
    attack: set[str] = set()
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    with open_text(out, "w") as f:
        for event in simulate_events(config):
            f.write(dumps(event) + "\n")
            summary.events += 1
            account = event["accountId"]
            accounts.add(account)
            if event["label"] == "attack":
                summary.attack_events += 1
                attack.add(account)
                campaign = event["campaign"]
                summary.by_campaign[campaign] = summary.by_campaign.get(campaign, 0) + 1
    summary.accounts = len(accounts)
    summary.attack_accounts = len(attack)
    return summary
