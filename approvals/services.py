"""Approval requests and their decisions as services (docs/policy-format.md, "Approvals").

Permissions are checked here, not only in views: reviewers decide (``Scope.APPROVE``), anyone
who can read sees the queue. Stored policies are approvals/policies.py; identities, their
policy bindings and revocation are approvals/identities.py.

The approvals flow sits on top of the job lifecycle (jobs/services.py): every approve decision
is recorded on the job with ``job_approve`` (one ``approved`` event per decision, so the
resume check can see who approved), the last required one resumes the job with ``job_resume``
(the normal five checks), a reject blocks it with ``job_reject``, and expiry applies the
request's fallback. Lock order everywhere: the job row first, then the request row — the same
order as the engine, which locks the job and then creates the request.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.models import (
    ApprovalRequest,
    ApprovalStatus,
    Decision,
    DecisionKind,
    ExpiryFallback,
)
from approvals.selectors import approval_get, approvals_visible
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.canonical import iso_utc
from gaitweb.lib.errors import (
    Conflict,
    GaitError,
    Hints,
    Interface,
    InvalidInput,
    PolicyRefused,
)
from gaitweb.lib.validation import text_field
from jobs.journal import event_append
from jobs.models import Job, JobStatus
from jobs.selectors import job_decision_point, job_get
from jobs.services import job_approve, job_reject, job_resume

if TYPE_CHECKING:
    from approvals.gate import GateResult

REASON_MAX = 1024
SUMMARY_MAX = 512
MAX_REQUIRED_APPROVALS = 20
# an escalated request's window: as long as the first one, never shorter than this, so admins
# have time to see it (docs/policy-format.md)
ESCALATION_WINDOW_MIN = timedelta(seconds=60)


# --- approval requests -------------------------------------------------------------------------


def _gate_dict(gate_result: GateResult | Mapping[str, Any] | None) -> dict[str, Any]:
    if gate_result is None:
        return {}
    if isinstance(gate_result, Mapping):
        return dict(gate_result)
    return gate_result.as_dict()


def _positive_int(value: Any, field: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(
            reasons.for_field(reasons.FIELD_INVALID, field),
            f"{field} must be an integer from 1 to {maximum}",
            details={"field": field},
        )
    return value


def approval_request_create(
    *,
    actor: Actor,
    job: Job | str,
    summary: str,
    step_index: int | None = None,
    step_name: str = "",
    checkpoint_id: str = "",
    intent: Mapping[str, Any] | None = None,
    gate_result: GateResult | Mapping[str, Any] | None = None,
    required_approvals: int | None = None,
    distinct_approvers: bool | None = None,
    forbid_submitter: bool | None = None,
    expires_in: timedelta | float | None = None,
    expires_at: datetime | None = None,
    on_expiry: str = ExpiryFallback.REJECT,
) -> ApprovalRequest:
    """Open an approval request on a job and journal it (``approval_requested``).

    ``job`` is either a ``Job`` whose row the caller has locked in the current transaction (the
    engine, which then parks the job in ``decision_needed`` on the same instance), or a job id,
    which is locked here. Defaults come from ``gate_result`` (a ``GateResult`` or its
    ``as_dict()``): ``required_approvals`` <- ``min_approvals`` (at least 1),
    ``distinct_approvers`` <- ``require_distinct_approvers`` (default true), ``forbid_submitter``
    <- the policy's ``forbid_self_approval`` (default true). Expiry: ``expires_at`` or
    ``expires_in`` (seconds or timedelta); ``on_expiry`` is ``reject`` or ``escalate``.
    """

    actor.require(Scope.SUBMIT)
    summary = text_field(summary, "summary", max_len=SUMMARY_MAX)
    gate = _gate_dict(gate_result)
    if required_approvals is None:
        required_approvals = max(1, int(gate.get("min_approvals") or 1))
    required_approvals = _positive_int(
        required_approvals, "required_approvals", MAX_REQUIRED_APPROVALS
    )
    if distinct_approvers is None:
        distinct_approvers = (
            bool(gate.get("require_distinct_approvers", True)) or required_approvals > 1
        )
    if forbid_submitter is None:
        forbid_submitter = bool(gate.get("forbid_self_approval", True))
    if on_expiry not in ExpiryFallback.values:
        raise InvalidInput(
            reasons.INVALID_ON_EXPIRY,
            f"on_expiry must be one of {', '.join(ExpiryFallback.values)}",
            details={"field": "on_expiry"},
        )
    if expires_at is None and expires_in is not None:
        seconds = expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise InvalidInput(
                reasons.INVALID_EXPIRES_IN,
                "expires_in must be a positive number of seconds",
                details={"field": "expires_in"},
            )
        expires_at = timezone.now() + timedelta(seconds=seconds)
    if intent is not None and not isinstance(intent, Mapping):
        raise InvalidInput(reasons.INTENT_INVALID, "intent must be an object")
    tool_name = str((intent or {}).get("tool_name") or "")[:256]

    with transaction.atomic():
        if isinstance(job, str):
            job = job_get(actor=actor, job_id=job, for_update=True)
        request = ApprovalRequest.objects.create(
            request_id=f"apr_{uuid.uuid4().hex[:24]}",
            job=job,
            step_index=step_index,
            step_name=text_field(step_name, "step_name", max_len=128),
            checkpoint_id=text_field(checkpoint_id, "checkpoint_id", max_len=16),
            summary=summary,
            tool_name=tool_name,
            intent=dict(intent or {}),
            gate_result=gate,
            required_approvals=required_approvals,
            distinct_approvers=distinct_approvers,
            forbid_submitter=forbid_submitter,
            expires_at=expires_at,
            on_expiry=on_expiry,
        )
        event_append(
            job,
            type="approval_requested",
            actor=actor.name,
            reason_code="approval_requested",
            payload={
                "approval_request": request.request_id,
                "summary": summary,
                "step_name": request.step_name,
                "tool": tool_name,
                "required_approvals": required_approvals,
                "distinct_approvers": distinct_approvers,
                "expires_at": iso_utc(expires_at),
                "on_expiry": on_expiry,
                "policy_digest": gate.get("policy_digest", ""),
                "reason_codes": list(gate.get("reason_codes", [])),
            },
        )
    return request


@dataclass(frozen=True)
class DecideOutcome:
    """The result of one decision: the request after it, whether it completed the request, and
    — for the approval that completed it — whether the job resumed or why not."""

    request: ApprovalRequest
    decision: Decision
    approvals: int
    completed: bool
    job_status: str
    resume_refusal: GaitError | None = None

    @property
    def resume_error(self) -> dict[str, Any] | None:
        return _refusal_dict(self.resume_refusal)

    def notice(self) -> str:
        """What the decider is told, by job and question (never by request id)."""
        verb = "Approved" if self.decision.decision == DecisionKind.APPROVE else "Rejected"
        about = f"“{self.request.summary}”" if self.request.summary else "the approval request"
        text = (
            f"{verb} {about} on job {self.request.job.job_id} "
            f"({self.approvals} of {self.request.required_approvals} approvals)."
        )
        if self.completed or self.decision.decision == DecisionKind.REJECT:
            text += f" The job is now {self.job_status.replace('_', ' ')}."
        return text + _not_resumed(self.resume_refusal)

    def as_dict(self, interface: Interface) -> dict[str, Any]:
        """As ``interface`` shows it (a refusal's hint is that interface's)."""
        return {
            "request_id": self.request.request_id,
            "job_id": self.request.job.job_id,
            "status": self.request.status,
            "summary": self.request.summary,
            "decision": self.decision.decision,
            "approvals": self.approvals,
            "required_approvals": self.request.required_approvals,
            "completed": self.completed,
            "job_status": self.job_status,
            "resume_error": _refusal_dict(self.resume_refusal, interface),
        }


def _not_resumed(exc: GaitError | None) -> str:
    return f" It did not resume: {exc.code} — {exc.message}" if exc is not None else ""


def _refusal_dict(
    exc: GaitError | None, interface: Interface | None = None
) -> dict[str, Any] | None:
    """Why a resume after a decision did not happen, as ``resume_error`` shows it."""
    if exc is None:
        return None
    out = {"code": exc.code, "message": exc.message}
    if interface is not None:
        out["hint"] = exc.hint_for(interface)
    return out


def _same_person(earlier: Decision, actor: Actor) -> bool:
    """Distinct approvers: one person acting through two names (their login and an API key
    bound to their identity) still counts once."""
    mine = {actor.name, actor.identity} - {None, ""}
    if earlier.identity and earlier.identity in mine:
        return True
    if actor.identity and earlier.actor == actor.identity:
        return True
    return (
        actor.user is not None and earlier.user_id is not None and earlier.user_id == actor.user.pk
    )


def _flow_actor(actor: Actor) -> Actor:
    """The approval flow resumes the job on the decider's behalf: the decision is the
    authority (a reviewer needs no ``control`` scope for this), and the resume checks still run.
    No asserted identity: the job's bound identity is checked for revocation only. It sees
    every identity's jobs: the decider could see this one, or it would not have got here."""
    return Actor(
        name=actor.name, scopes=frozenset({Scope.CONTROL, Scope.CROSS_IDENTITY}), kind="system"
    )


