"""The job lifecycle (docs/lifecycle.md) as services.

Every transition runs in one transaction that locks the job row, checks the current status,
writes the new state and exactly one JobEvent (jobs.journal.event_append). A refusal raises a
GaitError with a stable reason code before anything is written. Engine-internal transitions
(claim, step done, completed, failed, waiting) live in jobs/engine.py.
"""

from __future__ import annotations

import hashlib
import platform
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from approvals.assignments import (
    FROM_REQUEST,
    UNGATED,
    policy_assignment_get,
    policy_choose,
    version_policy_pk,
)
from gaitweb.actors import Actor, Scope
from gaitweb.errors import Conflict, InvalidInput, LimitExceeded, PolicyRefused
from gaitweb.validation import text_field
from jobs.allowlists import spec_authorize
from jobs.journal import ChainReport, chain_verify, event_append, event_build
from jobs.models import (
    ALLOWED_FROM,
    FINISHED_STATUSES,
    SUMMARY_MAX_BYTES,
    Checkpoint,
    CheckpointType,
    Job,
    JobEvent,
    JobStatus,
)
from jobs.selectors import job_get, job_id_check
from jobs.wake import job_wake

if TYPE_CHECKING:
    from approvals.models import PolicyVersion

S = JobStatus

# Event types that put a decision in front of the job: a resume needs an approval recorded
# after the newest of them (resume check 2).
APPROVAL_NEEDING = {
    ("checkpoint_added", "checkpoint_decision_needed"),
    ("rejected", "approval_rejected"),
    ("emergency_stop_acknowledged", "emergency_stop_preempted"),
    ("approval_requested", "approval_requested"),
}
LABELS_MAX = 32
IDENTITY_MAX = 256


@dataclass(frozen=True)
class PolicyBinding:
    """A policy a job is bound to, or re-evaluated against on resume.

    ``version`` is set when the policy is managed in gaitweb (Django admin / API); a policy read
    from a file by the CLI has only a digest and a ref (the path)."""

    digest: str
    ref: str
    version: PolicyVersion | None = None


def environment_fingerprint_current() -> str:
    """The fingerprint of the environment jobs run in. Operators pin it with
    GAIT_ENV_FINGERPRINT; otherwise it names the interpreter and platform, so moving a job to a
    different runtime is noticed on resume (check 5)."""
    pinned = settings.GAIT.get("ENV_FINGERPRINT")
    if pinned:
        return str(pinned)[:128]
    basis = f"python-{platform.python_version()}|{platform.system()}|{platform.machine()}|gaitweb-1"
    return "env_" + hashlib.sha256(basis.encode()).hexdigest()[:32]


def _require_status(job: Job, action: str, allowed: Iterable[str] | None = None) -> None:
    """Refuse with ``invalid_transition`` unless the job may take ``action`` now; ``allowed``
    overrides the lifecycle table (checkpoints have their own)."""
    ok = job.status in set(allowed) if allowed is not None else job.can(action)
    if ok:
        return
    statuses = sorted(allowed if allowed is not None else ALLOWED_FROM[action])
    raise Conflict(
        "invalid_transition",
        f"cannot {action} a job that is {job.status}",
        details={
            "job_id": job.job_id,
            "status": job.status,
            "action": action,
            "allowed_from": statuses,
        },
        hint=f"{action} is allowed from: {', '.join(statuses)}",
    )


