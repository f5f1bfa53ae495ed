"""The read side of approval requests: scoped by the ``Actor`` like jobs (jobs/selectors.py).

A request belongs to its job's identity. An identity-bound actor sees its own jobs' requests
only; another identity's request is ``approval_not_found``, as if it did not exist. Deciding
another identity's job is what reviewers do, so reviewer keys need ``cross_identity``
(the dashboard's reviewer role has it; docs/security.md).
"""

from __future__ import annotations

from django.db.models import F, QuerySet

from approvals.models import ApprovalRequest, ApprovalStatus
from gaitweb.actors import Actor, Scope
from gaitweb.errors import NotFound
from gaitweb.validation import text_field
from jobs.models import FINISHED_STATUSES
from jobs.selectors import identity_scoped, job_get


def approvals_visible(actor: Actor | None) -> QuerySet[ApprovalRequest]:
    return identity_scoped(ApprovalRequest.objects.all(), actor, "job__identity")


def approval_get(*, actor: Actor | None, request_id: str) -> ApprovalRequest:
    """The request if ``actor`` may see it, else ``approval_not_found``."""
    request_id = text_field(request_id, "request_id", max_len=64, required=True)
    found = approvals_visible(actor).select_related("job").filter(request_id=request_id).first()
    if found is None:
        raise NotFound(
            "approval_not_found",
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
    """The dashboard header's count: one indexed COUNT over the pending requests the actor
    may see (``approval_pending_expiry`` / ``approval_status_created``)."""
    return approvals_visible(actor).filter(status=ApprovalStatus.PENDING).count()


def approval_list(*, actor: Actor, job_id: str | None = None) -> QuerySet[ApprovalRequest]:
    """Every request of the jobs ``actor`` may see (of one job with ``job_id``: a job it
    cannot see is ``job_not_found``), newest first."""
    actor.require(Scope.READ)
    qs = approvals_visible(actor).select_related("job").prefetch_related("decisions")
    if job_id:
        qs = qs.filter(job=job_get(actor=actor, job_id=job_id))
    return qs.order_by("-created_at", "-id")
