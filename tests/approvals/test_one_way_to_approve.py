"""One way to approve (docs/lifecycle.md): approving *a job* that waits on an approval request
records a decision on that request, with its N-of-M, separation of duties and expiry — from the
CLI (`gait job approve`), the API (`POST /jobs/{id}/approve`) and the services alike. Before,
the job-level approve answered ok and left the request at 0 of N (or said `already_approved`
with a "resume" hint), and the job stayed parked."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from approvals.models import ApprovalRequest, Decision
from approvals.services import approval_request_create, job_decide
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import Conflict, GaitError, Hints, Interface, PolicyRefused
from jobs import services as jobs
from jobs.management.commands.gait import main
from jobs.models import Job, JobEvent

pytestmark = pytest.mark.django_db

AGENT = Actor.system("agent-runner", identity="agent.billing")
RITA = Actor.system("rita", identity="rita")
ROB = Actor.system("rob", identity="rob")


def waiting_job(job_id: str = "job_w1", *, required: int = 2, **kw: Any) -> ApprovalRequest:
    """A job parked on an approval request, as the engine or an agent leaves it."""
    jobs.job_submit(actor=AGENT, job_id=job_id, identity="agent.billing")
    jobs.job_checkpoint_add(
        actor=AGENT, job_id=job_id, type="decision-needed", summary="refund 420 EUR?"
    )
    return approval_request_create(
        actor=AGENT,
        job=job_id,
        summary="Refund 420 EUR to acct-42?",
        intent={"tool_name": "payments.refund", "args": {"amount": 420, "account": "acct-42"}},
        required_approvals=required,
        **kw,
    )


def journal(job_id: str = "job_w1") -> list[tuple[str, str]]:
    return list(
        JobEvent.objects.filter(job__job_id=job_id)
        .order_by("revision")
        .values_list("type", "reason_code")
    )


def gait(capsys: Any, *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return code, json.loads(out[0])


# --- the CLI, as the user ran it ------------------------------------------------------------------


def test_gait_job_approve_records_a_decision_on_the_pending_request(capsys: Any) -> None:
    req = waiting_job(required=2)
    code, out = gait(capsys, "job", "approve", "--id", "job_w1", "--actor", "rita")
    assert code == 0 and out["ok"]
    decided = out["decided"]["approval_request"]
    assert (decided["request_id"], decided["approvals"], decided["required_approvals"]) == (
        req.request_id,
        1,
        2,
    )
    assert "Refund 420 EUR to acct-42?" in out["summary"] and "1 of 2" in out["summary"]
    assert list(Decision.objects.values_list("actor", "decision")) == [("rita", "approve")]
    assert Job.objects.get(job_id="job_w1").status == "decision_needed"

    # the same reviewer again is the request's rule, not already_approved with a resume hint
    code, out = gait(capsys, "job", "approve", "--id", "job_w1", "--actor", "rita")
    assert (code, out["error_code"]) == (6, "approval_already_decided")

    code, out = gait(capsys, "job", "approve", "--id", "job_w1", "--actor", "rob")
    assert code == 0 and out["decided"]["approval_request"]["completed"] is True
    assert out["job"]["status"] == "running"  # the last required approval resumed it
    assert ApprovalRequest.objects.get(pk=req.pk).status == "approved"
    assert journal()[-3:] == [
        ("approved", "approval_recorded"),
        ("approved", "approval_recorded"),
        ("resumed", "resumed"),
    ]


def test_gait_job_reject_rejects_the_pending_request(capsys: Any) -> None:
    req = waiting_job()
    code, out = gait(
        capsys, "job", "reject", "--id", "job_w1", "--actor", "rita", "--reason", "too much"
    )
    assert code == 0 and out["job"]["status"] == "blocked"
    assert ApprovalRequest.objects.get(pk=req.pk).status == "rejected"


def test_the_submitter_approving_through_the_job_is_still_separation_of_duties(
    capsys: Any,
) -> None:
    waiting_job()
    code, out = gait(capsys, "job", "approve", "--id", "job_w1", "--actor", "agent-runner")
    assert (code, out["error_code"]) == (6, "self_approval_forbidden")
    assert not Decision.objects.exists()


def test_an_expired_request_cannot_be_approved_through_the_job_either(capsys: Any) -> None:
    req = waiting_job(expires_in=60)
    ApprovalRequest.objects.filter(pk=req.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    before = journal()
    code, out = gait(capsys, "job", "approve", "--id", "job_w1", "--actor", "rita")
    assert out["error_code"] == "approval_expired" and code != 0
    assert journal() == before and not Decision.objects.exists()


def test_emergency_stop_then_approve_by_the_stopper_is_refused_and_another_reviewer_releases_it(
    capsys: Any,
) -> None:
    """The user's lock: secops stopped and approved; resume refused; every other reviewer got
    already_approved; only cancel was left."""
    jobs.job_submit(actor=AGENT, job_id="job_s1", identity="agent.billing")
    gait(capsys, "job", "stop", "--id", "job_s1", "--actor", "secops")
    before = journal("job_s1")
    code, out = gait(capsys, "job", "approve", "--id", "job_s1", "--actor", "secops")
    assert (code, out["error_code"]) == (6, "stopper_sole_approver")
    assert out["hint"] == "another reviewer must approve" and journal("job_s1") == before
    code, out = gait(capsys, "job", "approve", "--id", "job_s1", "--actor", "rita")
    assert code == 0
    code, out = gait(
        capsys, "job", "resume", "--id", "job_s1", "--actor", "agent.billing", "--reason", "ok"
    )
    assert code == 0 and out["job"]["status"] == "running"


# --- the services ----------------------------------------------------------------------------------


def test_the_job_level_primitive_refuses_and_names_the_request_and_what_works() -> None:
    req = waiting_job()
    with pytest.raises(Conflict) as info:
        jobs.job_approve(actor=RITA, job_id="job_w1")
    err = info.value
    assert err.code == "approval_request_pending" and req.request_id in err.message
    assert "Refund 420 EUR to acct-42?" in err.message and "0 of 2" in err.message
    assert err.details["request_id"] == req.request_id
    assert (
        err.hint_for(Interface.CLI)
        == f"gait approval decide {req.request_id} approve --actor REVIEWER"
    )
    assert err.hint_for(Interface.API).startswith(f"POST /api/v1/approvals/{req.request_id}/decide")
    assert "gait" not in err.hint_for(Interface.DASHBOARD)


def test_resume_of_a_job_waiting_on_a_request_names_the_request_per_interface() -> None:
    req = waiting_job()
    jobs.job_approve(actor=RITA, job_id="job_w1", _decided_request=req.request_id)
    with pytest.raises(PolicyRefused) as info:
        jobs.job_resume(actor=Actor.system("ops"), job_id="job_w1")
    err = info.value
    assert err.code == "approval_required" and err.exit_code == 4
    assert req.request_id in err.message and "0 of 2 approvals" in err.message
    assert err.details["pending_requests"] == [req.request_id]
    assert "gait approval decide" in err.hint_for(Interface.CLI)
    assert "/api/v1/approvals/" in err.hint_for(Interface.API)
    assert "gait" not in err.hint_for(Interface.DASHBOARD)


def test_several_pending_requests_are_named_and_each_is_decided() -> None:
    first = waiting_job(required=1)
    second = approval_request_create(actor=AGENT, job="job_w1", summary="And the fee?")
    before = journal()
    with pytest.raises(Conflict) as info:
        job_decide(actor=RITA, job_id="job_w1", decision="approve")
    assert info.value.code == "approval_request_pending"
    assert first.request_id in info.value.message and "And the fee?" in info.value.message
    assert info.value.details["pending_requests"] == [first.request_id, second.request_id]
    assert journal() == before


def test_a_job_without_a_request_is_approved_on_its_decision_point() -> None:
    jobs.job_submit(actor=AGENT, job_id="job_c1", identity="agent.billing")
    jobs.job_checkpoint_add(actor=AGENT, job_id="job_c1", type="decision-needed", summary="go?")
    outcome = job_decide(actor=RITA, job_id="job_c1", decision="approve", reason="fine")
    assert outcome.request is None and outcome.question == "go?" and not outcome.resumed
    assert outcome.job.status == "decision_needed"  # approve records; a resume goes on
    assert "“go?” on job job_c1" in outcome.notice()
    with pytest.raises(GaitError) as info:
        job_decide(actor=ROB, job_id="job_c1", decision="approve")
    assert info.value.code == "already_approved"


def test_hints_fall_back_to_the_default_and_never_to_another_interface() -> None:
    keyed = GaitError("x", "m", hint=Hints(cli="--flag", api="field"))
    assert [keyed.hint_for(i) for i in Interface] == ["--flag", "field", "", ""]
    plain = GaitError("x", "m", hint="same everywhere")
    assert {plain.hint_for(i) for i in Interface} == {"same everywhere"}


def test_the_cli_keeps_its_flag_for_an_environment_mismatch(capsys: Any) -> None:
    jobs.job_submit(actor=AGENT, job_id="job_e2", identity="agent.billing")
    Job.objects.filter(job_id="job_e2").update(environment_fingerprint="env_elsewhere")
    jobs.job_pause(actor=Actor.system("ops"), job_id="job_e2")
    code, out = gait(capsys, "job", "resume", "--id", "job_e2", "--actor", "agent.billing")
    assert out["error_code"] == "environment_fingerprint_mismatch"
    assert out["hint"] == "pass --allow-env-mismatch to resume anyway"