def _labels(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict) or len(labels) > LABELS_MAX:
        raise InvalidInput(
            "invalid_labels", f"labels must be an object of at most {LABELS_MAX} string pairs"
        )
    out = {}
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k or len(k) > 64 or len(v) > 256:
            raise InvalidInput(
                "invalid_labels",
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
            "jobs_disabled",
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
        from jobs.spec import spec_validate

        normalized = spec_validate(spec)
        spec_authorize(normalized)
    steps = normalized.get("steps", [])
    from approvals.services import identity_is_revoked

    if identity_is_revoked(identity):
        raise PolicyRefused(
            "identity_revoked", f"identity {identity!r} is revoked", details={"identity": identity}
        )
    # the admin's assignment decides, whatever the request asked for (docs/security.md)
    policy, assignment_source = _policy_assigned(identity=identity, requested=policy)
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
                job_wake(job.job_id)
    except IntegrityError:
        if Job.objects.filter(job_id=job_id).exists():
            raise Conflict(
                "job_exists", f"a job with id {job_id!r} already exists", details={"job_id": job_id}
            ) from None
        raise
    return job


def _policy_assigned(
    *, identity: str, requested: PolicyBinding | None
) -> tuple[PolicyBinding | None, str]:
    """The binding of a new job of ``identity`` and where it comes from (approvals.assignments):
    the identity's policy or the deployment default, a permitted policy the caller asked for,
    or — with no policy anywhere — whatever the caller asked for, as before assignments."""
    assignment = policy_assignment_get(identity=identity)
    if not assignment.gated:
        return requested, (FROM_REQUEST if requested is not None else UNGATED)
    if requested is not None and requested.version is None:
        raise PolicyRefused(
            "policy_not_allowed",
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
    return _binding_of(version), source


def _binding_of(version: PolicyVersion) -> PolicyBinding:
    return PolicyBinding(
        digest=version.digest, ref=f"policy:{version.policy.name}", version=version
    )


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
    return _binding_of(assignment.current()), assignment.source


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
    from gaitweb.canonical import digest

    return digest(spec)


# --- checkpoints -----------------------------------------------------------------------------

CHECKPOINT_RULES: dict[str, tuple[frozenset[str], str | None]] = {
    # type: (allowed from, new status or None for unchanged)
    CheckpointType.PLAN: (frozenset({S.QUEUED, S.RUNNING, S.WAITING, S.PAUSED}), None),
    CheckpointType.PROGRESS: (frozenset({S.QUEUED, S.RUNNING, S.WAITING, S.PAUSED}), None),
    CheckpointType.DECISION_NEEDED: (frozenset({S.RUNNING}), S.DECISION_NEEDED),
    CheckpointType.BLOCKED: (frozenset({S.RUNNING}), S.BLOCKED),
    CheckpointType.COMPLETED: (frozenset({S.RUNNING}), S.COMPLETED),
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
            "invalid_checkpoint_type",
            f"checkpoint type must be one of {', '.join(CHECKPOINT_RULES)}",
            details={"field": "type", "allowed": list(CHECKPOINT_RULES)},
        )
    summary = text_field(summary, "summary", max_len=SUMMARY_MAX_BYTES, bytes_=True, required=True)
    required_action = text_field(
        required_action, "required_action", max_len=SUMMARY_MAX_BYTES, bytes_=True
    )
    if required_action and type != CheckpointType.DECISION_NEEDED:
        raise InvalidInput(
            "required_action_not_allowed",
            "required_action is only for decision-needed checkpoints",
            details={"field": "required_action"},
        )
    reason_code = text_field(reason_code, "reason_code", max_len=64)
    allowed, new_status = CHECKPOINT_RULES[type]
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        _require_status(job, f"add a {type} checkpoint to", allowed)
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
    event_reason = "checkpoint_" + type.replace("-", "_")
    job.checkpoint_count += 1
    checkpoint_id = f"cp_{job.checkpoint_count:04d}"
    fields = ["checkpoint_count", *update_fields]
    if new_status:
        job.status = new_status
        job.status_reason_code = reason_code or event_reason
        fields += ["status", "status_reason_code"]
        if new_status in FINISHED_STATUSES:
            job.finished_at = timezone.now()
            fields.append("finished_at")
    event = event_append(
        job,
        type="checkpoint_added",
        actor=actor,
        reason_code=event_reason,
        payload={
            "checkpoint_id": checkpoint_id,
            "type": type,
            "summary": summary,
            "required_action": required_action,
            "reason_code": reason_code,
            **(payload or {}),
        },
        update_fields=fields,
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
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        _require_status(job, "pause")
        job.status = S.PAUSED
        job.status_reason_code = "paused"
        job.wake_at = None
        event_append(
            job,
            type="paused",
            actor=actor.name,
            reason_code="paused",
            payload={"reason": reason},
            update_fields=["status", "status_reason_code", "wake_at"],
        )
    return job


def job_stop(*, actor: Actor, job_id: str, reason: str = "") -> Job:
    """Emergency stop: preempts the running step and blocks every later dispatch until a new
    approval and a resume (or a cancel)."""
    actor.require(Scope.CONTROL)
    reason = _reason(reason)
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        _require_status(job, "stop")
        previous = job.status
        job.status = S.EMERGENCY_STOPPED
        job.status_reason_code = "emergency_stop_preempted"
        job.stop_reason = reason or f"emergency stop by {actor.name}"
        job.stopped_at = timezone.now()
        job.stopped_by = actor.name
        job.wake_at = None
        event_append(
            job,
            type="emergency_stop_acknowledged",
            actor=actor.name,
            reason_code="emergency_stop_preempted",
            payload={"reason": reason, "previous_status": previous},
            update_fields=[
                "status",
                "status_reason_code",
                "stop_reason",
                "stopped_at",
                "stopped_by",
                "wake_at",
            ],
        )
    return job


def _approval_window(job: Job) -> tuple[int, list[JobEvent]]:
    """(revision of the newest approval-needing event since the last resume, the approvals
    recorded since the last resume). Reads only those events: a long run of progress
    checkpoints costs nothing here."""
    last_resume = (
        JobEvent.objects.filter(job=job, type="resumed")
        .order_by("-revision")
        .values_list("revision", flat=True)
        .first()
        or 0
    )
    wanted = Q(type="approved")
    for type_, reason_code in APPROVAL_NEEDING:
        wanted |= Q(type=type_, reason_code=reason_code)
    since = list(
        JobEvent.objects.filter(wanted, job=job, revision__gt=last_resume)
        .order_by("revision")
        .only("revision", "type", "reason_code", "actor")
    )
    needing = max((e.revision for e in since if e.type != "approved"), default=0)
    return needing, [e for e in since if e.type == "approved"]


def _forbid_self_approval(job: Job, actor: Actor) -> None:
    """Separation of duties: whoever submitted a job (person or agent identity) cannot approve it."""
    if job.is_submitted_by(actor):
        raise PolicyRefused(
            "self_approval_forbidden",
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
) -> Job:
    """Record an approval. The status is unchanged; a resume then checks for it.
    ``allow_self_approval`` is set by the approvals flow when the policy turns separation of
    duties off (``forbid_self_approval: false``)."""
    actor.require(Scope.APPROVE)
    reason = _reason(reason)
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        _require_status(job, "approve")
        if not allow_self_approval:
            _forbid_self_approval(job, actor)
        needing, approvals = _approval_window(job)
        if any(a.revision > needing for a in approvals) and not _decided_request:
            raise Conflict(
                "already_approved",
                f"job {job_id} already has an approval for its current decision",
                details={"job_id": job_id},
                hint="resume the job, or wait for a new decision point",
            )
        payload: dict[str, Any] = {"reason": reason}
        if _decided_request:
            payload["approval_request"] = _decided_request
        event_append(
            job, type="approved", actor=actor.name, reason_code="approval_recorded", payload=payload
        )
    return job


def job_reject(
    *,
    actor: Actor,
    job_id: str,
    reason: str = "",
    allow_self_approval: bool = False,
    _decided_request: str = "",
) -> Job:
    actor.require(Scope.APPROVE)
    reason = text_field(reason, "reason", max_len=1024, required=True, code="reason_too_long")
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        _require_status(job, "reject")
        if not allow_self_approval:
            _forbid_self_approval(job, actor)
        job.status = S.BLOCKED
        job.status_reason_code = "approval_rejected"
        payload: dict[str, Any] = {"reason": reason}
        if _decided_request:
            payload["approval_request"] = _decided_request
        event_append(
            job,
            type="rejected",
            actor=actor.name,
            reason_code="approval_rejected",
            payload=payload,
            update_fields=["status", "status_reason_code"],
        )
    return job


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
    from approvals.models import ApprovalRequest, ApprovalStatus

    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        # (1) status
        _require_status(job, "resume")
        # (2) approvals
        needing, approvals = _approval_window(job)
        if needing and not any(a.revision > needing for a in approvals):
            raise PolicyRefused(
                "approval_required",
                f"job {job_id} needs an approval recorded after its last decision point",
                details={"job_id": job_id, "decision_revision": needing},
                hint="gait job approve --id JOB --actor REVIEWER --reason …",
                exit_code=4,
            )
        pending = list(
            ApprovalRequest.objects.filter(job=job, status=ApprovalStatus.PENDING).values_list(
                "request_id", flat=True
            )
        )
        if pending:
            raise PolicyRefused(
                "approval_required",
                f"job {job_id} has pending approval requests",
                details={"job_id": job_id, "pending_requests": pending},
                exit_code=4,
            )
        if job.status == S.EMERGENCY_STOPPED:
            after_stop = [a for a in approvals if a.revision > needing]
            if after_stop and all(a.actor == job.stopped_by for a in after_stop):
                raise PolicyRefused(
                    "approval_required",
                    "the actor who stopped the job cannot be the only approver of its resume",
                    details={"job_id": job_id, "stopped_by": job.stopped_by},
                    exit_code=4,
                )
        # (3) policy: the identity's assigned policy first (approvals.assignments), then the
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
            if current is None and job.policy is not None:
                current = _policy_current(job.policy)
            if current is None:
                raise PolicyRefused(
                    "policy_evaluation_required",
                    f"job {job_id} is bound to policy {job.policy_ref or job.policy_digest[:12]}; resume must re-evaluate it",
                    details={"job_id": job_id, "policy_digest": job.policy_digest},
                    hint="pass --policy FILE",
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
                "identity_binding_mismatch",
                f"job {job_id} is bound to identity {job.identity!r}, not {asserted!r}",
                details={"job_id": job_id, "bound_identity": job.identity, "identity": asserted},
            )
        from approvals.services import identity_is_revoked

        listed = set(revoked_identities)
        for who in sorted({w for w in (job.identity, asserted) if w}):
            if who in listed or identity_is_revoked(who):
                raise PolicyRefused(
                    "identity_revoked", f"identity {who!r} is revoked", details={"identity": who}
                )
        # (5) environment fingerprint
        env_now = environment_fingerprint or environment_fingerprint_current()
        override = False
        if job.environment_fingerprint and env_now != job.environment_fingerprint:
            if not allow_env_mismatch:
                raise PolicyRefused(
                    "environment_fingerprint_mismatch",
                    "the environment differs from the one the job was submitted in",
                    details={
                        "job_id": job_id,
                        "expected": job.environment_fingerprint,
                        "actual": env_now,
                    },
                    hint="pass --allow-env-mismatch to resume anyway",
                )
            override = True

        reason_code = (
            "resumed"
            + ("_with_env_override" if override else "")
            + ("_policy_transition" if transition else "")
        )
        fields = ["status", "status_reason_code", "stop_reason"]
        payload: dict[str, Any] = {"reason": reason, "previous_status": job.status}
        if rebind is not None:
            fields += _policy_rebind(job, rebind, assignment_source, payload)
        if override:
            payload["environment_fingerprint_before"] = job.environment_fingerprint
            payload["environment_fingerprint"] = env_now
            job.environment_fingerprint = env_now
            fields.append("environment_fingerprint")
        runnable = job.step_count > 0 and job.cursor < job.step_count
        job.status = S.QUEUED if runnable else S.RUNNING
        job.status_reason_code = reason_code
        job.stop_reason = ""
        event_append(
            job,
            type="resumed",
            actor=actor.name,
            reason_code=reason_code,
            payload=payload,
            update_fields=fields,
        )
        if runnable:
            job_wake(job.job_id)
    return job


def _policy_current(version: PolicyVersion) -> PolicyBinding | None:
    current = version.policy.current
    if current is None:
        return None
    return PolicyBinding(
        digest=current.digest, ref=f"policy:{version.policy.name}", version=current
    )


def job_cancel(*, actor: Actor, job_id: str, reason: str = "") -> Job:
    actor.require(Scope.CONTROL)
    reason = _reason(reason)
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        _require_status(job, "cancel")
        if job.status == S.QUEUED and job.started_at is None:
            code = "job_cancelled_before_start"
        elif job.status in (S.RUNNING, S.WAITING):
            code = "job_cancelled_during_run"
        else:
            code = "cancelled"
        previous = job.status
        job.status = S.CANCELLED
        job.status_reason_code = code
        job.stop_reason = reason or f"cancelled by {actor.name}"
        job.finished_at = timezone.now()
        job.wake_at = None
        event_append(
            job,
            type="cancelled",
            actor=actor.name,
            reason_code=code,
            payload={"reason": reason, "previous_status": previous},
            update_fields=["status", "status_reason_code", "stop_reason", "finished_at", "wake_at"],
        )
    return job


def job_retry(*, actor: Actor, job_id: str, reason: str = "") -> Job:
    """Operator retry: back to queued at the failed step; completed steps keep their outputs."""
    actor.require(Scope.CONTROL)
    reason = _reason(reason)
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        if not job.can("retry"):
            raise Conflict(
                "invalid_transition",
                f"cannot retry a job that is {job.status}"
                + (
                    ""
                    if job.step_count
                    else " (only jobs with steps run by gaitweb can be retried)"
                ),
                details={
                    "job_id": job_id,
                    "status": job.status,
                    "allowed_from": sorted(ALLOWED_FROM["retry"]),
                },
            )
        previous = job.status
        fields = ["status", "status_reason_code", "stop_reason", "finished_at", "wake_at"]
        payload: dict[str, Any] = {
            "reason": reason,
            "previous_status": previous,
            "resume_at_step": job.cursor,
        }
        # an assignment made since the job was bound applies from the retry on
        rebind, assignment_source = _policy_reassigned(job, None)
        if rebind is not None:
            fields += _policy_rebind(job, rebind, assignment_source, payload)
        job.status = S.QUEUED
        job.status_reason_code = "job_retried"
        job.stop_reason = ""
        job.finished_at = None
        job.wake_at = None
        event_append(
            job,
            type="retried",
            actor=actor.name,
            reason_code="job_retried",
            payload=payload,
            update_fields=fields,
        )
        job_wake(job.job_id)
    return job


# --- read side ---------------------------------------------------------------------------------


def job_verify_chain(*, actor: Actor | None, job_id: str) -> ChainReport:
    return chain_verify(job_get(actor=actor, job_id=job_id))


def job_inspect(*, actor: Actor | None, job_id: str, events_limit: int = 50) -> dict[str, Any]:
    """Everything an operator looks at first: the job, its checkpoints, its latest events and
    whether its journal verifies."""
    from gaitweb.canonical import iso_utc
    from jobs.selectors import checkpoint_list, job_snapshot

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
