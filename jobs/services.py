"""The job lifecycle (docs/lifecycle.md) as services.

Every transition runs in one transaction that locks the job row, checks the current status,
writes the new state and exactly one JobEvent (jobs.journal.event_append). A refusal raises a
GaitError with a stable reason code before anything is written. Every transition, these and the
engine's (claim, step done, completed, failed, waiting), is a row of the lifecycle table
(jobs/states.py) and goes through its ``transition_apply``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from approvals.identities import (
    FROM_REQUEST,
    UNGATED,
    Assignment,
    identity_is_revoked,
    policy_assignment_get,
    policy_choose,
    submit_admission,
    version_policy_pk,
)
from approvals.models import ApprovalRequest, ApprovalStatus, DecisionKind
from approvals.policies import PolicyBinding
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.canonical import digest, iso_utc
from gaitweb.lib.errors import Conflict, Hints, InvalidInput, LimitExceeded, PolicyRefused
from gaitweb.lib.validation import text_field
from jobs.allowlists import spec_authorize
from jobs.enqueue import advance_enqueue
from jobs.journal import ChainReport, chain_verify, event_build
from jobs.models import (
    FINISHED_STATUSES,
    SUMMARY_MAX_BYTES,
    Checkpoint,
    CheckpointType,
    Job,
    JobEvent,
    JobStatus,
)
from jobs.selectors import (
    DecisionPoint,
    checkpoint_list,
    job_decision_point,
    job_get,
    job_id_check,
    job_snapshot,
)
from jobs.spec import SIGNAL_NAME_RE, spec_validate
from jobs.states import (
    BY_NAME,
    checkpoint_reason,
    checkpoint_transition,
    transition_apply,
    transition_check,
)
from jobs.wake import job_preempt_notify

if TYPE_CHECKING:
    from approvals.models import PolicyVersion

S = JobStatus

LABELS_MAX = 32
IDENTITY_MAX = 256


def environment_fingerprint_current() -> str:
    """The fingerprint of the environment jobs run in. Operators pin it with
    GAIT_ENV_FINGERPRINT; otherwise it names the interpreter and platform, so moving a job to a
    different runtime is noticed on resume (check 5)."""
    pinned = settings.GAIT.get("ENV_FINGERPRINT")
    if pinned:
        return str(pinned)[:128]
    basis = f"python-{platform.python_version()}|{platform.system()}|{platform.machine()}|gaitweb-1"
    return "env_" + hashlib.sha256(basis.encode()).hexdigest()[:32]


def _labels(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict) or len(labels) > LABELS_MAX:
        raise InvalidInput(
            reasons.INVALID_LABELS, f"labels must be an object of at most {LABELS_MAX} string pairs"
        )
    out = {}
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k or len(k) > 64 or len(v) > 256:
            raise InvalidInput(
                reasons.INVALID_LABELS,
                "label keys (1-64 chars) and values (≤256 chars) must be strings",
                details={"label": str(k)[:64]},
            )
        out[k] = v
    return out


# --- submit --------------------------------------------------------------------------------


def jobs_enabled_check() -> None:
    """Operators can switch new jobs off (GAIT_JOBS_ENABLED=false) without stopping the server."""
    if not settings.GAIT.get("JOBS_ENABLED", True):
        raise LimitExceeded(
            reasons.JOBS_DISABLED,
            "new jobs are switched off on this server (GAIT_JOBS_ENABLED=false)",
            details={"limit": "JOBS_ENABLED"},
            http_status=503,
            retryable=True,
        )


def job_submit(
    *,
    actor: Actor,
    job_id: str | None = None,
    identity: str = "",
    policy: PolicyBinding | None = None,
    spec: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    environment_fingerprint: str | None = None,
    parent_id: str | None = None,
    in_transaction: Callable[[Job], object] | None = None,
) -> Job:
    """Create a job. Without steps it is driven by an external agent (status running); with
    steps it is queued for the engine. ``spec`` is validated (jobs.spec) before anything is
    written; a revoked identity cannot submit.

    ``in_transaction(job)`` runs inside the transaction that writes the job (the API writes its
    idempotency record there): one transaction, no savepoint round trips, and an
    ``IntegrityError`` it raises rolls the job back and reaches the caller."""
    actor.require(Scope.SUBMIT)
    jobs_enabled_check()
    if job_id is None or job_id == "":
        job_id = f"job_{uuid.uuid4().hex[:24]}"
    job_id_check(job_id)
    identity = text_field(identity or actor.identity or "", "identity", max_len=IDENTITY_MAX)
    actor.require_identity(identity)
    labels = _labels(labels)
    normalized: dict[str, Any] = {}
    if spec:
        normalized = spec_validate(spec)
        spec_authorize(normalized)
    steps = normalized.get("steps", [])
    # revoked? and the admin's assignment, which decides whatever the request asked for
    # (docs/security.md): one round trip for an identity without a binding of its own
    revoked, assignment = submit_admission(identity=identity)
    if revoked:
        raise PolicyRefused(
            reasons.IDENTITY_REVOKED,
            f"identity {identity!r} is revoked",
            details={"identity": identity},
        )
    policy, assignment_source = _policy_assigned(
        identity=identity, requested=policy, assignment=assignment
    )
    parent = job_get(actor=actor, job_id=parent_id) if parent_id else None

    now = timezone.now()
    job = Job(
        job_id=job_id,
        status=S.QUEUED if steps else S.RUNNING,
        status_reason_code="job_queued" if steps else "submitted",
        identity=identity,
        policy=policy.version if policy else None,
        policy_digest=policy.digest if policy else "",
        policy_ref=policy.ref if policy else "",
        environment_fingerprint=environment_fingerprint or environment_fingerprint_current(),
        spec=normalized,
        step_count=len(steps),
        labels=labels,
        created_by=actor.name,
        created_by_user=actor.user if actor.kind == "user" else None,
        parent=parent,
        started_at=None if steps else now,
    )
    if normalized.get("deadline_seconds"):
        job.deadline = now + timedelta(seconds=float(normalized["deadline_seconds"]))
    # The first event is built before the job row exists, so the row is inserted once with its
    # chain head already set: two INSERTs, no UPDATE (submit is the API's hottest write).
    event = event_build(
        job,
        type="submitted",
        actor=actor.name,
        reason_code=job.status_reason_code,
        payload={
            "identity": identity,
            "policy_digest": job.policy_digest,
            "policy_ref": job.policy_ref,
            "environment_fingerprint": job.environment_fingerprint,
            "policy_assignment": assignment_source,
            "step_count": job.step_count,
            "spec_digest": _spec_digest(normalized) if steps else "",
            "labels": labels,
        },
    )
    try:
        with transaction.atomic():
            job.save(force_insert=True)
            event.job = job
            event.save(force_insert=True)
            if in_transaction is not None:
                in_transaction(job)
            if steps:
                advance_enqueue(job.job_id)
    except IntegrityError:
        if Job.objects.filter(job_id=job_id).exists():
            raise Conflict(
                reasons.JOB_EXISTS,
                f"a job with id {job_id!r} already exists",
                details={"job_id": job_id},
            ) from None
        raise
    return job


def _policy_assigned(
    *, identity: str, requested: PolicyBinding | None, assignment: Assignment | None = None
) -> tuple[PolicyBinding | None, str]:
    """The binding of a new job of ``identity`` and where it comes from (approvals.identities):
    the identity's policy or the deployment default, a permitted policy the caller asked for,
    or — with no policy anywhere — whatever the caller asked for, as before assignments."""
    if assignment is None:
        assignment = policy_assignment_get(identity=identity)
    if not assignment.gated:
        return requested, (FROM_REQUEST if requested is not None else UNGATED)
    if requested is not None and requested.version is None:
        raise PolicyRefused(
            reasons.POLICY_NOT_ALLOWED,
            f"jobs of identity {identity!r} are bound to an admin-assigned policy; "
            f"{requested.ref or requested.digest[:12]} is not a stored policy",
            details={"identity": identity, "policy": requested.ref},
        )
    version, source = policy_choose(
        assignment=assignment, requested=requested.version if requested else None
    )
    assert version is not None
    if requested is not None and version.pk == getattr(requested.version, "pk", None):
        return requested, source
    return PolicyBinding.of(version), source


def _policy_reassigned(
    job: Job, requested: PolicyBinding | None
) -> tuple[PolicyBinding | None, str]:
    """For a resume or a retry of ``job``: the binding the identity's assignment requires now,
    or ``(None, "")`` when the assignment leaves the job as it is (no assignment and nothing
    requested, or the job is bound to a policy the assignment permits and nothing else was
    asked for). The binding is the current version of that policy, so a resume re-evaluates."""
    assignment = policy_assignment_get(identity=job.identity)
    if not assignment.gated:
        return None, ""
    if requested is not None:
        return _policy_assigned(identity=job.identity, requested=requested)
    bound_policy = version_policy_pk(job.policy_id)
    if bound_policy is not None and assignment.permits(bound_policy):
        return None, ""
    return PolicyBinding.of(assignment.current()), assignment.source


def _policy_rebind(
    job: Job, rebind: PolicyBinding, assignment_source: str, payload: dict[str, Any]
) -> list[str]:
    """Re-bind ``job`` to ``rebind`` (a resume's or a retry's), noting the old and new digests
    and where the policy came from in the event ``payload``; returns the fields to save."""
    payload["policy_digest_before"] = job.policy_digest
    payload["policy_digest"] = rebind.digest
    if assignment_source:
        payload["policy_assignment"] = assignment_source
    job.policy_digest, job.policy_ref, job.policy = rebind.digest, rebind.ref, rebind.version
    return ["policy_digest", "policy_ref", "policy"]


def _spec_digest(spec: dict[str, Any]) -> str:
    return digest(spec)


# --- checkpoints -----------------------------------------------------------------------------

# type: (allowed from, new status or None for unchanged), from the lifecycle table (jobs.states)
CHECKPOINT_RULES: dict[str, tuple[frozenset[str], str | None]] = {
    t: (row.from_, row.to[0] if row.to else None)
    for t in CheckpointType.values
    for row in [checkpoint_transition(t)]
}


def job_checkpoint_add(
    *,
    actor: Actor,
    job_id: str,
    type: str,
    summary: str,
    required_action: str = "",
    reason_code: str = "",
) -> Checkpoint:
    """Record a Gait-style milestone; decision-needed, blocked and completed also move the job."""
    actor.require(Scope.SUBMIT)
    if type not in CHECKPOINT_RULES:
        raise InvalidInput(
            reasons.INVALID_CHECKPOINT_TYPE,
            f"checkpoint type must be one of {', '.join(CHECKPOINT_RULES)}",
            details={"field": "type", "allowed": list(CHECKPOINT_RULES)},
        )
    summary = text_field(summary, "summary", max_len=SUMMARY_MAX_BYTES, bytes_=True, required=True)
    required_action = text_field(
        required_action, "required_action", max_len=SUMMARY_MAX_BYTES, bytes_=True
    )
    if required_action and type != CheckpointType.DECISION_NEEDED:
        raise InvalidInput(
            reasons.REQUIRED_ACTION_NOT_ALLOWED,
            "required_action is only for decision-needed checkpoints",
            details={"field": "required_action"},
        )
    reason_code = text_field(reason_code, "reason_code", max_len=64)
    allowed, new_status = CHECKPOINT_RULES[type]
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        transition_check(job, f"add a {type} checkpoint to", allowed=allowed)
        return checkpoint_write(
            job,
            actor=actor.name,
            type=type,
            summary=summary,
            required_action=required_action,
            reason_code=reason_code,
            new_status=new_status,
        )


def checkpoint_write(
    job: Job,
    *,
    actor: str,
    type: str,
    summary: str,
    required_action: str = "",
    reason_code: str = "",
    new_status: str | None = None,
    payload: dict[str, Any] | None = None,
    update_fields: Iterable[str] = (),
) -> Checkpoint:
    """Write a checkpoint, its event and the status it implies. The job row must be locked (or
    lease-guarded by the engine). Shared by agents' checkpoints and the engine's own; the caller's
    own changes to ``job`` (``update_fields``, e.g. the engine releasing its lease) are saved in
    the same UPDATE."""
    job.checkpoint_count += 1
    checkpoint_id = f"cp_{job.checkpoint_count:04d}"
    event = transition_apply(
        job,
        checkpoint_transition(type),
        actor=actor,
        to=new_status,
        reason=checkpoint_reason(type),
        status_reason=reason_code,
        update_fields=["checkpoint_count", *update_fields],
        payload={
            "checkpoint_id": checkpoint_id,
            "type": type,
            "summary": summary,
            "required_action": required_action,
            "reason_code": reason_code,
            **(payload or {}),
        },
    )
    return Checkpoint.objects.create(
        job=job,
        checkpoint_id=checkpoint_id,
        type=type,
        summary=summary,
        required_action=required_action,
        reason_code=reason_code,
        actor=actor,
        event_revision=event.revision,
    )


# --- control actions ---------------------------------------------------------------------------


def _reason(reason: Any) -> str:
    return text_field(reason, "reason", max_len=1024)


def job_pause(*, actor: Actor, job_id: str, reason: str = "") -> Job:
    """Pause at the next step boundary: a running step finishes and is recorded first."""
    actor.require(Scope.CONTROL)
    reason = _reason(reason)
    with _locked_for(actor, job_id, "pause") as job:
        job.wake_at = None
        transition_apply(
            job,
            BY_NAME["pause"],
            actor=actor.name,
            payload={"reason": reason},
            update_fields=["wake_at"],
        )
    return job


def job_stop(*, actor: Actor, job_id: str, reason: str = "") -> Job:
    """Emergency stop: preempts the running step and blocks every later dispatch until a new
    approval and a resume (or a cancel)."""
    actor.require(Scope.CONTROL)
    reason = _reason(reason)
    with _locked_for(actor, job_id, "stop") as job:
        previous = job.status
        job.stop_reason = reason or f"emergency stop by {actor.name}"
        job.stopped_at = timezone.now()
        job.stopped_by = actor.name
        job.wake_at = None
        transition_apply(
            job,
            BY_NAME["stop"],
            actor=actor.name,
            payload={"reason": reason, "previous_status": previous},
            update_fields=["stop_reason", "stopped_at", "stopped_by", "wake_at"],
        )
        job_preempt_notify(job.job_id)  # the worker running it kills the step at once
    return job


@dataclass(frozen=True)
class PendingRequest:
    """An approval request a job waits on, as refusals name it."""

    request_id: str
    summary: str
    approvals: int
    required_approvals: int

    def describe(self) -> str:
        about = f" (“{self.summary}”)" if self.summary else ""
        return f"{self.request_id}{about}, {self.approvals} of {self.required_approvals} approvals"


def _pending_requests(job: Job) -> list[PendingRequest]:
    """The job's pending approval requests, oldest first, with their approvals so far: one
    query."""

    rows = (
        ApprovalRequest.objects.filter(job=job, status=ApprovalStatus.PENDING)
        .annotate(n=Count("decisions", filter=Q(decisions__decision=DecisionKind.APPROVE)))
        .order_by("created_at", "id")
        .values_list("request_id", "summary", "n", "required_approvals")
    )
    return [PendingRequest(*row) for row in rows]


def _decide_request_hints(job_id: str, request_id: str) -> Hints:
    return Hints(
        cli=f"gait approval decide {request_id} approve --actor REVIEWER",
        api=f'POST /api/v1/approvals/{request_id}/decide with {{"decision": "approve"}}',
        dashboard="approve the request on its card (Approvals, or this job's page)",
        mcp=f"a reviewer decides request {request_id}; approval_wait waits for the decision",
    )


def _approve_job_hints(job_id: str, decision: DecisionPoint) -> Hints:
    """Where a reviewer records the approval a resume needs, interface by interface."""
    who = "a reviewer"
    if decision.kind == "emergency_stop" and decision.event is not None:
        who = f"a reviewer other than {decision.event.actor}"
    dashboard = (
        f"{who} answers it in Approvals (Approve and resume)"
        if decision.kind == "checkpoint"
        else f"{who} approves it on this page, then resume"
    )
    return Hints(
        cli=f"{who}: gait job approve --id {job_id} --actor REVIEWER --reason …; then resume",
        api=f"{who} posts POST /api/v1/jobs/{job_id}/approve; then POST /api/v1/jobs/{job_id}/resume",
        dashboard=dashboard,
        mcp=f"{who} approves job {job_id} (dashboard, API or CLI)",
    )


@contextmanager
def _locked_for(actor: Actor, job_id: str, action: str) -> Iterator[Job]:
    """In one transaction: the job row locked, once the lifecycle table allows ``action`` from
    its status (jobs.states); the transition itself is the caller's."""
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        transition_check(job, action)
        yield job


