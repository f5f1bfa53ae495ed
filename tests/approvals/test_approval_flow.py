"""The approvals flow: N-of-M with distinct approvers, separation of duties, reject, expiry
fallback, and the job lifecycle it drives (approvals.services on top of jobs.services)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from approvals.gate import gate_evaluate
from approvals.identities import identity_revoke
from approvals.models import ApprovalRequest, Decision
from approvals.policy_format import policy_parse
from approvals.selectors import approval_pending_list
from approvals.services import (
    ESCALATION_WINDOW_MIN,
    DecideOutcome,
    approval_decide,
    approval_expire_due,
    approval_request_create,
)
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import Conflict, Forbidden, GaitError, InvalidInput, PolicyRefused
from jobs import services as jobs
from jobs.journal import chain_verify, event_append
from jobs.models import Job, JobEvent

pytestmark = pytest.mark.django_db

AGENT = Actor.system("agent-runner", identity="agent.billing")
SYSTEM = Actor.system("engine")


def parked_job(job_id: str = "job_a1", submitter: Actor = AGENT) -> Job:
    """An agent-driven job waiting in decision_needed, as an agent's checkpoint leaves it."""
    jobs.job_submit(actor=submitter, job_id=job_id)
    jobs.job_checkpoint_add(
        actor=submitter,
        job_id=job_id,
        type="decision-needed",
        summary="refund 420 EUR?",
        required_action="approve refund",
    )
    return Job.objects.get(job_id=job_id)


def request_for(job_id: str = "job_a1", **kw: Any) -> ApprovalRequest:
    kw.setdefault("summary", "Refund 420 EUR?")
    return approval_request_create(actor=SYSTEM, job=job_id, **kw)


def decide(actor: Actor, req: ApprovalRequest, decision: str) -> DecideOutcome:
    return approval_decide(actor=actor, request_id=req.request_id, decision=decision)


def events(job_id: str = "job_a1") -> list[tuple[str, str]]:
    return list(
        JobEvent.objects.filter(job__job_id=job_id)
        .order_by("revision")
        .values_list("type", "reason_code")
    )


def status(job_id: str = "job_a1") -> str:
    return Job.objects.get(job_id=job_id).status


def refused(exc: type[GaitError], code: str, fn: Any, job_id: str = "job_a1") -> GaitError:
    """Assert a refusal with ``code`` that wrote nothing: no event, no decision, same request."""
    before = (
        events(job_id),
        Decision.objects.count(),
        list(ApprovalRequest.objects.values("status", "escalated")),
    )
    with pytest.raises(exc) as info:
        fn()
    assert info.value.code == code
    assert (
        events(job_id),
        Decision.objects.count(),
        list(ApprovalRequest.objects.values("status", "escalated")),
    ) == before
    return info.value


# --- N-of-M ------------------------------------------------------------------------------------


def test_two_of_m_needs_two_distinct_reviewers_before_the_job_resumes(cast: Any) -> None:
    parked_job()
    req = request_for(required_approvals=2)
    first = approval_decide(
        actor=cast.actor("reviewer"),
        request_id=req.request_id,
        decision="approve",
        reason="looks right",
    )
    assert (first.completed, first.approvals, first.request.status, status()) == (
        False,
        1,
        "pending",
        "decision_needed",
    )
    refused(
        Conflict,
        "approval_already_decided",
        lambda: decide(cast.actor("reviewer"), req, "approve"),
    )
    second = approval_decide(
        actor=cast.actor("reviewer2"),
        request_id=req.request_id,
        decision="approve",
        reason="agreed",
    )
    assert (second.completed, second.approvals, second.request.status) == (True, 2, "approved")
    assert (second.job_status, second.resume_error) == ("running", None)
    assert events()[-3:] == [
        ("approved", "approval_recorded"),
        ("approved", "approval_recorded"),
        ("resumed", "resumed"),
    ]
    approvers = [
        e.actor
        for e in JobEvent.objects.filter(job__job_id="job_a1", type="approved").order_by("revision")
    ]
    assert approvers == ["rita_reviewer", "rob_reviewer"]
    assert chain_verify(Job.objects.get(job_id="job_a1")).ok


