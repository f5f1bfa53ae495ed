"""The reviewers' approvals queue and the decide action (approvals.services.approval_decide).

The queue polls a fragment every few seconds while visible; it answers 204 when the pending
requests and their decisions are unchanged, and swaps the header's count out of band.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from approvals.selectors import approvals_visible
from approvals.services import approval_decide
from gaitweb.actors import Actor, Scope
from gaitweb.errors import GaitError
from gaitweb.views import login_required, page_context, refusal_of, require_read, safe_next
from jobs.selectors import job_get
from jobs.views import _render_detail, fingerprint, pending_approval_cards

QUEUE_SIZE = 200


def _queue_context(actor: Actor) -> dict[str, Any]:
    reqs = pending_approval_cards(actor, limit=QUEUE_SIZE)
    fp = fingerprint([(r.request_id, r.approvals_n, r.escalated, r.job.status) for r in reqs])
    return {
        "requests": reqs,
        "fp": fp,
        "can_decide": actor.can(Scope.APPROVE),
        "nav_pending_approvals": len(reqs),
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
        refusal = refusal_of(exc)
        status = 200 if request.htmx else exc.http_status
        if from_job and job_id:
            return _render_detail(
                request,
                job_get(actor=actor, job_id=job_id),
                actor,
                fragment=bool(request.htmx),
                status=status,
                refusal=refusal,
                refusal_request=request_id,
            )
        ctx = _queue_context(actor)
        # next to its card, or on top when the queue does not show it (not this user's to see)
        shown = any(r.request_id == request_id for r in ctx["requests"])
        ctx.update(refusal=refusal, refusal_request=request_id if shown else "")
        if request.htmx:
            return render(request, "approvals/queue.html#queue", ctx, status=status)
        ctx.update(page_context(request, "approvals"))
        return render(request, "approvals/queue.html", ctx, status=status)

    verb = "approved" if decision == "approve" else "rejected"
    notice = f"Request {request_id} {verb} ({outcome.approvals} of {outcome.request.required_approvals})."
    if outcome.completed:
        notice += (
            f" Job {outcome.request.job.job_id} is now {outcome.job_status.replace('_', ' ')}."
        )
    if outcome.resume_error:
        notice += f" It did not resume: {outcome.resume_error['code']} — {outcome.resume_error['message']}"
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