def _decision_check(decision: Any) -> None:
    if decision not in DecisionKind.values:
        raise InvalidInput(
            reasons.INVALID_DECISION,
            "decision must be 'approve' or 'reject'",
            details={"field": "decision"},
        )


def _resume_on_decision(actor: Actor, job_id: str, reason: str) -> GaitError | None:
    """Resume the job on the decider's behalf (``_flow_actor``) in a savepoint: the decision
    stands whatever the resume checks say; the refusal, if any, is returned to be shown."""

    try:
        with transaction.atomic():
            job_resume(actor=_flow_actor(actor), job_id=job_id, reason=reason)
    except GaitError as exc:
        return exc
    return None


def approval_decide(
    *, actor: Actor, request_id: str, decision: str, reason: str = ""
) -> DecideOutcome:
    """Approve or reject a pending request. One decision per person per request.

    Refusals (nothing written): not a reviewer (``permission_denied``), unknown request
    (``approval_not_found``), not pending (``approval_not_pending``), past its expiry
    (``approval_expired``), escalated and the actor is not an admin (``permission_denied``),
    the job's submitter deciding when the policy forbids self-approval
    (``self_approval_forbidden``), a second decision by the same person
    (``approval_already_decided``), or the final approval of an emergency-stopped job's
    request coming only from the actor who stopped it (``stopper_sole_approver``).

    A reject blocks the job (``job_reject``). Each approve records a job-level approval
    (``job_approve``); the one that reaches ``required_approvals`` marks the request approved
    and resumes the job through ``job_resume``. If a resume check refuses (revoked identity,
    changed environment …) the approval stands and ``resume_error`` says why.
    """

    actor.require(Scope.APPROVE)
    _decision_check(decision)
    reason = text_field(
        reason, "reason", max_len=REASON_MAX, required=decision == DecisionKind.REJECT
    )
    found = approval_get(actor=actor, request_id=request_id)
    request_id, job_id = found.request_id, found.job.job_id

    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        request = ApprovalRequest.objects.select_for_update().get(request_id=request_id)
        if request.status != ApprovalStatus.PENDING:
            raise Conflict(
                reasons.APPROVAL_NOT_PENDING,
                f"approval request {request_id} is {request.status}",
                details={"request_id": request_id, "status": request.status},
            )
        now = timezone.now()
        if request.expires_at is not None and request.expires_at <= now:
            raise Conflict(
                reasons.APPROVAL_EXPIRED,
                f"approval request {request_id} expired at {iso_utc(request.expires_at)}",
                details={"request_id": request_id},
            )
        if request.escalated:
            actor.require(Scope.ADMIN)
        if request.forbid_submitter and job.is_submitted_by(actor):
            raise PolicyRefused(
                reasons.SELF_APPROVAL_FORBIDDEN,
                f"{actor.name} submitted or runs job {job.job_id} and cannot decide its approval",
                details={"request_id": request_id, "job_id": job.job_id},
            )
        previous = list(request.decisions.all())
        for earlier in previous:
            if earlier.actor == actor.name or (
                request.distinct_approvers and _same_person(earlier, actor)
            ):
                raise Conflict(
                    reasons.APPROVAL_ALREADY_DECIDED,
                    f"{actor.name} already decided approval request {request_id}",
                    details={"request_id": request_id, "decided_by": earlier.actor},
                )
        approvers = [d for d in previous if d.decision == DecisionKind.APPROVE]
        approvals = len(approvers) + (1 if decision == DecisionKind.APPROVE else 0)
        completes = decision == DecisionKind.APPROVE and approvals >= request.required_approvals
        if completes and job.status == JobStatus.EMERGENCY_STOPPED and job.stopped_by:
            names = {d.actor for d in approvers} | {actor.name}
            if names == {job.stopped_by}:
                raise PolicyRefused(
                    reasons.STOPPER_SOLE_APPROVER,
                    f"{job.stopped_by} stopped job {job.job_id} and cannot be the only approver of its resume",
                    details={"request_id": request_id, "stopped_by": job.stopped_by},
                    hint="another reviewer must approve",
                )
        try:
            with transaction.atomic():
                record = Decision.objects.create(
                    request=request,
                    actor=actor.name,
                    identity=actor.identity or "",
                    user=actor.user if actor.kind == "user" else None,
                    decision=decision,
                    reason=reason,
                )
        except IntegrityError:
            raise Conflict(
                reasons.APPROVAL_ALREADY_DECIDED,
                f"{actor.name} already decided approval request {request_id}",
                details={"request_id": request_id},
            ) from None

        resume_refusal: GaitError | None = None
        if decision == DecisionKind.REJECT:
            request.status = ApprovalStatus.REJECTED
            request.resolved_at = now
            request.save(update_fields=["status", "resolved_at"])
            if job.status == JobStatus.DECISION_NEEDED:
                job_reject(
                    actor=actor,
                    job_id=job.job_id,
                    reason=reason,
                    allow_self_approval=not request.forbid_submitter,
                    _decided_request=request_id,
                )
            else:
                event_append(
                    job,
                    type="approval_decided",
                    actor=actor.name,
                    reason_code="approval_rejected",
                    payload={
                        "approval_request": request_id,
                        "decision": decision,
                        "reason": reason,
                    },
                )
        else:
            if completes:
                request.status = ApprovalStatus.APPROVED
                request.resolved_at = now
                request.save(update_fields=["status", "resolved_at"])
            job_approve(
                actor=actor,
                job_id=job.job_id,
                reason=reason,
                allow_self_approval=not request.forbid_submitter,
                _decided_request=request_id,
            )
            if completes:
                resume_refusal = _resume_on_decision(
                    actor, job.job_id, f"approval request {request_id} approved"
                )
        job.refresh_from_db(fields=["status"])
        return DecideOutcome(
            request=request,
            decision=record,
            approvals=approvals,
            completed=completes,
            job_status=job.status,
            resume_refusal=resume_refusal,
        )


