"""What examples/ shows must be true: the specs validate, submit in demo mode (`make run`, which
they say they need) and the policy parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from approvals.models import ApprovalRequest
from approvals.policy_format import policy_parse
from approvals.services import approval_decide
from gaitweb.demo import demo_seed
from gaitweb.lib.actors import Actor
from jobs.engine.runner import advance
from jobs.management.commands.gait import main
from jobs.models import Job, StepRun
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

    assert (
        main(["job", "submit", "--identity", "agent.example", "--spec", str(path), "--json"]) == 0
    )
    job = json.loads(capsys.readouterr().out)["job"]
    assert job["status"] == "queued" and job["step_count"] == len(
        spec_load(path.read_text())["steps"]
    )


@pytest.mark.django_db(transaction=True)
def test_the_refund_agent_example_parks_for_two_reviewers_then_completes(
    demo_mode: None,
) -> None:
    import examples.refund_agent  # noqa: F401  (demo mode registers it: gaitweb.settings)

    demo_seed()
    job = Job.objects.get(job_id="demo-refund-agent")
    assert job.is_workflow and job.policy_id is not None
    assert advance(job.job_id) == "decision_needed"
    request = ApprovalRequest.objects.get(job=job)
    assert request.tool_name == "invoices.refund" and request.required_approvals == 2
    assert request.intent["args"] == {"invoice": "INV-42", "amount": 420}
    for reviewer in ("rita", "rob"):
        approval_decide(
            actor=Actor.system(reviewer), request_id=request.request_id, decision="approve"
        )
    assert advance(job.job_id) == "completed"
    out = Job.objects.get(pk=job.pk).outputs["refund-agent"]
    assert out["answer"].startswith("Refunded INV-42") and "rf-INV-42" in out["answer"]
    names = list(
        StepRun.objects.filter(job=job, step_index__gte=1, status="succeeded")
        .order_by("step_index")
        .values_list("step_name", flat=True)
    )
    assert names == [
        "plan",
        "agent.model",
        "invoices.read",
        "agent.model",
        "invoices.refund",
        "agent.model",
    ]