@contextmanager
def _deciding(actor: Actor, job_id: str, action: str, allow_self_approval: bool) -> Iterator[Job]:
    """``_locked_for`` an approve or a reject: also separation of duties, unless the policy
    turned it off (``allow_self_approval``)."""
    with _locked_for(actor, job_id, action) as job:
        if not allow_self_approval:
            _forbid_self_approval(job, actor)
        yield job


def _decision_payload(reason: str, request: str = "", checkpoint: str = "") -> dict[str, Any]:
    """An approval's or a rejection's event payload: the reason, and what it decided."""
    payload: dict[str, Any] = {"reason": reason}
    if request:
        payload["approval_request"] = request
    if checkpoint:
        payload["checkpoint_id"] = checkpoint
    return payload


def _forbid_self_approval(job: Job, actor: Actor) -> None:
    """Separation of duties: whoever submitted a job (person or agent identity) cannot approve it."""
    if job.is_submitted_by(actor):
        raise PolicyRefused(
            reasons.SELF_APPROVAL_FORBIDDEN,
            f"{actor.name} submitted or runs job {job.job_id} and cannot approve it",
            details={"job_id": job.job_id, "actor": actor.name},
        )


def job_approve(
    *,
    actor: Actor,
    job_id: str,
    reason: str = "",
    allow_self_approval: bool = False,
    _decided_request: str = "",
    _decided_checkpoint: str = "",
) -> Job:
    """Record an approval of the job's decision point. The status is unchanged; a resume then
    checks for it. ``allow_self_approval`` is set by the approvals flow when the policy turns
    separation of duties off (``forbid_self_approval: false``).

    A job waiting on an approval request is decided on the request (``approval_decide``, with
    its N-of-M, separation of duties and expiry): here that is ``approval_request_pending``,
    naming the request. The front doors (CLI, API, dashboard) route a job-level approve to
    the request instead (``approvals.services.job_decide``). The actor who emergency-stopped
    the job cannot approve its resume (``stopper_sole_approver``): their approval would use
    up the decision point that someone else must answer."""
    actor.require(Scope.APPROVE)
    reason = _reason(reason)
    with _deciding(actor, job_id, "approve", allow_self_approval) as job:
        if not _decided_request:
            _refuse_the_stopper(job, actor)
            pending = _pending_requests(job)
            if pending:
                first = pending[0]
                raise Conflict(
                    reasons.APPROVAL_REQUEST_PENDING,
                    f"job {job_id} waits on approval request {first.describe()}: "
                    "the request is what gets approved",
                    details={
                        "job_id": job_id,
                        "request_id": first.request_id,
                        "pending_requests": [r.request_id for r in pending],
                    },
                    hint=_decide_request_hints(job_id, first.request_id),
                )
        decision = job_decision_point(job)
        if decision.approvals and not _decided_request:
            raise Conflict(
                reasons.ALREADY_APPROVED,
                f"job {job_id} already has an approval for its current decision",
                details={"job_id": job_id, "approved_by": decision.approvals[-1].actor},
                hint="resume the job, or wait for a new decision point",
            )
        payload = _decision_payload(reason, _decided_request, _decided_checkpoint)
        transition_apply(job, BY_NAME["approve"], actor=actor.name, payload=payload)
    return job