@dataclass(frozen=True)
class JobDecision:
    """A decision on a job as a whole (``job_decide``): the job after it; when the job waited
    on an approval request, the decision recorded on that request (``request``); and, for an
    approve-and-resume, whether the job resumed or why not (``resume_refusal``)."""

    job: Job
    decision: str
    question: str = ""
    request: DecideOutcome | None = None
    resumed: bool = False
    resume_refusal: GaitError | None = None

    @property
    def resume_error(self) -> dict[str, Any] | None:
        if self.request is not None:
            return self.request.resume_error
        return _refusal_dict(self.resume_refusal)

    def notice(self) -> str:
        """What the decider is told: the job and the question, never a request id."""
        if self.request is not None:
            return self.request.notice()
        verb = "Approved" if self.decision == DecisionKind.APPROVE else "Rejected"
        about = f" “{self.question}”" if self.question else ""
        text = f"{verb}{about} on job {self.job.job_id}."
        if self.resumed or self.decision == DecisionKind.REJECT:
            text += f" The job is now {self.job.status.replace('_', ' ')}."
        elif self.resume_refusal is None:
            text += " Resume it to go on."
        return text + _not_resumed(self.resume_refusal)

    def as_dict(self, interface: Interface) -> dict[str, Any]:
        """As ``interface`` shows it (a refusal's hint is that interface's)."""
        return {
            "decision": self.decision,
            "question": self.question,
            "approval_request": self.request.as_dict(interface) if self.request else None,
            "resumed": self.resumed,
            "resume_error": (
                self.request.as_dict(interface)["resume_error"]
                if self.request is not None
                else _refusal_dict(self.resume_refusal, interface)
            ),
        }