def test_one_person_behind_two_names_counts_once_when_approvers_must_be_distinct(cast: Any) -> None:
    parked_job()
    req = request_for(required_approvals=2)
    decide(cast.actor("reviewer"), req, "approve")
    rita_bot = Actor(
        name="rita-api-key",
        scopes=frozenset({"approve", "cross_identity"}),
        identity="rita_reviewer",
        kind="apikey",
    )
    refused(
        Conflict,
        "approval_already_decided",
        lambda: decide(rita_bot, req, "approve"),
    )


def test_a_decision_on_a_decided_request_is_refused(cast: Any) -> None:
    parked_job()
    req = request_for()
    decide(cast.actor("reviewer"), req, "approve")
    refused(
        Conflict,
        "approval_not_pending",
        lambda: approval_decide(
            actor=cast.actor("reviewer2"),
            request_id=req.request_id,
            decision="reject",
            reason="late",
        ),
    )


def test_unknown_requests_and_bad_decisions_are_refused(cast: Any) -> None:
    parked_job()
    req = request_for()
    refused(
        GaitError,
        "approval_not_found",
        lambda: approval_decide(
            actor=cast.actor("reviewer"), request_id="apr_nope", decision="approve"
        ),
    )
    refused(
        InvalidInput,
        "invalid_decision",
        lambda: decide(cast.actor("reviewer"), req, "maybe"),
    )
    refused(
        InvalidInput,
        "missing_reason",
        lambda: decide(cast.actor("reviewer"), req, "reject"),
    )


# --- separation of duties ----------------------------------------------------------------------


def test_the_submitter_cannot_approve_their_own_job(cast: Any) -> None:
    parked_job(submitter=cast.actor("admin"))
    req = request_for()
    refused(
        PolicyRefused,
        "self_approval_forbidden",
        lambda: decide(cast.actor("admin"), req, "approve"),
    )
    assert status() == "decision_needed"


def test_a_policy_that_turns_separation_of_duties_off_lets_the_submitter_approve(cast: Any) -> None:
    parked_job(submitter=cast.actor("admin"))
    req = request_for(forbid_submitter=False)
    outcome = decide(cast.actor("admin"), req, "approve")
    assert outcome.completed and status() == "running"


def test_the_submitting_agent_identity_cannot_approve_either(cast: Any) -> None:
    parked_job()
    req = request_for()
    agent_as_reviewer = Actor(
        name="billing-bot", scopes=frozenset({"approve"}), identity="agent.billing", kind="apikey"
    )
    refused(
        PolicyRefused,
        "self_approval_forbidden",
        lambda: decide(agent_as_reviewer, req, "approve"),
    )


def test_the_actor_who_stopped_a_job_cannot_be_the_only_approver_of_its_resume(cast: Any) -> None:
    jobs.job_submit(actor=AGENT, job_id="job_a1")
    jobs.job_stop(actor=cast.actor("admin"), job_id="job_a1", reason="runaway spend")
    req = request_for(summary="resume after stop?")
    refused(
        PolicyRefused,
        "stopper_sole_approver",
        lambda: decide(cast.actor("admin"), req, "approve"),
    )
    outcome = approval_decide(
        actor=cast.actor("reviewer"),
        request_id=req.request_id,
        decision="approve",
        reason="spend capped",
    )
    assert (outcome.completed, outcome.job_status, outcome.resume_error) == (True, "running", None)


def test_the_stopper_may_be_one_of_several_approvers(cast: Any) -> None:
    jobs.job_submit(actor=AGENT, job_id="job_a1")
    jobs.job_stop(actor=cast.actor("admin"), job_id="job_a1")
    req = request_for(required_approvals=2)
    decide(cast.actor("admin"), req, "approve")
    outcome = decide(cast.actor("reviewer"), req, "approve")
    assert (outcome.completed, outcome.job_status) == (True, "running")


# --- reject and resume refusals ----------------------------------------------------------------