def _refuse_the_stopper(job: Job, actor: Actor) -> None:
    """An emergency stop is released by someone else: the stopper's own approval would be the
    only one recorded for the decision point and could never count (docs/lifecycle.md)."""
    names = {actor.name, actor.identity} - {None, ""}  # one person behind a login and a key
    if job.status == S.EMERGENCY_STOPPED and job.stopped_by in names:
        raise PolicyRefused(
            reasons.STOPPER_SOLE_APPROVER,
            f"{actor.name} emergency-stopped job {job.job_id} and cannot approve its resume",
            details={"job_id": job.job_id, "stopped_by": job.stopped_by},
            hint="another reviewer must approve",
        )


def job_reject(
    *,
    actor: Actor,
    job_id: str,
    reason: str = "",
    allow_self_approval: bool = False,
    _decided_request: str = "",
) -> Job:
    actor.require(Scope.APPROVE)
    reason = text_field(reason, "reason", max_len=1024, required=True, code=reasons.REASON_TOO_LONG)
    with _deciding(actor, job_id, "reject", allow_self_approval) as job:
        # a tool call of a workflow (or of an external agent's durable run) that a reviewer
        # rejected: the code runs on and sees ToolRejected at that call (jobs.durable,
        # jobs.durable_api); anything else blocks the job
        requeue = bool(_decided_request) and _call_request(job, _decided_request)
        transition_apply(
            job,
            BY_NAME["reject"],
            actor=actor.name,
            to=(S.QUEUED if job.step_count else S.RUNNING) if requeue else S.BLOCKED,
            payload=_decision_payload(reason, _decided_request),
        )
        if requeue and job.step_count:
            advance_enqueue(job.job_id)
    return job


