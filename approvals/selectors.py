"""The read side of what reviewers decide — approval requests and decision-needed checkpoints —
scoped by the ``Actor`` like jobs (jobs/selectors.py).

A request belongs to its job's identity. An identity-bound actor sees its own jobs' requests
only; another identity's request is ``approval_not_found``, as if it did not exist. Deciding
another identity's job is what reviewers do, so reviewer keys need ``cross_identity``
(the dashboard's reviewer role has it; docs/security.md).
"""

from __future__ import annotations

from django.db.models import Exists, F, JSONField, OuterRef, QuerySet, Subquery

from approvals.models import ApprovalRequest, ApprovalStatus
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.errors import NotFound
from gaitweb.lib.validation import text_field
from jobs.models import FINISHED_STATUSES, Checkpoint, CheckpointType, JobEvent, JobStatus
from jobs.selectors import identity_scoped, job_get


def approvals_visible(actor: Actor | None) -> QuerySet[ApprovalRequest]:
    return identity_scoped(ApprovalRequest.objects.all(), actor, "job__identity")


def approval_get(*, actor: Actor | None, request_id: str) -> ApprovalRequest:
    """The request if ``actor`` may see it, else ``approval_not_found``."""
    request_id = text_field(request_id, "request_id", max_len=64, required=True)
    found = approvals_visible(actor).select_related("job").filter(request_id=request_id).first()
    if found is None:
        raise NotFound(
            reasons.APPROVAL_NOT_FOUND,
            f"no approval request {request_id!r}",
            details={"request_id": request_id},
        )
    return found


def approval_pending_list(*, actor: Actor, job_id: str | None = None) -> QuerySet[ApprovalRequest]:
    """The reviewers' queue: pending requests ``actor`` may see, oldest expiry first, then
    newest. Requests of jobs that are finished (completed, cancelled, failed) are left out:
    nothing can be approved there any more (job_approve refuses those states). A ``job_id``
    the actor cannot see gives an empty queue, exactly as an unknown one does."""
    actor.require(Scope.READ)
    qs = (
        approvals_visible(actor)
        .filter(status=ApprovalStatus.PENDING)
        .exclude(job__status__in=FINISHED_STATUSES)
        .select_related("job")
        .prefetch_related("decisions")
        .order_by(F("expires_at").asc(nulls_last=True), "-created_at")
    )
    if job_id:
        qs = qs.filter(job__job_id=job_id)
    return qs


def approval_pending_count(*, actor: Actor) -> int:
    """Pending requests ``actor`` may see, of jobs that are not finished (the queue's own
    rule): one indexed COUNT (``approval_pending_expiry`` / ``approval_status_created``)."""
    return (
        approvals_visible(actor)
        .filter(status=ApprovalStatus.PENDING)
        .exclude(job__status__in=FINISHED_STATUSES)
        .count()
    )


def _open_questions(actor: Actor | None) -> QuerySet[Checkpoint]:
    """Resume check 2's rule (jobs.selectors.job_decision_point) as one query over the few jobs
    in ``decision_needed``: their newest decision-needed checkpoint, with no approval recorded
    after it and no pending approval request on the job (then the request is the decision)."""
    newer = Checkpoint.objects.filter(
        job=OuterRef("job"), type=CheckpointType.DECISION_NEEDED, id__gt=OuterRef("id")
    )
    approved_after = JobEvent.objects.filter(
        job=OuterRef("job"), type="approved", revision__gt=OuterRef("event_revision")
    )
    request_open = ApprovalRequest.objects.filter(
        job=OuterRef("job"), status=ApprovalStatus.PENDING
    )
    return (
        identity_scoped(Checkpoint.objects.all(), actor, "job__identity")
        .filter(type=CheckpointType.DECISION_NEEDED, job__status=JobStatus.DECISION_NEEDED)
        .filter(~Exists(newer), ~Exists(approved_after), ~Exists(request_open))
    )


def decision_checkpoints_pending(
    *, actor: Actor, job_id: str | None = None
) -> QuerySet[Checkpoint]:
    """The decision-needed checkpoints a reviewer must answer, newest first — including the
    engine's in-doubt "step X may have run; re-run?". Each row carries its job and its event's
    payload (``event_payload``: the step and attempt of an in-doubt question) from the same
    query, so a queue of any length costs one query. A job whose pending approval request is
    the decision is left out: the request's card shows the job's last checkpoint."""
    actor.require(Scope.READ)
    qs = _open_questions(actor)
    if job_id:
        qs = qs.filter(job__job_id=job_id)
    event_payload = JobEvent.objects.filter(
        job=OuterRef("job"), revision=OuterRef("event_revision")
    ).values("payload")[:1]
    return (
        qs.select_related("job")
        .annotate(event_payload=Subquery(event_payload, output_field=JSONField()))
        .order_by("-created_at", "-id")
    )


def decision_pending_count(*, actor: Actor) -> int:
    """The dashboard header's count: everything a reviewer must decide that ``actor`` may see
    (pending requests and unanswered decision-needed checkpoints), in one query (a COUNT over
    ``UNION ALL`` of the two)."""
    requests = (
        approvals_visible(actor)
        .filter(status=ApprovalStatus.PENDING)
        .exclude(job__status__in=FINISHED_STATUSES)
        .order_by()
        .values_list("pk")
    )
    questions = _open_questions(actor).order_by().values_list("pk")
    return requests.union(questions, all=True).count()


def approval_list(*, actor: Actor, job_id: str | None = None) -> QuerySet[ApprovalRequest]:
    """Every request of the jobs ``actor`` may see (of one job with ``job_id``: a job it
    cannot see is ``job_not_found``), newest first."""
    actor.require(Scope.READ)
    qs = approvals_visible(actor).select_related("job").prefetch_related("decisions")
    if job_id:
        qs = qs.filter(job=job_get(actor=actor, job_id=job_id))
    return qs.order_by("-created_at", "-id")
