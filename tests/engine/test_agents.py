"""A Pydantic AI agent inside a workflow (jobs.agents), with a scripted offline model: each model
request is a memoized step, each tool call goes through the gate, approvals park the job, and a
kill -9 between a model request and its tool call does not ask the model again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from approvals.models import ApprovalRequest, PolicyVersion
from approvals.services import approval_decide
from gaitweb.lib.actors import Actor
from jobs.engine.runner import advance
from jobs.models import Job, StepRun
from tests.engine.conftest import LEASE_SECONDS
from tests.workers import wait_for
from tests.workflow_world import policy_stored, workflow_submit

SUBMITTER = Actor.system("tester")
REVIEWER = Actor.system("rita")


@pytest.fixture
def policy(transactional_db: None) -> PolicyVersion:
    return policy_stored("agents")


def submit(policy: PolicyVersion | None, **input: Any) -> Job:
    return workflow_submit("refund-agent-test", actor=SUBMITTER, policy=policy, **input)


def notes(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def approve(job: Job) -> None:
    request = ApprovalRequest.objects.get(job=job, status="pending")
    approval_decide(actor=REVIEWER, request_id=request.request_id, decision="approve")


@pytest.mark.django_db(transaction=True)
def test_model_requests_are_memoized_and_the_refund_waits_for_a_reviewer(
    policy: PolicyVersion, tmp_path: Path
) -> None:
    path = tmp_path / "notes"
    job = submit(policy, path=str(path), invoice="42")
    assert advance(job.job_id) == "decision_needed"
    assert notes(path) == ["model 0", "tool lookup", "model 1"]
    request = ApprovalRequest.objects.get(job=job)
    assert request.tool_name == "payments.refund"
    assert request.intent["args"] == {"invoice": "42", "amount": 420}
    approve(job)
    assert advance(job.job_id) == "completed"
    # the replay asked the model nothing it had answered and looked nothing up again
    assert notes(path) == ["model 0", "tool lookup", "model 1", "tool refund", "model 2"]
    job = Job.objects.get(pk=job.pk)
    assert job.outputs["refund-agent-test"] == "Done: refund 42 420 sent"
    calls = list(
        StepRun.objects.filter(job=job, step_index__gte=1, status="succeeded")
        .order_by("step_index")
        .values_list("step_name", flat=True)
    )
    assert calls == ["agent.model", "lookup", "agent.model", "payments.refund", "agent.model"]


@pytest.mark.django_db(transaction=True)
def test_a_requires_approval_tool_needs_a_gaitweb_approval_without_any_policy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notes"
    job = submit(None, path=str(path), invoice="7", hitl=True)
    assert advance(job.job_id) == "decision_needed"
    request = ApprovalRequest.objects.get(job=job)
    assert "tool_requires_approval" in request.gate_result["reason_codes"]

    approval_decide(
        actor=REVIEWER, request_id=request.request_id, decision="reject", reason="wrong invoice"
    )
    assert advance(job.job_id) == "completed"
    out = Job.objects.get(pk=job.pk).outputs["refund-agent-test"]
    assert out == "Done: A reviewer rejected this tool call: wrong invoice"
    assert "tool refund" not in notes(path)


@pytest.mark.slow
def test_a_kill_9_between_a_model_request_and_its_tool_call_does_not_ask_the_model_again(
    clusters: Any, policy: PolicyVersion, tmp_path: Path
) -> None:
    path = tmp_path / "notes"
    job = submit(policy, path=str(path), invoice="42", seconds=3.0)
    cluster = clusters()
    wait_for(lambda: "tool lookup" in notes(path), timeout=20, what="the lookup to start")
    assert StepRun.objects.filter(job=job, step_name="agent.model", status="succeeded").count() == 1
    cluster.kill()  # the model's first answer is recorded; the lookup it asked for is running
    clusters()
    wait_for(
        lambda: Job.objects.get(pk=job.pk).status == "decision_needed",
        timeout=LEASE_SECONDS + 20,
        what="the refund's approval",
    )
    approve(job)
    wait_for(lambda: Job.objects.get(pk=job.pk).status == "completed", timeout=20)
    seen = notes(path)
    assert seen.count("model 0") == 1, seen  # no second request for the first turn
    assert seen.count("model 1") == 1 and seen.count("model 2") == 1
    assert seen.count("tool lookup") == 2  # idempotent: the lookup cut by the kill ran again
    assert seen.count("tool refund") == 1
