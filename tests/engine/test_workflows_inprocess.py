"""Durable workflows driven in-process (``advance`` called directly, no cluster): the replay
rules, parking, the gate and the spec shape, on SQLite and PostgreSQL. Real workers and
kill -9 are in test_workflows_workers.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from approvals.models import ApprovalRequest, PolicyVersion
from approvals.services import approval_decide
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import InvalidInput
from jobs.durable import workflow_timeline
from jobs.engine.runner import advance
from jobs.journal import chain_verify
from jobs.models import Checkpoint, Job, JobEvent, StepRun
from jobs.services import job_signal, job_stop
from jobs.spec import spec_validate
from tests.workflow_world import policy_stored, workflow_submit

pytestmark = pytest.mark.django_db(transaction=True)

SUBMITTER = Actor.system("tester")


def submit(workflow: str, policy: PolicyVersion | None = None, **input: Any) -> Job:
    return workflow_submit(workflow, actor=SUBMITTER, policy=policy, **input)


def effects(path: Path) -> list[str]:
    return [line.split()[1] for line in path.read_text().splitlines()] if path.exists() else []


def job_of(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


@pytest.fixture
def policy() -> PolicyVersion:
    return policy_stored()


def test_the_spec_shape_is_validated_against_the_function() -> None:
    spec = spec_validate({"workflow": "calls", "input": {"path": "/tmp/x", "n": 3}})
    assert spec["workflow"] == "calls"
    assert spec["steps"][0]["kind"] == "workflow"
    assert spec["steps"][0]["with"] == {
        "workflow": "calls",
        "version": "1",
        "input": {"path": "/tmp/x", "n": 3},
    }
    refusals = [
        ({"workflow": "nope"}, "spec_unknown_workflow", "workflow"),
        ({"workflow": "calls", "input": {"n": 3}}, "spec_missing_field", "input.path"),
        ({"workflow": "calls", "input": {"path": "p", "x": 1}}, "spec_unknown_field", "input.x"),
        ({"workflow": "calls", "input": {"path": "p", "n": "3"}}, "spec_invalid", "input.n"),
        ({"workflow": "calls", "input": {"path": "p", "n": True}}, "spec_invalid", "input.n"),
        ({"workflow": "calls", "input": []}, "spec_invalid", "input"),
        ({"workflow": "calls", "input": {"path": "p"}, "steps": []}, "spec_unknown_field", "steps"),
        ({"workflow": "versioned", "version": "9"}, "spec_unknown_workflow", "version"),
    ]
    for raw, code, path in refusals:
        with pytest.raises(InvalidInput) as exc:
            spec_validate(raw)
        assert (exc.value.code, exc.value.details["path"]) == (code, path), raw
    # the newest registered version unless one is named
    assert spec_validate({"workflow": "versioned"})["steps"][0]["with"]["version"] == "2"


def test_a_workflow_runs_each_call_once_and_replays_after_parking(tmp_path: Path) -> None:
    path = tmp_path / "fx"
    job = submit("sleeper", path=str(path), seconds=0.2)
    assert advance(job.job_id) == "waiting"  # the sleep
    assert effects(path) == ["before"]
    import time

    time.sleep(0.25)
    assert advance(job.job_id) == "waiting"  # now the signal
    assert effects(path) == ["before"]  # replayed, not re-run
    job_signal(actor=SUBMITTER, job_id=job.job_id, name="reply", payload={"ok": 1})
    assert advance(job.job_id) == "completed"
    assert effects(path) == ["before", "after"]
    job = job_of(job)
    out = job.outputs["sleeper"]
    assert out["reply"] == {"ok": 1}
    calls, total = workflow_timeline(job)
    assert total == 7
    assert [(c["name"], c["kind"], c["status"]) for c in calls] == [
        ("before", "step", "succeeded"),
        ("now", "value", "succeeded"),
        ("nap", "sleep", "succeeded"),
        ("reply", "wait_event", "succeeded"),
        ("after", "step", "succeeded"),
        ("uuid", "value", "succeeded"),
        ("random", "value", "succeeded"),
    ]
    assert StepRun.objects.get(job=job, step_index=6).output == out["uuid"]
    assert chain_verify(job).ok


def test_nondeterminism_fails_the_job_and_names_both_calls(tmp_path: Path) -> None:
    path = tmp_path / "fx"
    job = submit("changes", path=str(path))
    assert advance(job.job_id) == "waiting"
    Path(str(path) + ".name").write_text("other\n")
    job_signal(actor=SUBMITTER, job_id=job.job_id, name="go")
    assert advance(job.job_id) == "completed"  # the recorded calls replay; call 3 is new
    # a second job: the change happens between recording call 3 and replaying it
    job2 = submit("changes", path=str(tmp_path / "fy"))
    Path(str(tmp_path / "fy") + ".name").write_text("second\n")
    assert advance(job2.job_id) == "waiting"
    job_signal(actor=SUBMITTER, job_id=job2.job_id, name="go")
    # record everything, then re-open the job as if it resumed after a change of code
    assert advance(job2.job_id) == "completed"
    Job.objects.filter(pk=job2.pk).update(status="queued", cursor=0, finished_at=None)
    StepRun.objects.filter(job=job2, step_index=0).delete()
    Path(str(tmp_path / "fy") + ".name").write_text("renamed\n")
    assert advance(job2.job_id) == "failed"
    job2 = job_of(job2)
    assert job2.status_reason_code == "workflow_nondeterministic"
    failed = JobEvent.objects.filter(job=job2, type="failed").last()
    assert failed.payload["recorded"] == "second" and failed.payload["called"] == "renamed"
    assert "'second'" in failed.payload["error"]["message"]
    assert "'renamed'" in failed.payload["error"]["message"]


def test_a_blocked_tool_raises_into_the_workflow(policy: PolicyVersion, tmp_path: Path) -> None:
    path = tmp_path / "fx"
    job = submit("blocked-tool", policy=policy, path=str(path))
    assert advance(job.job_id) == "completed"
    assert job_of(job).outputs["blocked-tool"] == {"blocked": ["matched_rule_no_rm"]}
    assert effects(path) == ["fallback"]  # the rm never ran
    blocked = JobEvent.objects.get(job=job, type="dispatch_blocked")
    assert blocked.payload["tool"] == "shell.rm" and blocked.payload["verdict"] == "block"
    # uncaught: the job is blocked with the gate's reasons
    job2 = submit("blocked-tool", policy=policy, path=str(path), catch=False)
    assert advance(job2.job_id) == "gated"
    job2 = job_of(job2)
    assert job2.status == "blocked"
    cp = Checkpoint.objects.filter(job=job2).last()
    assert cp.type == "blocked" and "shell.rm" in cp.summary
    assert effects(path) == ["fallback"]


def test_an_approval_parks_and_the_approved_call_runs_once(
    policy: PolicyVersion, tmp_path: Path
) -> None:
    path = tmp_path / "fx"
    job = submit("refund", policy=policy, path=str(path), invoice="42", amount=420)
    assert advance(job.job_id) == "decision_needed"
    job = job_of(job)
    assert (job.status, job.lease_token) == ("decision_needed", None)
    request = ApprovalRequest.objects.get(job=job)
    assert request.tool_name == "payments.refund"
    assert request.intent["args"] == {"invoice": "42", "amount": 420}
    assert request.intent["context"]["identity"] == job.identity
    assert request.step_index == 3 and request.step_name == "payments.refund"
    assert effects(path) == ["lookup"]
    reviewer = Actor.system("rita")
    approval_decide(actor=reviewer, request_id=request.request_id, decision="approve")
    assert job_of(job).status == "queued"
    assert advance(job.job_id) == "completed"
    assert job_of(job).outputs["refund"] == {"receipt": "r-42-420"}
    assert effects(path) == ["lookup", "refund"]  # the lookup and the plan replayed
    assert Checkpoint.objects.filter(job=job, type="plan").count() == 1


def test_a_rejection_raises_tool_rejected_with_the_reason(
    policy: PolicyVersion, tmp_path: Path
) -> None:
    path = tmp_path / "fx"
    job = submit("refund", policy=policy, path=str(path), invoice="7", amount=1)
    assert advance(job.job_id) == "decision_needed"
    request = ApprovalRequest.objects.get(job=job)
    reviewer = Actor.system("rita")
    approval_decide(
        actor=reviewer, request_id=request.request_id, decision="reject", reason="not this one"
    )
    assert job_of(job).status == "queued"
    assert advance(job.job_id) == "completed"
    assert job_of(job).outputs["refund"] == {"rejected": "not this one", "by": "rita"}
    assert "refund" not in effects(path)


def test_a_failing_call_is_retried_with_backoff_then_raises(tmp_path: Path) -> None:
    import time

    path = tmp_path / "fx"
    job = submit("flaky", path=str(path), fail=1)
    assert advance(job.job_id) == "retry_scheduled"
    time.sleep(0.15)
    assert advance(job.job_id) == "completed"
    assert job_of(job).outputs["flaky"] == "ok"
    job2 = submit("flaky", path=str(tmp_path / "fy"), fail=5, max_attempts=2)
    assert advance(job2.job_id) == "retry_scheduled"
    time.sleep(0.15)
    assert advance(job2.job_id) == "completed"
    assert job_of(job2).outputs["flaky"] == {"gave_up": "RuntimeError"}
    runs = list(StepRun.objects.filter(job=job2, step_index=1).values_list("attempt", "status"))
    assert runs == [(1, "failed"), (2, "failed")]


def test_stop_preempts_at_the_next_call(tmp_path: Path) -> None:
    job = submit("trivial", n=5, stop_at=3)
    assert advance(job.job_id) == "waiting"
    job_stop(actor=Actor.system("otto"), job_id=job.job_id, reason="x")
    job_signal(actor=SUBMITTER, job_id=job.job_id, name="go")
    assert advance(job.job_id) == "not_claimed"
    assert StepRun.objects.filter(job=job).count() == 4


def test_a_job_of_a_version_no_longer_registered_is_refused() -> None:
    job = submit("versioned")
    assert advance(job.job_id) == "waiting"
    spec = job_of(job).spec
    spec["steps"][0]["with"]["version"] = "0"
    Job.objects.filter(pk=job.pk).update(spec=spec)
    job_signal(actor=SUBMITTER, job_id=job.job_id, name="go")
    assert advance(job.job_id) == "failed"
    assert job_of(job).status_reason_code == "workflow_version_mismatch"
