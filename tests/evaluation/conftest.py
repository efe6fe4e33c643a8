"""Fixtures for the evaluation harness: a tiny scenario, its files, and a decision builder."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from ringfence.service.evaluation.scenario import ScenarioConfig, preset
from ringfence.service.evaluation.simulator import write_simulation


def tiny_config(seed: int = 3, days: float = 0.5) -> ScenarioConfig:
    """~100 honest and ~24 fleet accounts; the fleet starts at hour 6."""
    return replace(preset("ci").scaled(0.1).with_days(days), seed=seed)


@dataclass(frozen=True)
class SimFiles:
    events: Path
    geo: Path
    config: ScenarioConfig


@pytest.fixture(scope="session")
def tiny_sim(tmp_path_factory: pytest.TempPathFactory) -> SimFiles:
    root = tmp_path_factory.mktemp("tiny")
    config = tiny_config(days=1.0)
    write_simulation(config, root / "events.jsonl", root / "geo")
    return SimFiles(root / "events.jsonl", root / "geo", config)


@pytest.fixture
def decision() -> Callable[..., dict[str, Any]]:
    """A decisions-file object with sensible defaults; override any field."""
    def make(account: str, t: float, *, action: str = "ALLOW", label: str = "benign",
             campaign: str = "", group: str = "", segment: str = "", score: float = 0.1,
             baselines: dict[str, str] | None = None, cluster: str = "",
             reasons: list[str] | None = None, xy: list[float] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "account": account, "t": t, "score": score, "action": action,
            "policy_action": action, "reasons": reasons or [], "cluster": cluster,
            "label": label, "campaign": campaign, "group": group, "segment": segment,
            "baselines": baselines if baselines is not None else {"per_account": "ALLOW"}}
        if xy is not None:
            d["xy"] = xy
        return d
    return make


@pytest.fixture
def write_jsonl() -> Callable[[Path, list[dict[str, Any]]], Path]:
    def write(path: Path, objects: list[dict[str, Any]]) -> Path:
        path.write_text("".join(json.dumps(o) + "\n" for o in objects))
        return path
    return write


@pytest.fixture
def make_config() -> Callable[..., ScenarioConfig]:
    return tiny_config