def job_decide(
    *,
    actor: Actor,
    job_id: str,
    decision: str,
    reason: str = "",
    resume: bool = False,
    checkpoint_id: str = "",
) -> JobDecision:
    """Approve or reject whatever a job waits on: the one decision every interface records when
    a reviewer approves or rejects *a job* (``gait job approve``, ``POST /jobs/{id}/approve``,
    the job page, the approvals queue). docs/lifecycle.md, "One way to approve".

    - The job waits on an approval request: the decision is recorded on that request
      (``approval_decide``: N-of-M, distinct approvers, separation of duties, expiry; the
      request's last approval resumes the job). Several pending requests are
      ``approval_request_pending``, naming them: decide each one.
    - Otherwise the job's decision point (a decision-needed checkpoint, an emergency stop, a
      rejection) is approved with ``job_approve`` or rejected with ``job_reject``. With
      ``resume`` (the queue's *Approve and resume*), an approval then resumes the job through
      ``job_resume``'s checks on the decider's authority, as a request's last approval does; a
      refused check leaves the approval standing and says why (``resume_refusal``).

    ``checkpoint_id`` is the question the decider saw: if the job's decision point is no longer
    that checkpoint (answered meanwhile, or a newer question), ``decision_not_pending``.
    """

    actor.require(Scope.APPROVE)
    _decision_check(decision)
    job = job_get(actor=actor, job_id=job_id)
    pending = list(
        approvals_visible(actor)
        .filter(job=job, status=ApprovalStatus.PENDING)
        .order_by("created_at", "id")
    )
    if len(pending) == 1 and not checkpoint_id:
        outcome = approval_decide(
            actor=actor, request_id=pending[0].request_id, decision=decision, reason=reason
        )
        job.refresh_from_db()
        return JobDecision(
            job=job, decision=decision, question=outcome.request.summary, request=outcome
        )
    if pending:
        names = ", ".join(
            f"{r.request_id} (“{r.summary}”)" if r.summary else r.request_id for r in pending
        )
        raise Conflict(
            reasons.APPROVAL_REQUEST_PENDING,
            f"job {job.job_id} waits on {len(pending)} approval requests: {names}; "
            "decide each request",
            details={"job_id": job.job_id, "pending_requests": [r.request_id for r in pending]},
            hint=_decide_each_hints(job.job_id, pending[0].request_id),
        )
    with transaction.atomic():
        locked = job_get(actor=actor, job_id=job.job_id, for_update=True)
        point = job_decision_point(locked)
        if checkpoint_id and (point.checkpoint_id != checkpoint_id or not point.waiting):
            raise Conflict(
                reasons.DECISION_NOT_PENDING,
                f"job {job.job_id} no longer waits on checkpoint {checkpoint_id}: "
                "it was answered, or a newer question replaced it",
                details={"job_id": job.job_id, "checkpoint_id": checkpoint_id},
                hint="reload the queue",
            )
        if decision == DecisionKind.REJECT:
            done = job_reject(actor=actor, job_id=job.job_id, reason=reason)
            return JobDecision(job=done, decision=decision, question=point.question)
        done = job_approve(
            actor=actor, job_id=job.job_id, reason=reason, _decided_checkpoint=checkpoint_id
        )
    resumed, refusal = False, None
    if resume:
        refusal = _resume_on_decision(actor, job.job_id, f"approved by {actor.name}")
        resumed = refusal is None
        done.refresh_from_db()
    return JobDecision(
        job=done,
        decision=decision,
        question=point.question,
        resumed=resumed,
        resume_refusal=refusal,
    )