def test_a_reject_blocks_the_job_and_journals_the_reason(cast: Any) -> None:
    parked_job()
    req = request_for(required_approvals=2)
    outcome = approval_decide(
        actor=cast.actor("reviewer"),
        request_id=req.request_id,
        decision="reject",
        reason="amount too high",
    )
    assert (outcome.request.status, outcome.job_status) == ("rejected", "blocked")
    ev = JobEvent.objects.filter(job__job_id="job_a1").order_by("-revision").first()
    assert (ev.type, ev.reason_code, ev.actor) == ("rejected", "approval_rejected", "rita_reviewer")
    assert ev.payload == {"reason": "amount too high", "approval_request": req.request_id}


def test_a_failed_resume_check_keeps_the_approval_and_says_why(cast: Any) -> None:
    parked_job()
    req = request_for()
    identity_revoke(actor=cast.actor("admin"), identity="agent.billing", reason="key leaked")
    outcome = decide(cast.actor("reviewer"), req, "approve")
    assert (outcome.completed, outcome.request.status, outcome.job_status) == (
        True,
        "approved",
        "decision_needed",
    )
    assert outcome.resume_error is not None and outcome.resume_error["code"] == "identity_revoked"
    assert events()[-1] == ("approved", "approval_recorded")


# --- expiry ------------------------------------------------------------------------------------


def test_an_expired_request_with_reject_fallback_blocks_the_job(cast: Any) -> None:
    parked_job()
    req = request_for(expires_in=60)
    assert approval_expire_due(now=timezone.now()) == []
    later = timezone.now() + timedelta(minutes=2)
    assert approval_expire_due(now=later) == [
        {"request_id": req.request_id, "job_id": "job_a1", "fallback": "reject"}
    ]
    req.refresh_from_db()
    assert (req.status, status()) == ("expired", "blocked")
    ev = JobEvent.objects.filter(job__job_id="job_a1").order_by("-revision").first()
    assert (ev.type, ev.actor, ev.payload["approval_request"]) == (
        "rejected",
        "approval-expiry",
        req.request_id,
    )


def test_a_request_past_its_expiry_cannot_be_decided_even_before_the_sweep(cast: Any) -> None:
    parked_job()
    req = request_for(expires_in=60)
    ApprovalRequest.objects.filter(pk=req.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    refused(
        Conflict,
        "approval_expired",
        lambda: decide(cast.actor("reviewer"), req, "approve"),
    )


def test_an_escalated_request_goes_to_admins_and_is_rejected_if_it_expires_again(cast: Any) -> None:
    parked_job()
    req = request_for(expires_in=600, on_expiry="escalate")
    later = timezone.now() + timedelta(minutes=11)
    assert approval_expire_due(now=later)[0]["fallback"] == "escalate"
    req.refresh_from_db()
    assert (req.status, req.escalated, status()) == ("pending", True, "decision_needed")
    assert events()[-1] == ("approval_escalated", "approval_escalated")
    refused(
        Forbidden,
        "permission_denied",
        lambda: decide(cast.actor("reviewer"), req, "approve"),
    )
    much_later = later + timedelta(minutes=11)
    assert approval_expire_due(now=much_later)[0]["fallback"] == "reject"
    req.refresh_from_db()
    assert (req.status, status()) == ("expired", "blocked")


def test_an_admin_can_decide_an_escalated_request(cast: Any) -> None:
    parked_job()
    req = request_for(expires_in=600, on_expiry="escalate")
    approval_expire_due(now=timezone.now() + timedelta(minutes=11))
    ApprovalRequest.objects.filter(pk=req.pk).update(
        expires_at=timezone.now() + timedelta(minutes=10)
    )
    outcome = decide(cast.actor("admin"), req, "approve")
    assert (outcome.completed, outcome.job_status) == (True, "running")


# --- creating requests -------------------------------------------------------------------------


def test_required_approvals_and_separation_of_duties_come_from_the_gate_result() -> None:
    parked_job()
    policy = policy_parse(
        "forbid_self_approval: false\nrules:\n  - {name: wire, effect: require_approval, min_approvals: 3, match: {tool_names: [bank.wire]}}\n"
    )
    result = gate_evaluate(intent={"tool_name": "bank.wire"}, policy=policy)
    req = request_for(gate_result=result, intent={"tool_name": "bank.wire"})
    assert (
        req.required_approvals,
        req.distinct_approvers,
        req.forbid_submitter,
        req.tool_name,
    ) == (3, True, False, "bank.wire")
    assert req.gate_result["matched_rules"] == ["wire"]
    ev = JobEvent.objects.filter(job__job_id="job_a1").order_by("-revision").first()
    assert (ev.type, ev.payload["approval_request"], ev.payload["required_approvals"]) == (
        "approval_requested",
        req.request_id,
        3,
    )


def test_the_engine_can_create_a_request_on_the_job_row_it_holds_locked() -> None:
    jobs.job_submit(actor=AGENT, job_id="job_a1")
    with transaction.atomic():
        job = Job.objects.select_for_update().get(job_id="job_a1")
        approval_request_create(
            actor=SYSTEM, job=job, summary="step needs approval", step_index=0, step_name="refund"
        )
        # the caller keeps writing on the same instance: the chain must stay whole
        event_append(
            job, type="checkpoint_added", actor="engine", reason_code="checkpoint_decision_needed"
        )
    assert [t for t, _ in events()] == ["submitted", "approval_requested", "checkpoint_added"]
    assert chain_verify(Job.objects.get(job_id="job_a1")).ok


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"required_approvals": 0}, "invalid_required_approvals"),
        ({"required_approvals": True}, "invalid_required_approvals"),
        ({"on_expiry": "ignore"}, "invalid_on_expiry"),
        ({"expires_in": -5}, "invalid_expires_in"),
        ({"summary": "x" * 600}, "summary_too_long"),
    ],
)
def test_bad_request_parameters_are_refused_before_anything_is_written(
    kw: dict[str, Any], code: str
) -> None:
    parked_job()
    refused(InvalidInput, code, lambda: request_for(**kw))


