"""The evaluation package's public names are pinned: changing them is a deliberate act."""

import ringfence.service.evaluation as evaluation


def test_public_exports():
    assert set(evaluation.__all__) == {
        "PRESETS", "DecisionRecord", "EventFormatError", "Evaluation", "InProcessReplay",
        "LabelledEvent", "ScenarioConfig", "evaluate_decisions", "preset", "read_events",
        "simulate_events", "write_simulation",
    }
    for name in evaluation.__all__:
        assert getattr(evaluation, name) is not None