def _call_request(job: Job, request_id: str) -> bool:
    return (job.is_workflow or job.step_count == 0) and ApprovalRequest.objects.filter(
        job=job, request_id=request_id, step_index__gte=1
    ).exists()


def job_resume(
    *,
    actor: Actor,
    job_id: str,
    reason: str = "",
    identity: str | None = None,
    policy: PolicyBinding | None = None,
    revoked_identities: Iterable[str] = (),
    allow_env_mismatch: bool = False,
    environment_fingerprint: str | None = None,
) -> Job:
    """Resume after the five ordered checks in docs/lifecycle.md; the first failing check refuses with
    its reason code and nothing is written.

    ``identity`` is the identity asserting the resume (an agent, or the CLI's ``--actor``); a
    person resuming from the dashboard, or a cross-identity service key, acts for the job's
    bound identity, which must still not be revoked."""
    actor.require(Scope.CONTROL)
    reason = _reason(reason)
    # (1) status
    with _locked_for(actor, job_id, "resume") as job:
        # (2) approvals
        decision = job_decision_point(job)
        if decision.waiting:
            if decision.stopper_approvals:
                message = (
                    f"job {job_id} was emergency-stopped by {job.stopped_by}, whose own approval "
                    "does not release the stop; another reviewer must approve"
                )
            else:
                question = f": {decision.question}" if decision.question else ""
                message = f"job {job_id} needs an approval recorded after its last decision point{question}"
            raise PolicyRefused(
                reasons.APPROVAL_REQUIRED,
                message,
                details={
                    "job_id": job_id,
                    "decision_revision": decision.revision,
                    "decision": decision.kind,
                    **({"stopped_by": job.stopped_by} if decision.kind == "emergency_stop" else {}),
                },
                hint=_approve_job_hints(job_id, decision),
                exit_code=4,
            )
        pending = _pending_requests(job)
        if pending:
            raise PolicyRefused(
                reasons.APPROVAL_REQUIRED,
                f"job {job_id} waits on approval request {pending[0].describe()}"
                + (f" and {len(pending) - 1} more" if len(pending) > 1 else ""),
                details={"job_id": job_id, "pending_requests": [r.request_id for r in pending]},
                hint=_decide_request_hints(job_id, pending[0].request_id),
                exit_code=4,
            )
        # (3) policy: the identity's assigned policy first (approvals.identities), then the
        # current version of the bound one
        transition = False
        rebind: PolicyBinding | None = None
        assigned, assignment_source = _policy_reassigned(job, policy)
        if assigned is not None:
            if assigned.digest != job.policy_digest:
                transition = True
                rebind = assigned
        elif job.policy_digest:
            current = policy
            # a policy file is pinned by what it said when given: only the file, given again,
            # says what it says now (fail closed; its stored copy is not a policy to follow)
            if current is None and job.policy is not None and not job.policy.policy.is_file_copy:
                current = _policy_current(job.policy)
            if current is None:
                raise PolicyRefused(
                    reasons.POLICY_EVALUATION_REQUIRED,
                    f"job {job_id} is bound to policy {job.policy_ref or job.policy_digest[:12]}; resume must re-evaluate it",
                    details={"job_id": job_id, "policy_digest": job.policy_digest},
                    hint=Hints(
                        cli="pass the policy file again: --policy FILE",
                        api='send "policy": the name of a stored policy (GET /api/v1/policies)',
                        dashboard="a job bound to a policy file is resumed from the CLI with "
                        "the file (gait job resume --policy FILE)",
                    ),
                )
            if current.digest != job.policy_digest:
                transition = True
                rebind = current
        elif policy is not None:
            rebind = policy
        # (4) identity
        # an agent (identity-bound) asserts its own identity; a person, a cross-identity key or
        # the approvals flow asserts none unless told: the job's own is checked below
        asserted = identity
        if asserted is None and actor.kind != "user" and actor.bound_identity is not None:
            asserted = actor.identity
        if job.identity and asserted is not None and asserted != job.identity:
            raise PolicyRefused(
                reasons.IDENTITY_BINDING_MISMATCH,
                f"job {job_id} is bound to identity {job.identity!r}, not {asserted!r}",
                details={"job_id": job_id, "bound_identity": job.identity, "identity": asserted},
            )
        listed = set(revoked_identities)
        for who in sorted({w for w in (job.identity, asserted) if w}):
            if who in listed or identity_is_revoked(who):
                raise PolicyRefused(
                    reasons.IDENTITY_REVOKED,
                    f"identity {who!r} is revoked",
                    details={"identity": who},
                )
        # (5) environment fingerprint
        env_now = environment_fingerprint or environment_fingerprint_current()
        override = False
        if job.environment_fingerprint and env_now != job.environment_fingerprint:
            if not allow_env_mismatch:
                raise PolicyRefused(
                    reasons.ENVIRONMENT_FINGERPRINT_MISMATCH,
                    "the environment differs from the one the job was submitted in",
                    details={
                        "job_id": job_id,
                        "expected": job.environment_fingerprint,
                        "actual": env_now,
                    },
                    hint=Hints(
                        cli="pass --allow-env-mismatch to resume anyway",
                        api='send "allow_env_mismatch": true to resume anyway',
                        dashboard="press “Resume in this environment” to resume anyway",
                    ),
                )
            override = True

        reason_code = (
            "resumed"
            + ("_with_env_override" if override else "")
            + ("_policy_transition" if transition else "")
        )
        fields = ["stop_reason"]
        payload: dict[str, Any] = {"reason": reason, "previous_status": job.status}
        if rebind is not None:
            fields += _policy_rebind(job, rebind, assignment_source, payload)
        if override:
            payload["environment_fingerprint_before"] = job.environment_fingerprint
            payload["environment_fingerprint"] = env_now
            job.environment_fingerprint = env_now
            fields.append("environment_fingerprint")
        runnable = job.step_count > 0 and job.cursor < job.step_count
        job.stop_reason = ""
        transition_apply(
            job,
            BY_NAME["resume"],
            actor=actor.name,
            to=S.QUEUED if runnable else S.RUNNING,
            reason=reason_code,
            payload=payload,
            update_fields=fields,
        )
        if runnable:
            advance_enqueue(job.job_id)
    return job


