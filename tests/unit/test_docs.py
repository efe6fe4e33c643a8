"""The docs a user reads match the code."""

import tomllib
from pathlib import Path

from ringfence.service.core.policy import Policy
from ringfence.service.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields
               if f"{ENV_PREFIX}{name.upper()}" not in readme]
    assert missing == []


def test_example_policy_is_the_default_policy():
    with (ROOT / "policy.example.toml").open("rb") as f:
        assert Policy.from_mapping(tomllib.load(f)) == Policy()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and ci.strip().endswith("make test")
