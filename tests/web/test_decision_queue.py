"""Everything a reviewer must decide is in one queue (docs/dashboard.md): approval requests and
decision-needed checkpoints — the engine's in-doubt "step X may have run; re-run?" among them —
with the question, the tool call's arguments, the gate's reasons, earlier decisions and the
expiry; answered from the queue; counted in the header; scoped by identity; and refusals that
name the dashboard's own way out, not a CLI command."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import ApprovalRequest
from approvals.queue import checkpoint_dom_id
from approvals.services import approval_request_create
from gaitweb.lib.actors import Actor
from jobs import services
from jobs.engine.runner import advance
from jobs.models import Job, JobEvent, StepRun
from tests.web.conftest import AGENT, Browser, agent_job, pending_request


def in_doubt_job(job_id: str, log: Path, *, identity: str = "agent.smith") -> Job:
    """A job whose non-idempotent step was left ``started`` by a worker that died mid-step,
    and the engine's own recovery of it: the claim finds the open attempt, marks it in doubt
    and parks the job on the question "step transfer may have run; re-run?"."""
    agent = Actor.system(f"runner-{identity}", identity=identity)
    spec = {
        "steps": [
            {
                "name": "transfer",
                "kind": "python",
                "tool": "payments.transfer",
                "with": {"function": "record", "args": {"path": str(log)}},
            }
        ]
    }
    job = services.job_submit(actor=agent, job_id=job_id, identity=identity, spec=spec)
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        status="running",
        lease_token=uuid.uuid4(),
        lease_owner="dead-host:1",
        lease_expires_at=now - timedelta(seconds=1),
        started_at=now,
    )
    StepRun.objects.create(
        job=job,
        step_index=0,
        step_name="transfer",
        attempt=1,
        status="started",
        worker="dead-host:1",
        started_at=now,
    )
    assert advance(job_id) == "not_claimed"  # recovered, then parked for a human
    job.refresh_from_db()
    assert (job.status, job.status_reason_code) == ("decision_needed", "step_in_doubt")
    return job


def answer_url(job_id: str, checkpoint_id: str = "cp_0001") -> str:
    return f"/approvals/jobs/{job_id}/{checkpoint_id}/answer/"


def nav_count(html: str) -> int:
    found = re.search(r'id="nav-approvals-count"[^>]*>(\d+)<', html)
    assert found, "no count in the header"
    return int(found.group(1))


@pytest.mark.django_db(transaction=True)
def test_the_engines_in_doubt_question_is_in_the_queue_with_its_arguments_and_counted(
    cast: Any, tmp_path: Path
) -> None:
    in_doubt_job("doubt-1", tmp_path / "side-effects.log")
    html = Browser(cast.reviewer).get("/approvals/").content.decode()
    card = html[html.index(f'id="{checkpoint_dom_id("doubt-1", "cp_0001")}"') :]
    assert "Step transfer may have run (attempt 1)" in card
    assert "approve and resume to run it again, or cancel the job" in card  # the question asked
    assert "<code>payments.transfer</code>" in card and "attempt 1 did not record" in card
    assert (
        str(tmp_path / "side-effects.log") in card
        and "&quot;function&quot;: &quot;record&quot;" in card
    )
    assert "step_in_doubt" in card
    assert "Approve and resume" in card
    assert nav_count(html) == 1
    # the job page shows the same question where the decision is made
    page = Browser(cast.reviewer).get("/jobs/doubt-1/").content.decode()
    assert "Waiting for a reviewer" in page and "Step transfer may have run" in page
    assert "Approve and resume" in page


@pytest.mark.django_db(transaction=True)
def test_a_reviewer_answers_approve_and_resume_from_the_queue_and_the_step_runs_again(
    cast: Any, tmp_path: Path
) -> None:
    log = tmp_path / "side-effects.log"
    in_doubt_job("doubt-2", log)
    b = Browser(cast.reviewer)
    r = b.post(answer_url("doubt-2"), {"decision": "approve", "reason": "bank says not sent"})
    assert r.status_code == 302 and r["Location"] == "/approvals/"
    job = Job.objects.get(job_id="doubt-2")
    assert job.status == "queued"
    follow = b.get("/approvals/").content.decode()
    notice = re.search(r'<li class="flash-success">([^<]+)</li>', follow)
    assert notice, follow
    assert "doubt-2" in notice.group(1) and "Step transfer may have run" in notice.group(1)
    assert "now queued" in notice.group(1) and "apr_" not in notice.group(1)
    assert nav_count(follow) == 0 and "Nothing is waiting for approval." in follow
    approved = JobEvent.objects.filter(job=job, type="approved").get()
    assert (approved.actor, approved.payload["checkpoint_id"]) == ("rita_reviewer", "cp_0001")
    # the worker picks it up and runs the step again: attempt 2, recorded once
    assert advance("doubt-2") == "completed"
    assert [line.split()[1:3] for line in log.read_text().splitlines()] == [["transfer", "2"]]
    assert list(StepRun.objects.filter(job=job).values_list("attempt", "status")) == [
        (1, "in_doubt"),
        (2, "succeeded"),
    ]


@pytest.mark.django_db(transaction=True)
def test_reject_needs_a_reason_and_cancel_needs_the_control_permission(
    cast: Any, tmp_path: Path
) -> None:
    in_doubt_job("doubt-3", tmp_path / "a.log")
    in_doubt_job("doubt-4", tmp_path / "b.log")
    reviewer = Browser(cast.reviewer)
    r = reviewer.post(answer_url("doubt-3"), {"decision": "reject"})
    assert r.status_code == 400 and Job.objects.get(job_id="doubt-3").status == "decision_needed"
    assert "missing_reason" in r.content.decode()
    r = reviewer.post(answer_url("doubt-3"), {"decision": "reject", "reason": "it went out"})
    assert r.status_code == 302 and Job.objects.get(job_id="doubt-3").status == "blocked"
    # a reviewer has no cancel button and no cancel
    html = reviewer.get("/approvals/").content.decode()
    assert "Cancel job" not in html
    r = reviewer.post(answer_url("doubt-4"), {"decision": "cancel"})
    assert r.status_code == 403 and Job.objects.get(job_id="doubt-4").status == "decision_needed"
    # an operator follows the queue, cannot approve, and may cancel instead
    operator = Browser(cast.operator)
    html = operator.get("/approvals/").content.decode()
    assert "Cancel job" in html and "Approve and resume" not in html
    r = operator.post(answer_url("doubt-4"), {"decision": "cancel", "reason": "done by hand"})
    assert r.status_code == 302 and Job.objects.get(job_id="doubt-4").status == "cancelled"


@pytest.mark.django_db
def test_an_agents_decision_needed_checkpoint_is_answered_from_the_queue(cast: Any) -> None:
    services.job_submit(actor=AGENT, job_id="ask-1", identity="agent.smith")
    services.job_checkpoint_add(
        actor=AGENT,
        job_id="ask-1",
        type="decision-needed",
        summary="Delete 3 stale branches?",
        required_action="approve to delete them",
    )
    b = Browser(cast.reviewer)
    html = b.get("/approvals/").content.decode()
    assert "Delete 3 stale branches?" in html and "approve to delete them" in html
    assert nav_count(html) == 1
    r = b.post(answer_url("ask-1"), {"decision": "approve"}, htmx=True)
    assert "Approved “Delete 3 stale branches?” on job ask-1" in r.content.decode()
    assert Job.objects.get(job_id="ask-1").status == "running"


@pytest.mark.django_db
def test_a_stale_card_is_refused_and_changes_nothing(cast: Any) -> None:
    agent_job("ask-2", "decision_needed")
    services.job_approve(actor=Actor.from_user(cast.reviewer2), job_id="ask-2")
    before = list(JobEvent.objects.filter(job__job_id="ask-2").values_list("revision", flat=True))
    r = Browser(cast.reviewer).post(answer_url("ask-2"), {"decision": "approve"})
    assert r.status_code == 409 and "decision_not_pending" in r.content.decode()
    assert (
        list(JobEvent.objects.filter(job__job_id="ask-2").values_list("revision", flat=True))
        == before
    )


@pytest.mark.django_db(transaction=True)
def test_the_queue_and_its_count_stay_identity_scoped(cast: Any, tmp_path: Path) -> None:
    in_doubt_job("mine-1", tmp_path / "a.log", identity="ivan_integrator")
    in_doubt_job("theirs-1", tmp_path / "b.log", identity="agent.other")
    integrator = Browser(cast.integrator)
    html = integrator.get("/approvals/").content.decode()
    assert "mine-1" in html and "theirs-1" not in html and nav_count(html) == 1
    assert nav_count(Browser(cast.reviewer).get("/approvals/").content.decode()) == 2
    # another identity's question cannot be answered (as if it did not exist)
    r = integrator.post(answer_url("theirs-1"), {"decision": "cancel"})
    assert r.status_code == 404 and Job.objects.get(job_id="theirs-1").status == "decision_needed"


@pytest.mark.django_db
def test_the_queue_costs_the_same_number_of_queries_for_two_items_or_twenty(cast: Any) -> None:
    def fill(prefix: str, n: int) -> None:
        for i in range(n):
            pending_request(f"{prefix}-r{i}")
            agent_job(f"{prefix}-c{i}", "decision_needed")

    b = Browser(cast.reviewer)
    b.get("/approvals/")  # session, permissions and the like are cached from here on
    fill("few", 1)
    with CaptureQueriesContext(connection) as few:
        assert b.get("/approvals/").status_code == 200
    fill("many", 9)
    with CaptureQueriesContext(connection) as many:
        html = b.get("/approvals/").content.decode()
    assert html.count('class="approval"') == 20 and nav_count(html) == 20
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


@pytest.mark.django_db
def test_a_request_card_shows_arguments_and_earlier_approvers_with_their_reasons(
    cast: Any,
) -> None:
    agent_job("pay-1", "decision_needed")
    req = approval_request_create(
        actor=AGENT,
        job="pay-1",
        summary="Refund 420 EUR to acct-42?",
        intent={
            "tool_name": "payments.refund",
            "args": {"amount": 420, "currency": "EUR", "account": "acct-42"},
        },
        gate_result={
            "verdict": "require_approval",
            "reason_codes": ["refund_requires_approval"],
            "matched_rules": ["refunds-need-approval"],
        },
        required_approvals=2,
        expires_in=3600,
    )
    r = Browser(cast.reviewer).post(
        f"/approvals/{req.request_id}/decide/",
        {"decision": "approve", "reason": "matches the ticket"},
    )
    assert r.status_code == 302
    html = Browser(cast.reviewer2).get("/approvals/").content.decode()
    card = html[html.index(f'id="req-{req.request_id}"') :]
    assert "&quot;amount&quot;: 420" in card and "&quot;currency&quot;: &quot;EUR&quot;" in card
    assert "refund_requires_approval" in card and "refunds-need-approval" in card
    assert re.search(r"<strong>rita_reviewer</strong> approved: “matches the ticket”", card)
    assert "1 of 2 approvals" in card and "data-expires=" in card


@pytest.mark.django_db
def test_flash_messages_name_the_job_and_the_summary_not_the_request_id(cast: Any) -> None:
    req = pending_request("pay-2", required=2)
    b = Browser(cast.reviewer)
    b.post(f"/approvals/{req.request_id}/decide/", {"decision": "approve"})
    html = b.get("/approvals/").content.decode()
    flash = re.search(r'<li class="flash-success">([^<]+)</li>', html)
    assert flash
    assert flash.group(1) == "Approved “May pay-2 refund 420 EUR?” on job pay-2 (1 of 2 approvals)."


@pytest.mark.django_db
def test_the_job_level_approve_button_decides_the_jobs_pending_request(cast: Any) -> None:
    """A job page loaded before the request was opened still has the job-level Approve button:
    pressing it decides the request (N of M), it does not record a disconnected approval."""
    req = pending_request("pay-3", required=2)
    b = Browser(cast.reviewer)
    r = b.post("/jobs/pay-3/approve/", {"reason": "ok"})
    assert r.status_code == 302
    assert ApprovalRequest.objects.get(pk=req.pk).decisions.count() == 1
    html = b.get("/jobs/pay-3/").content.decode()
    assert "Approved “May pay-3 refund 420 EUR?” on job pay-3 (1 of 2 approvals)." in html


@pytest.mark.django_db
def test_the_decision_box_restates_an_emergency_stop_and_the_stopper_cannot_approve(
    cast: Any,
) -> None:
    agent_job("stop-1")
    services.job_stop(actor=Actor.from_user(cast.admin), job_id="stop-1", reason="runaway spend")
    html = Browser(cast.admin).get("/jobs/stop-1/").content.decode()
    box = html[html.index('id="decision"') :]
    assert "Release the emergency stop by ada_admin: runaway spend?" in box
    assert "You stopped this job, so another reviewer approves its resume." in box
    assert "jobs/stop-1/approve/" not in box
    r = Browser(cast.admin).post("/jobs/stop-1/approve/", {})
    assert r.status_code == 422 and "stopper_sole_approver" in r.content.decode()
    reviewer_page = Browser(cast.reviewer).get("/jobs/stop-1/").content.decode()
    assert "Release the emergency stop by ada_admin" in reviewer_page
    assert Browser(cast.reviewer).post("/jobs/stop-1/approve/", {}).status_code == 302
    assert Browser(cast.operator).post("/jobs/stop-1/resume/", {}).status_code == 302
    assert Job.objects.get(job_id="stop-1").status == "running"


@pytest.mark.django_db
def test_dashboard_refusals_name_the_dashboards_way_not_a_cli_command(cast: Any) -> None:
    agent_job("hint-1", "decision_needed")
    r = Browser(cast.operator).post("/jobs/hint-1/resume/", {})
    html = r.content.decode()
    assert r.status_code == 422 and "approval_required" in html
    assert "gait " not in html and "--actor" not in html
    assert "answers it in Approvals (Approve and resume)" in html


@pytest.mark.django_db
def test_an_environment_mismatch_offers_the_dashboards_own_override(cast: Any) -> None:
    agent_job("env-1", "paused")
    Job.objects.filter(job_id="env-1").update(environment_fingerprint="env_elsewhere")
    operator = Browser(cast.operator)
    r = operator.post("/jobs/env-1/resume/", {})
    html = r.content.decode()
    assert r.status_code == 422 and "environment_fingerprint_mismatch" in html
    assert "--allow-env-mismatch" not in html and "allow_env_mismatch&quot;" not in html
    assert "Resume in this environment" in html and "env_elsewhere" in html
    r = operator.post("/jobs/env-1/resume/", {"allow_env_mismatch": "on"})
    assert r.status_code == 302
    job = Job.objects.get(job_id="env-1")
    assert (job.status, job.status_reason_code) == ("running", "resumed_with_env_override")