def _policy_current(version: PolicyVersion) -> PolicyBinding | None:
    current = version.policy.current
    if current is None:
        return None
    return PolicyBinding.of(current, name=version.policy.name)


def job_cancel(*, actor: Actor, job_id: str, reason: str = "") -> Job:
    actor.require(Scope.CONTROL)
    reason = _reason(reason)
    with _locked_for(actor, job_id, "cancel") as job:
        if job.status == S.QUEUED and job.started_at is None:
            code = reasons.JOB_CANCELLED_BEFORE_START
        elif job.status in (S.RUNNING, S.WAITING):
            code = reasons.JOB_CANCELLED_DURING_RUN
        else:
            code = reasons.CANCELLED
        previous = job.status
        job.stop_reason = reason or f"cancelled by {actor.name}"
        job.wake_at = None
        transition_apply(
            job,
            BY_NAME["cancel"],
            actor=actor.name,
            reason=code,
            payload={"reason": reason, "previous_status": previous},
            update_fields=["stop_reason", "wake_at"],
        )
        job_preempt_notify(job.job_id)
    return job


def job_retry(*, actor: Actor, job_id: str, reason: str = "") -> Job:
    """Operator retry: back to queued at the failed step; completed steps keep their outputs."""
    actor.require(Scope.CONTROL)
    reason = _reason(reason)
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        if not job.can("retry"):
            raise Conflict(
                reasons.INVALID_TRANSITION,
                f"cannot retry a job that is {job.status}"
                + (
                    ""
                    if job.step_count
                    else " (only jobs with steps run by gaitweb can be retried)"
                ),
                details={
                    "job_id": job_id,
                    "status": job.status,
                    "allowed_from": sorted(BY_NAME["retry"].from_),
                },
            )
        previous = job.status
        fields = ["stop_reason", "finished_at", "wake_at"]
        payload: dict[str, Any] = {
            "reason": reason,
            "previous_status": previous,
            "resume_at_step": job.cursor,
        }
        # an assignment made since the job was bound applies from the retry on
        rebind, assignment_source = _policy_reassigned(job, None)
        if rebind is not None:
            fields += _policy_rebind(job, rebind, assignment_source, payload)
        job.stop_reason = ""
        job.finished_at = None
        job.wake_at = None
        transition_apply(
            job, BY_NAME["retry"], actor=actor.name, payload=payload, update_fields=fields
        )
        advance_enqueue(job.job_id)
    return job