def test_the_pending_queue_lists_only_open_requests_soonest_expiry_first(cast: Any) -> None:
    parked_job("job_a1")
    parked_job("job_a2")
    late = request_for("job_a1", expires_in=3600)
    soon = request_for("job_a2", expires_in=60)
    done = request_for("job_a1")
    approval_decide(
        actor=cast.actor("reviewer"), request_id=done.request_id, decision="reject", reason="no"
    )
    queue = list(approval_pending_list(actor=cast.actor("viewer")))
    assert [r.request_id for r in queue] == [soon.request_id, late.request_id]
    assert [
        r.request_id for r in approval_pending_list(actor=cast.actor("viewer"), job_id="job_a2")
    ] == [soon.request_id]


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_approving_at_once_give_one_winner_and_one_clear_error(
    cast: Any, db: None
) -> None:
    import threading

    from django.db import connection

    parked_job()
    req = request_for()
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def decide(role: str) -> None:
        try:
            barrier.wait()
            results.append(
                approval_decide(
                    actor=cast.actor(role), request_id=req.request_id, decision="approve"
                )
            )
        except GaitError as exc:
            results.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(role,)) for role in ("reviewer", "reviewer2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if not isinstance(r, str)]
    assert len(winners) == 1 and winners[0].completed
    assert [r for r in results if isinstance(r, str)] == ["approval_not_pending"]
    assert Decision.objects.filter(request__request_id=req.request_id).count() == 1
    assert [t for t, _ in events()][-2:] == ["approved", "resumed"]
    assert chain_verify(Job.objects.get(job_id="job_a1")).ok


def test_requests_of_a_cancelled_job_leave_the_queue(cast: Any) -> None:
    parked_job()
    request_for()
    jobs.job_cancel(actor=cast.actor("operator"), job_id="job_a1")
    assert list(approval_pending_list(actor=cast.actor("reviewer"))) == []


def test_an_escalation_window_is_never_shorter_than_the_documented_minimum(cast: Any) -> None:
    """docs/policy-format.md: a request that expired after 5 s gets 60 s with the admins."""

    assert ESCALATION_WINDOW_MIN == timedelta(seconds=60)
    parked_job()
    req = request_for(expires_in=5, on_expiry="escalate")
    at = timezone.now() + timedelta(seconds=6)
    assert approval_expire_due(now=at)[0]["fallback"] == "escalate"
    req.refresh_from_db()
    assert req.escalated and req.expires_at == at + timedelta(seconds=60)
    assert approval_expire_due(now=at + timedelta(seconds=59)) == []
    assert approval_expire_due(now=at + timedelta(seconds=61))[0]["fallback"] == "reject"