def _decide_each_hints(job_id: str, request_id: str) -> Hints:
    return Hints(
        cli=f"gait approval list --job {job_id}, then gait approval decide {request_id} approve --actor REVIEWER",
        api=f"GET /api/v1/approvals?job_id={job_id}, then POST /api/v1/approvals/{request_id}/decide",
        dashboard="decide each request on its card below",
    )


def approval_expire_due(
    *, actor: Actor | None = None, now: datetime | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Apply the expiry fallback to pending requests past ``expires_at``.

    ``reject``: the request becomes ``expired`` and a job waiting on it is blocked
    (``job_reject``; otherwise an ``approval_expired`` event). ``escalate``: the first expiry
    hands the request to admins (``escalated``; only ``admin`` may decide it from then on) for
    one more window of the same length (at least ``ESCALATION_WINDOW_MIN``), journaled as ``approval_escalated``; if that expires
    too, it is rejected. Run by the engine's sweep or ``gait approval expire-due``."""

    actor = actor or Actor.system("approval-expiry")
    actor.require(Scope.ADMIN)
    now = now or timezone.now()
    due = list(
        ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("request_id", "job__job_id")[:limit]
    )
    outcomes = []
    for request_id, job_id in due:
        with transaction.atomic():
            job = job_get(actor=actor, job_id=job_id, for_update=True)
            request = ApprovalRequest.objects.select_for_update().get(request_id=request_id)
            if (
                request.status != ApprovalStatus.PENDING
                or request.expires_at is None
                or request.expires_at > now
            ):
                continue  # decided or extended meanwhile
            if request.on_expiry == ExpiryFallback.ESCALATE and not request.escalated:
                window = max(request.expires_at - request.created_at, ESCALATION_WINDOW_MIN)
                request.escalated = True
                request.expires_at = now + window
                request.save(update_fields=["escalated", "expires_at"])
                event_append(
                    job,
                    type="approval_escalated",
                    actor=actor.name,
                    reason_code="approval_escalated",
                    payload={
                        "approval_request": request_id,
                        "expires_at": iso_utc(request.expires_at),
                    },
                )
                outcomes.append(
                    {"request_id": request_id, "job_id": job_id, "fallback": "escalate"}
                )
                continue
            request.status = ApprovalStatus.EXPIRED
            request.resolved_at = now
            request.save(update_fields=["status", "resolved_at"])
            reason = f"approval request {request_id} expired"
            if job.status == JobStatus.DECISION_NEEDED:
                job_reject(
                    actor=actor,
                    job_id=job_id,
                    reason=reason,
                    allow_self_approval=True,  # an expiry is no one's own decision
                    _decided_request=request_id,
                )
            else:
                event_append(
                    job,
                    type="approval_expired",
                    actor=actor.name,
                    reason_code="approval_expired",
                    payload={"approval_request": request_id, "reason": reason},
                )
            outcomes.append({"request_id": request_id, "job_id": job_id, "fallback": "reject"})
    return outcomes
