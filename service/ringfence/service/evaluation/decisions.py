"""The decisions file format: one JSON object per line, what ringfence (and each baseline)
answered to one event, next to the event's ground truth. ``replay`` writes it; ``evaluate``
reads it (see docs/evaluation.md)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringfence.service.evaluation.events import EventFormatError, open_text

ACTIONS = ("ALLOW", "THROTTLE", "CHALLENGE", "BLOCK")

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One line of the decisions file. Actions are enum names; ``baselines`` maps each
    baseline's name to its verdict; ``xy`` is an optional 2-D position in the clustering
    space (for the report's map)."""

    account: str
    event_time: float
    score: float
    action: str
    policy_action: str
    reasons: tuple[str, ...]
    cluster: str
    label: str
    campaign: str
    group: str
    segment: str
    baselines: tuple[tuple[str, str], ...] = ()
    xy: tuple[float, float] | None = None

    def to_json(self) -> str:
        d: Json = {
            "account": self.account, "t": round(self.event_time, 3), "score": self.score,
            "action": self.action, "policy_action": self.policy_action,
            "reasons": list(self.reasons), "cluster": self.cluster, "label": self.label,
            "campaign": self.campaign, "group": self.group, "segment": self.segment,
            "baselines": dict(self.baselines)}
        if self.xy is not None:
            d["xy"] = list(self.xy)
        return json.dumps(d, separators=(",", ":"))


def _number(d: Json, key: str, source: str, line: int) -> float:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EventFormatError(source, line, f"{key} must be a finite number")
    return float(value)


def _text(d: Json, key: str, source: str, line: int, *, required: bool = False) -> str:
    value = d.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise EventFormatError(source, line, f"{key} must be a "
                                             f"{'non-empty ' if required else ''}string")
    return value


def _action(d: Json, key: str, source: str, line: int) -> str:
    value = d.get(key)
    if value not in ACTIONS:
        raise EventFormatError(source, line, f"{key} must be one of {list(ACTIONS)}")
    return str(value)


def parse_decision(d: Json, line: int, source: str = "<decisions>") -> DecisionRecord:
    """Validates one decision object; EventFormatError names the line and the field.
    ``action`` may be left out (it then equals ``policy_action``)."""
    account = _text(d, "account", source, line, required=True)
    event_time = _number(d, "t", source, line)
    score = _number(d, "score", source, line)
    policy_action = _action(d, "policy_action", source, line)
    baselines = d.get("baselines", {})
    if not isinstance(baselines, dict):
        raise EventFormatError(source, line, "baselines must be an object")
    label = _text(d, "label", source, line)
    if label not in ("", "benign", "attack"):
        raise EventFormatError(source, line, "label must be 'benign', 'attack' or empty")
    reasons = d.get("reasons", [])
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise EventFormatError(source, line, "reasons must be a list of strings")
    xy = d.get("xy")
    if xy is not None:
        if (not isinstance(xy, list) or len(xy) != 2 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in xy)):
            raise EventFormatError(source, line, "xy must be [x, y]")
        xy = (float(xy[0]), float(xy[1]))
    return DecisionRecord(
        account=account, event_time=event_time, score=score,
        action=_action(d, "action", source, line) if "action" in d else policy_action,
        policy_action=policy_action, reasons=tuple(reasons),
        cluster=_text(d, "cluster", source, line), label=label,
        campaign=_text(d, "campaign", source, line), group=_text(d, "group", source, line),
        segment=_text(d, "segment", source, line),
        baselines=tuple((name, _action(baselines, name, source, line)) for name in baselines),
        xy=xy)


def read_decision_objects(path: Path | str) -> Iterator[tuple[int, Json]]:
    """(line number, object) for every non-blank line; EventFormatError on bad JSON or an
    empty file."""
    source = str(path)
    count = 0
    with open_text(path, "r") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                d = json.loads(text)
            except json.JSONDecodeError as exc:
                raise EventFormatError(source, number, f"not valid JSON ({exc.msg} at column "
                                                       f"{exc.colno})") from None
            if not isinstance(d, dict):
                raise EventFormatError(source, number, "not a JSON object")
            count += 1
            yield number, d
    if count == 0:
        raise EventFormatError(source, 0, "no decisions in the input")
