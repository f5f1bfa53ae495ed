"""The reviewers' queue — approval requests and decision-needed checkpoints (approvals.queue) —
and its two answers: deciding a request (approvals.services.approval_decide) and answering a
checkpoint's question (approvals.services.job_decide: approve and resume, reject; or cancel).

The queue polls a fragment every few seconds while visible; it answers 204 when what waits and
its decisions are unchanged, and swaps the header's count out of band.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from approvals.queue import checkpoint_dom_id, decision_cards
from approvals.selectors import approvals_visible
from approvals.services import approval_decide, job_decide
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.errors import GaitError, InvalidInput, dashboard_refusal
from gaitweb.views import (
    login_required,
    nav_pending_count,
    page_context,
    require_read,
    safe_next,
)
from jobs import services as jobs
from jobs.selectors import job_get, jobs_visible
from jobs.views import _render_detail, fingerprint

QUEUE_SIZE = 200


def _queue_context(actor: Actor) -> dict[str, Any]:
    cards = decision_cards(actor, limit=QUEUE_SIZE)
    return {
        "cards": cards,
        "fp": fingerprint([c.fingerprint for c in cards]),
        "can_decide": actor.can(Scope.APPROVE),
        # the header counts beyond the page's QUEUE_SIZE
        "nav_pending_approvals": nav_pending_count(actor)
        if len(cards) >= QUEUE_SIZE
        else len(cards),
    }


@login_required
@require_GET
def approvals_queue(request: HttpRequest) -> HttpResponse:
    actor = require_read(request)
    ctx = _queue_context(actor)
    if request.htmx:
        if request.GET.get("fp") == ctx["fp"]:
            return HttpResponse(status=204)
        return render(request, "approvals/queue.html#queue", ctx)
    ctx.update(page_context(request, "approvals"))
    return render(request, "approvals/queue.html", ctx)


@login_required
@require_POST
def approval_decide_view(request: HttpRequest, request_id: str) -> HttpResponse:
    """Approve or reject one request. A reject needs a reason (the form marks it required; the
    service refuses an empty one). From the job page (``from=job``) the job's live fragment comes
    back; from the queue, the queue."""
    actor = require_read(request)
    decision = request.POST.get("decision", "")
    reason = request.POST.get("reason", "")
    from_job = request.POST.get("from") == "job"
    # the job page to re-render: only a request this user may see names one (no oracle)
    job_id = (
        approvals_visible(actor)
        .filter(request_id=request_id)
        .values_list("job__job_id", flat=True)
        .first()
    )
    try:
        outcome = approval_decide(
            actor=actor, request_id=request_id, decision=decision, reason=reason
        )
    except GaitError as exc:
        if from_job and job_id:
            return _job_refusal(request, actor, job_id, exc, f"req-{request_id}")
        return _queue_refusal(request, actor, exc, f"req-{request_id}")

    return _answered(request, actor, job_id or "", outcome.notice(), from_job=from_job)


def _job_refusal(
    request: HttpRequest, actor: Actor, job_id: str, exc: GaitError, dom_id: str
) -> HttpResponse:
    """The job page again (from its card) with the refusal next to the card it is about."""
    return _render_detail(
        request,
        job_get(actor=actor, job_id=job_id),
        actor,
        fragment=bool(request.htmx),
        status=200 if request.htmx else exc.http_status,
        refusal=dashboard_refusal(exc),
        refusal_card=dom_id,
    )


def _queue_refusal(request: HttpRequest, actor: Actor, exc: GaitError, dom_id: str) -> HttpResponse:
    """The queue again with the refusal next to the card it is about, or on top when the
    queue does not show that card (answered meanwhile, or not this user's to see)."""
    status = 200 if request.htmx else exc.http_status
    ctx = _queue_context(actor)
    shown = any(c.dom_id == dom_id for c in ctx["cards"])
    ctx.update(refusal=dashboard_refusal(exc), refusal_card=dom_id if shown else "")
    if request.htmx:
        return render(request, "approvals/queue.html#queue", ctx, status=status)
    ctx.update(page_context(request, "approvals"))
    return render(request, "approvals/queue.html", ctx, status=status)


def _answered(
    request: HttpRequest, actor: Actor, job_id: str, notice: str, *, from_job: bool
) -> HttpResponse:
    """After a decision: the job's live fragment (from the job page) or the queue (htmx), or a
    redirect with the notice as a flash message."""
    if request.htmx:
        if from_job:
            return _render_detail(
                request, job_get(actor=actor, job_id=job_id), actor, fragment=True, notice=notice
            )
        ctx = _queue_context(actor)
        ctx["notice"] = notice
        return render(request, "approvals/queue.html#queue", ctx)
    messages.success(request, notice)
    default = reverse("jobs-detail", args=[job_id]) if from_job else reverse("approvals-queue")
    return redirect(safe_next(request, default))


ANSWERS = ("approve", "reject", "cancel")


@login_required
@require_POST
def checkpoint_answer_view(request: HttpRequest, job_id: str, checkpoint_id: str) -> HttpResponse:
    """Answer a decision-needed checkpoint (an in-doubt step's "re-run?" among them): *approve*
    records the approval and resumes the job (the step runs again), *reject* blocks it (reason
    required), *cancel* cancels it (needs the control permission). The checkpoint id is the
    question the reviewer saw: a stale card is ``decision_not_pending``."""
    actor = require_read(request)
    answer = request.POST.get("decision", "")
    reason = request.POST.get("reason", "")
    from_job = request.POST.get("from") == "job"
    # the job page to re-render: only a job this user may see (no oracle)
    visible = jobs_visible(actor).filter(job_id=job_id).exists()
    card = checkpoint_dom_id(job_id, checkpoint_id) if visible else ""
    try:
        if answer not in ANSWERS:
            raise InvalidInput(
                reasons.INVALID_DECISION,
                "decision must be 'approve', 'reject' or 'cancel'",
                details={"field": "decision"},
            )
        if answer == "cancel":
            job = jobs.job_cancel(actor=actor, job_id=job_id, reason=reason)
            notice = f"Cancelled job {job.job_id} instead of answering {checkpoint_id}."
        else:
            outcome = job_decide(
                actor=actor,
                job_id=job_id,
                decision=answer,
                reason=reason,
                resume=answer == "approve",
                checkpoint_id=checkpoint_id,
            )
            notice = outcome.notice()
    except GaitError as exc:
        if from_job and visible:
            return _job_refusal(request, actor, job_id, exc, card)
        return _queue_refusal(request, actor, exc, card)
    return _answered(request, actor, job_id, notice, from_job=from_job)
