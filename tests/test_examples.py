"""What examples/ shows must be true: the specs validate, submit in demo mode (`make run`, which
they say they need) and the policy parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from approvals.policy import policy_parse
from jobs.spec import spec_load

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted((EXAMPLES / "specs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_validates(path: Path) -> None:
    spec = spec_load(path.read_text(), source=str(path))
    assert spec["steps"]


def test_the_example_policy_parses() -> None:
    assert len(policy_parse((EXAMPLES / "policy.yaml").read_text()).digest) == 64


@pytest.mark.django_db
@pytest.mark.parametrize("path", sorted((EXAMPLES / "specs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_submits_through_the_cli_in_demo_mode(
    path: Path, capsys: pytest.CaptureFixture[str], demo_mode: None
) -> None:
    import json

    from jobs.management.commands.gait import main

    assert (
        main(["job", "submit", "--identity", "agent.example", "--spec", str(path), "--json"]) == 0
    )
    job = json.loads(capsys.readouterr().out)["job"]
    assert job["status"] == "queued" and job["step_count"] == len(
        spec_load(path.read_text())["steps"]
    )