def job_signal(*, actor: Actor, job_id: str, name: str, payload: Any = None) -> Job:
    """Deliver signal ``name`` with ``payload`` to a job. Signals are journaled
    (``signal_received``) and buffered: a ``wait_event`` step consumes the oldest unconsumed one
    of its name, whether it arrived before or while the job waited. A waiting job is woken."""
    actor.require(Scope.SUBMIT)
    if not isinstance(name, str) or not SIGNAL_NAME_RE.match(name):
        raise InvalidInput(
            reasons.INVALID_SIGNAL_NAME,
            "signal names are 1-128 letters, digits and . _ : - starting with a letter or digit",
            details={"field": "name"},
        )
    try:
        size = len(json.dumps(payload).encode("utf-8"))
    except (TypeError, ValueError):
        raise InvalidInput(
            reasons.INVALID_SIGNAL_PAYLOAD, "the payload must be JSON", details={"field": "payload"}
        ) from None
    gait: dict[str, Any] = settings.GAIT  # type: ignore[assignment]
    limit = int(gait["STEP_OUTPUT_MAX_BYTES"])
    if size > limit:
        raise LimitExceeded(
            reasons.SIGNAL_PAYLOAD_TOO_LARGE,
            f"the payload is larger than {limit} bytes",
            details={"field": "payload", "max_bytes": limit},
        )
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        if job.status in FINISHED_STATUSES or job.step_count == 0:
            raise Conflict(
                reasons.INVALID_TRANSITION,
                f"cannot signal a job that is {job.status}"
                + ("" if job.step_count else " (it has no steps)"),
                details={"job_id": job_id, "status": job.status},
            )
        fields: list[str] = []
        wake = job.status == S.WAITING
        if wake:
            job.wake_at = timezone.now()
            fields.append("wake_at")
        transition_apply(
            job,
            BY_NAME["signal"],
            actor=actor.name,
            payload={"name": name, "payload": payload},
            update_fields=fields,
        )
        if wake:
            advance_enqueue(job.job_id)
    return job


# --- read side ---------------------------------------------------------------------------------


def job_verify_chain(*, actor: Actor | None, job_id: str) -> ChainReport:
    return chain_verify(job_get(actor=actor, job_id=job_id))


def job_inspect(*, actor: Actor | None, job_id: str, events_limit: int = 50) -> dict[str, Any]:
    """Everything an operator looks at first: the job, its checkpoints, its latest events and
    whether its journal verifies."""

    job = job_get(actor=actor, job_id=job_id)
    events = list(JobEvent.objects.filter(job=job).order_by("-revision")[:events_limit])
    events.reverse()
    return {
        "job": job_snapshot(job),
        "checkpoints": [c.as_dict() for c in checkpoint_list(job=job)],
        "events": [
            {
                "revision": e.revision,
                "type": e.type,
                "actor": e.actor,
                "reason_code": e.reason_code,
                "payload": e.payload,
                "created_at": iso_utc(e.created_at),
                "hash": e.hash,
            }
            for e in events
        ],
        "chain": chain_verify(job).as_dict(),
    }
