"""The evaluation harness: simulate labelled traffic, replay it through ringfence, measure.

    simulate  scenario.py (what to generate: presets, scale), population.py and attack.py
              (who sends it), traffic.py and timing.py (where from, with what, when),
              catalog.py (browsers, SDK stacks, countries), networks.py (the address plan and
              its .mmdb records), simulator.py (the event-time merge and the writer)
    replay    replay.py (in process, in event time), remote.py (a running server over gRPC),
              baselines.py (fixed-window limits computed on the same events),
              decisions.py (the decisions file format)
    evaluate  metrics.py (every number), stats.py (ROC, PR, ARI, percentiles),
              report.py + svg.py (the HTML page)
    cli.py    the simulate / replay / evaluate subcommands (``register``)

The event format (events.py) is the ScoreRequest in protobuf JSON form plus ``label``,
``campaign``, ``group`` and ``segment``; docs/evaluation.md describes it for users who convert
their own gateway logs.
"""

from ringfence.service.evaluation.decisions import DecisionRecord
from ringfence.service.evaluation.events import EventFormatError, LabelledEvent, read_events
from ringfence.service.evaluation.metrics import Evaluation, evaluate_decisions
from ringfence.service.evaluation.replay import InProcessReplay
from ringfence.service.evaluation.scenario import PRESETS, ScenarioConfig, preset
from ringfence.service.evaluation.simulator import simulate_events, write_simulation

__all__ = [
    "PRESETS",
    "DecisionRecord",
    "Evaluation",
    "EventFormatError",
    "InProcessReplay",
    "LabelledEvent",
    "ScenarioConfig",
    "evaluate_decisions",
    "preset",
    "read_events",
    "simulate_events",
    "write_simulation",
]
