"""Dashboard pages for jobs: the list, the detail page, the lifecycle actions, run a job and
building a pack (the download link is packs.views.pack_download).

One view serves a page and its fragments (``jobs/list.html#rows``, ``jobs/detail.html#live``)
when the request comes from htmx. Polls carry a fingerprint of what the client shows and get
204 when it is unchanged, so an idle dashboard costs one small indexed query per poll.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from base64 import urlsafe_b64decode, urlsafe_b64encode
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.db import connection
from django.db.models.expressions import RawSQL
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from approvals.identities import deployment_gate_status
from approvals.policies import policy_list
from approvals.queue import decision_cards
from approvals.services import job_decide
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
from jobs import services
from jobs.durable import workflow_parked, workflow_timeline
from jobs.journal import chain_check, event_records
from jobs.models import Job, JobEvent, JobStatus, StepRun
from jobs.models import StepRunStatus as R
from jobs.recurring import template_may_change, template_run_now
from jobs.selectors import (
    JobFilter,
    job_counts,
    job_decision_point,
    job_filter,
    job_get,
    job_list,
    jobs_visible,
    template_list,
)
from jobs.spec import PARKING_KINDS, spec_load, spec_validate, step_gate_tool
from packs.models import Pack
from packs.services import pack_build

S = JobStatus
PAGE_SIZE = 50
TIMELINE_SIZE = 50
COUNTS_TTL_SECONDS = 10.0
CHAIN_FULL_SECONDS = 300.0
LIST_FIELDS = (
    "id", "job_id", "status", "status_reason_code", "identity", "cursor", "step_count",
    "checkpoint_count", "revision", "created_at", "created_by", "stop_reason", "policy_id",
)  # fmt: skip


def job_actions(job: Job, actor: Actor, *, open_cards: int = 0) -> dict[str, bool]:
    """The actions to offer: the transition is allowed from the job's status and the user has
    the scope. The service re-checks both when the form is posted. While the job shows a
    decision card (an approval request, a question), the card is where it is decided."""
    control = actor.can(Scope.CONTROL)
    approve = actor.can(Scope.APPROVE) and not open_cards
    actions = {
        name: control and job.can(name) for name in ("pause", "stop", "resume", "retry", "cancel")
    }
    actions.update({name: approve and job.can(name) for name in ("approve", "reject")})
    return actions


def counts_context(counts: dict[str, int]) -> dict[str, Any]:
    return {
        "counts_list": [(s, s.replace("_", " "), counts.get(s, 0)) for s in S.values],
        "counts_fp": fingerprint(counts),
    }


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def htmx_poll(request: HttpRequest) -> bool:
    return bool(request.htmx) and request.method == "GET" and "fp" in request.GET


# --- status counts -----------------------------------------------------------------------------

_counts_lock = threading.Lock()
# per identity bound (None: every identity's jobs): each user's header counts what they see
_counts_memo: dict[str | None, dict[str, Any]] = {}


def status_counts(actor: Actor) -> dict[str, int]:
    """Jobs per status that ``actor`` may see (jobs.selectors.job_counts, the ``by_status`` of
    jobs.stats.job_stats), remembered for a few seconds per process and identity bound: every
    open dashboard polls, and counting 100k rows on each poll would be the dashboard's biggest
    cost. A count may lag by COUNTS_TTL_SECONDS; the rows never do."""
    now = time.monotonic()
    scope = actor.bound_identity
    with _counts_lock:
        memo = _counts_memo.get(scope)
        if memo and now - memo["at"] < COUNTS_TTL_SECONDS:
            return dict(memo["counts"])
    # jobs.stats.job_stats() computes this same GROUP BY plus seven more full counts (step runs,
    # checkpoints, the broker queue…): ~360 ms at 100k jobs. The header needs only this one.
    counts = job_counts(actor=actor)
    with _counts_lock:
        if len(_counts_memo) > 1000:
            _counts_memo.clear()
        _counts_memo[scope] = {"at": now, "counts": counts}
    return counts


def status_counts_forget() -> None:
    with _counts_lock:
        _counts_memo.clear()


# --- the jobs list ------------------------------------------------------------------------------


def _cursor_encode(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.pk}"
    return urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _cursor_decode(value: str) -> tuple[datetime, int] | None:
    try:
        raw = urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        at, pk = raw.split("|")
        return datetime.fromisoformat(at), int(pk)
    except (ValueError, UnicodeDecodeError):
        return None


def _current_step_sql() -> RawSQL:
    """The current step's name read inside the database, so the list never loads specs (each
    up to 256 KB) just to show one name."""
    if connection.vendor == "postgresql":
        return RawSQL(
            '("jobs_job"."spec" -> \'steps\' -> ("jobs_job"."cursor")::int ->> \'name\')', []
        )
    return RawSQL(
        'json_extract("jobs_job"."spec", \'$.steps[\' || "jobs_job"."cursor" || \'].name\')', []
    )


# the filters of jobs.selectors.job_filter, as the API and MCP take them (the form shows the
# first four; the others work in the URL)
FILTER_NAMES = (
    "status",
    "identity",
    "label",
    "q",
    "template_id",
    "created_after",
    "created_before",
)


def _list_filters(request: HttpRequest) -> tuple[dict[str, str], dict[str, str], JobFilter]:
    """The filters as typed (for the form and links), the refusals by field, and the parsed
    filter. A refused filter is shown next to its field and left out; the others apply."""
    raw = {k: request.GET.get(k, "").strip() for k in FILTER_NAMES}
    errors: dict[str, str] = {}
    while True:
        try:
            parsed = job_filter(**{k: v or None for k, v in raw.items()})
        except GaitError as exc:
            field = str(exc.details.get("field") or "status")
            if field not in raw or not raw[field]:
                raise
            errors[field] = f"{exc.message} ({exc.code})"
            raw[field] = ""
            continue
        return raw, errors, parsed


ROW_ACTIONS = (("pause", "Pause"), ("resume", "Resume"), ("retry", "Retry"), ("cancel", "Cancel"))


def _row(job: Job, actor: Actor) -> Job:
    # one reverse() per row: fifty rows of links and forms are most of the list's render time
    job.url = reverse("jobs-detail", args=[job.job_id])
    job.actions = job_actions(job, actor)
    job.row_actions = [(name, label) for name, label in ROW_ACTIONS if job.actions[name]]
    job.progress_pct = int(job.cursor * 100 / job.step_count) if job.step_count else 0
    job.steps_done = min(job.cursor, job.step_count)
    job.step_no = min(job.cursor + 1, job.step_count)
    job.live = not job.is_terminal
    return job


def _row_reload(job: Job, actor: Actor) -> Job:
    """One row read again after an action, the way the list reads it (with the current step's
    name), so the swapped row shows what a poll of the list would."""
    qs = jobs_visible(actor).only(*LIST_FIELDS).annotate(current_step=_current_step_sql())
    return _row(qs.get(pk=job.pk), actor)


def _list_page(request: HttpRequest, actor: Actor) -> dict[str, Any]:
    """The page's rows (not yet decorated: a poll that gets 204 never needs the links and
    actions) and its fingerprint."""
    filters, errors, parsed = _list_filters(request)
    after = _cursor_decode(request.GET.get("after", "")) if request.GET.get("after") else None
    qs = job_list(actor=actor, filters=parsed, after=after)
    qs = qs.only(*LIST_FIELDS).annotate(current_step=_current_step_sql())
    # keyset pagination: one row more than a page tells whether an older page exists, without
    # counting the table
    rows = list(qs[: PAGE_SIZE + 1])
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    set_filters = {k: v for k, v in filters.items() if v}
    query = {**set_filters, "after": request.GET["after"]} if after else set_filters
    fp = fingerprint([(j.job_id, j.revision, j.status) for j in rows], more)
    older = {**set_filters, "after": _cursor_encode(rows[-1])} if more else None
    return {
        "filters": filters,
        "filter_errors": errors,
        "jobs": rows,
        "older_query": older,
        "is_first_page": not after,
        "query": query,
        "fp": fp,
        "statuses": S.values,
    }


@login_required
@require_GET
def jobs_list(request: HttpRequest) -> HttpResponse:
    actor = require_read(request)
    if request.htmx and request.GET.get("fragment") == "counts":
        cctx = counts_context(status_counts(actor))
        if request.GET.get("fp") == cctx["counts_fp"]:
            return HttpResponse(status=204)
        cctx["filters"] = _list_filters(request)[0]
        return render(request, "jobs/list.html#counts", cctx)
    ctx = _list_page(request, actor)
    if htmx_poll(request) and request.GET.get("fp") == ctx["fp"]:
        return HttpResponse(status=204)
    ctx["jobs"] = [_row(j, actor) for j in ctx["jobs"]]
    if request.htmx and request.GET.get("fragment") == "rows":
        return render(request, "jobs/list.html#rows", ctx)
    counts = status_counts(actor)
    ctx.update(page_context(request, "jobs"), **counts_context(counts))
    ctx["total"] = sum(counts.values())
    ctx["gate_status"] = deployment_gate_status()
    return render(request, "jobs/list.html", ctx)


# --- job detail ---------------------------------------------------------------------------------


def _get_job_for_user(request: HttpRequest, job_id: str) -> tuple[Job, Actor]:
    actor = require_read(request)
    try:
        return job_get(actor=actor, job_id=job_id), actor
    except GaitError:  # unknown, another identity's (the same 404), or an impossible id
        raise Http404(f"no job {job_id}") from None


def _detail_fp(job: Job) -> str:
    """Changes whenever the page would: a new event, a step run's state and, while a command
    runs, its output tails (saved by the worker's heartbeat) and its elapsed time."""
    last_run = (
        StepRun.objects.filter(job=job)
        .order_by("-id")
        .values_list("id", "status", "stdout", "stderr")
        .first()
    )
    running = last_run is not None and last_run[1] == R.STARTED
    return fingerprint(
        job.revision,
        job.status,
        job.lease_token is not None,
        last_run,
        int(time.time()) if running else 0,  # the elapsed time ticks
    )


def duration(ms: int | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} min {ms % 60_000 // 1000} s"


def pretty(value: Any) -> str:
    if value in (None, "", {}, []):
        return ""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _step_state(
    job: Job, step: dict[str, Any], index: int, last: StepRun | None, now: datetime
) -> dict[str, Any]:
    """What a step is doing now, as an operator needs to see it: ``running`` (attempt N, for
    how long), ``waiting`` (a sleep or a wait parked on its ``started`` record), ``retry due``
    (at when), or how its last attempt ended. An attempt from before a resume or a retry is
    history: the step is ``next`` again, and the previous attempt is named beside it."""
    current = index == job.cursor and not job.is_terminal
    parking = step.get("kind") in PARKING_KINDS
    held = job.lease_token is not None  # a worker has the job: the current step is executing
    unfinished = last is not None and last.status != R.SUCCEEDED
    state: dict[str, Any] = {"attempt_no": None, "elapsed": "", "retry_due": None, "previous": ""}
    if last is not None and last.status == R.STARTED:
        state["status"] = "waiting" if parking else "running"
        state["attempt_no"] = last.attempt
        state["elapsed"] = duration(int((now - last.started_at).total_seconds() * 1000))
    elif current and held and not parking:
        # an idempotent python or http step records nothing until it ends
        state["status"] = "running"
        state["attempt_no"] = last.attempt + 1 if last is not None and unfinished else 1
    elif current and unfinished and job.status == S.WAITING and job.wake_at is not None:
        assert last is not None
        state["status"] = "retry due"
        state["attempt_no"] = last.attempt + 1
        state["retry_due"] = job.wake_at
        state["previous"] = f"attempt {last.attempt} {last.status}"
    elif current and unfinished and job.status in (S.QUEUED, S.RUNNING):
        assert last is not None
        state["status"] = "pending"
        state["previous"] = f"attempt {last.attempt} {last.status}"
    elif last is not None:
        state["status"] = last.status
    elif index < job.cursor:
        state["status"] = "succeeded"
    else:
        state["status"] = "pending"
    state["badge"] = {"retry due": "waiting"}.get(state["status"], state["status"])
    return state


def _steps(job: Job) -> list[dict[str, Any]]:
    runs: dict[int, list[StepRun]] = {}
    for run in StepRun.objects.filter(job=job).order_by("step_index", "attempt"):
        runs.setdefault(run.step_index, []).append(run)
    now = timezone.now()
    out = []
    for i, step in enumerate(job.steps):
        attempts = runs.get(i, [])
        last = attempts[-1] if attempts else None
        state = _step_state(job, step, i, last, now)
        out.append(
            {
                "index": i,
                "number": i + 1,
                "name": step.get("name", ""),
                "kind": step.get("kind", ""),
                "tool": step.get("tool", ""),  # the caller's label
                "gate_tool": step_gate_tool(step) if step.get("kind") not in PARKING_KINDS else "",
                **state,
                "current": i == job.cursor and not job.is_terminal,
                "attempts": len(attempts),
                "duration": duration(last.duration_ms) if last and last.status != R.STARTED else "",
                "output": pretty(last.output) if last else "",
                "error": last.error if last and state["status"] != "running" else None,
                "stdout": last.stdout if last else "",
                "stderr": last.stderr if last else "",
                "worker": last.worker if last else "",
            }
        )
    return out


def _calls(job: Job) -> dict[str, Any]:
    """A workflow's (or an external agent's) durable calls: the latest ones, the current one and
    why the job is parked (jobs.durable)."""
    if not job.is_workflow and job.step_count:
        return {"calls": []}
    calls, total = workflow_timeline(job)
    for c in calls:
        c["duration"] = duration(c["duration_ms"])
        c["args_json"] = pretty(c["args"])
    current = next((c for c in reversed(calls) if c["status"] == "started"), None)
    return {
        "calls": calls,
        "calls_total": total,
        "calls_hidden": total - len(calls),
        "current_call": current,
        "parked": workflow_parked(job) if job.is_workflow or calls else "",
    }


def _timeline(job: Job, before: int | None) -> tuple[list[JobEvent], int | None]:
    qs = JobEvent.objects.filter(job=job)
    if before:
        qs = qs.filter(revision__lt=before)
    events = list(qs.order_by("-revision")[: TIMELINE_SIZE + 1])
    older = events[TIMELINE_SIZE - 1].revision if len(events) > TIMELINE_SIZE else None
    events = events[:TIMELINE_SIZE]
    now = timezone.now()
    for ev in events:
        p = ev.payload or {}
        # formatted here once: three template date filters per event were a third of the
        # render time of a 50-event timeline
        ev.iso = ev.created_at.isoformat()
        ev.stamp = ev.created_at.strftime("%Y-%m-%d %H:%M:%S")
        ev.age = timesince(ev.created_at, now, depth=1)
        ev.is_checkpoint = ev.type == "checkpoint_added"
        ev.summary = p.get("summary") or p.get("reason") or p.get("message") or ""
        ev.payload_json = pretty(p)
    return events, older


def _detail_context(request: HttpRequest, job: Job, actor: Actor) -> dict[str, Any]:
    before = request.GET.get("before", "")
    before_rev = int(before) if before.isdigit() else None
    events, older = _timeline(job, before_rev)
    pending = decision_cards(actor, job=job)
    packs = list(Pack.objects.filter(job=job).defer("data").order_by("-created_at", "-id"))
    actions = job_actions(job, actor, open_cards=len(pending))
    decision = job_decision_point(job) if actions["approve"] or actions["reject"] else None
    if decision is not None and (
        decision.approvals or (job.status == S.EMERGENCY_STOPPED and job.stopped_by == actor.name)
    ):
        # it would be refused (already_approved, stopper_sole_approver): the box says why
        actions["approve"] = False
    return {
        "job": job,
        "actions": actions,
        "decision": decision,
        "can_build_pack": actor.can(Scope.CONTROL),  # building is a write (pack_build)
        "steps": _steps(job),
        # paused, stopped or cancelled while a worker still holds the job: the step is finishing
        "finishing": job.lease_token is not None
        and job.status in (S.PAUSED, S.EMERGENCY_STOPPED, S.CANCELLED),
        **_calls(job),
        "progress_pct": int(job.cursor * 100 / job.step_count) if job.step_count else 0,
        "events": events,
        "older_before": older,
        "before": before_rev,
        "pending": pending,
        "packs": packs,
        "live": not job.is_terminal,
        "fp": _detail_fp(job),
        "chain_key": job.last_event_hash,
    }


def _render_detail(
    request: HttpRequest, job: Job, actor: Actor, *, fragment: bool, status: int = 200, **extra: Any
) -> HttpResponse:
    ctx = _detail_context(request, job, actor)
    ctx.update(extra)
    if fragment:
        ctx["nav_pending_approvals"] = nav_pending_count(actor)  # swapped out of band
        return render(request, "jobs/detail.html#live", ctx, status=status)
    ctx.update(page_context(request, "jobs"))
    ctx["gate_status"] = deployment_gate_status()
    return render(request, "jobs/detail.html", ctx, status=status)


@login_required
@require_GET
def job_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    job, actor = _get_job_for_user(request, job_id)
    if htmx_poll(request) and request.GET.get("fp") == _detail_fp(job):
        return HttpResponse(status=204)
    return _render_detail(request, job, actor, fragment=bool(request.htmx))


_chain_lock = threading.Lock()
_chain_memo: dict[int, dict[str, Any]] = {}


def _chain_extend(job: Job, memo: dict[str, Any]) -> dict[str, Any] | None:
    """Check only the events appended since the last verified head. None on any doubt; the
    caller then re-hashes the whole journal, which also names the first bad revision."""

    report = chain_check(
        job.job_id,
        event_records(job, after_revision=memo["revision"]),
        expected_head=job.last_event_hash,
        prev_hash=memo["head"],
        first_revision=memo["revision"] + 1,
    )
    if not report.ok:
        return None
    return {
        **report.as_dict(),
        "events_checked": memo["report"]["events_checked"] + report.events_checked,
    }


def chain_report(job: Job) -> dict[str, Any]:
    """The journal's verification for the badge. Re-hashing 10,000 events takes seconds, so
    each process re-hashes a job's whole journal at most every CHAIN_FULL_SECONDS and, in
    between, checks only the events appended since (a live job adds a few per poll)."""
    now = time.monotonic()
    with _chain_lock:
        memo = _chain_memo.get(job.pk)
    report = None
    if memo and memo["report"]["ok"] and now - memo["full_at"] < CHAIN_FULL_SECONDS:
        if memo["head"] == job.last_event_hash:
            return memo["report"]
        if job.revision > memo["revision"]:
            report = _chain_extend(job, memo)
    full_at = memo["full_at"] if report is not None and memo else now
    if report is None:
        # the job was read for this user through jobs.selectors (job_chain, _get_job_for_user)
        report = services.job_verify_chain(actor=None, job_id=job.job_id).as_dict()
    with _chain_lock:
        if len(_chain_memo) > 1000:
            _chain_memo.clear()
        _chain_memo[job.pk] = {
            "head": report["head_hash"],
            "revision": report["events_checked"],
            "full_at": full_at,
            "report": report,
        }
    return report


@login_required
@require_GET
def job_chain(request: HttpRequest, job_id: str) -> HttpResponse:
    """The chain-verified badge, loaded after the page so that hashing a long journal never
    holds the page up."""
    job, _ = _get_job_for_user(request, job_id)
    ctx = {"job": job, "chain": chain_report(job)}
    if request.htmx:
        return render(request, "jobs/detail.html#chain", ctx)
    ctx.update(page_context(request, "jobs"))
    return render(request, "jobs/chain.html", ctx)


# --- actions ------------------------------------------------------------------------------------

ACTION_SERVICES = {
    "pause": services.job_pause,
    "stop": services.job_stop,
    "retry": services.job_retry,
    "cancel": services.job_cancel,
}
ACTION_DONE = {
    "pause": "paused (a running step finishes first)",
    "stop": "emergency-stopped",
    "resume": "resumed",
    "retry": "queued again from the failed step",
    "cancel": "cancelled",
}
# approve and reject decide whatever the job waits on (approvals.services.job_decide: an
# approval request's N-of-M, or the job's own decision point)
DECISIONS = ("approve", "reject")


def _act(request: HttpRequest, actor: Actor, job: Job, action: str) -> tuple[Job, str]:
    """Run one action; returns the job after it and the notice that says what happened."""
    reason = request.POST.get("reason", "")
    if action in DECISIONS:
        outcome = job_decide(actor=actor, job_id=job.job_id, decision=action, reason=reason)
        return outcome.job, outcome.notice()
    if action == "resume":
        job = services.job_resume(
            actor=actor,
            job_id=job.job_id,
            reason=reason,
            # the refusal's own button ("Resume in this environment") sets it
            allow_env_mismatch=request.POST.get("allow_env_mismatch") == "on",
        )
    else:
        if action == "stop" and request.POST.get("confirm") != "emergency-stop":
            raise InvalidInput(
                reasons.CONFIRMATION_REQUIRED,
                "an emergency stop must be confirmed: tick the box that says you mean it",
            )
        job = ACTION_SERVICES[action](actor=actor, job_id=job.job_id, reason=reason)
    return job, f"Job {job.job_id} {ACTION_DONE[action]}."


@login_required
@require_POST
def job_action(request: HttpRequest, job_id: str, action: str) -> HttpResponse:
    """pause / stop / resume / retry / cancel / approve / reject, from the detail page or a row
    of the list (``from=list``). A refusal re-renders what the form came from with the reason
    code and message next to the buttons; nothing was written."""
    job, actor = _get_job_for_user(request, job_id)
    if action not in ACTION_DONE and action not in DECISIONS:
        raise Http404(f"no action {action}")
    from_list = request.POST.get("from") == "list"
    try:
        job, notice = _act(request, actor, job, action)
    except GaitError as exc:
        refusal = dashboard_refusal(exc)
        if from_list and request.htmx:
            return render(
                request,
                "jobs/list.html#row",
                {"job": _row_reload(job, actor), "row_refusal": refusal},
            )
        return _render_detail(
            request,
            job_get(actor=actor, job_id=job.job_id),
            actor,
            fragment=bool(request.htmx),
            status=200 if request.htmx else exc.http_status,
            refusal=refusal,
        )
    if request.htmx:
        if from_list:
            return render(
                request,
                "jobs/list.html#row",
                {"job": _row_reload(job, actor), "row_notice": notice},
            )
        return _render_detail(request, job, actor, fragment=True, notice=notice)
    messages.success(request, notice)
    return redirect(safe_next(request, reverse("jobs-detail", args=[job.job_id])))


@login_required
@require_POST
def job_pack_build(request: HttpRequest, job_id: str) -> HttpResponse:
    job, actor = _get_job_for_user(request, job_id)
    try:
        result = pack_build(actor=actor, job_id=job.job_id)
    except GaitError as exc:
        return _render_detail(
            request,
            job_get(actor=actor, job_id=job.job_id),
            actor,
            fragment=bool(request.htmx),
            status=200 if request.htmx else exc.http_status,
            refusal=dashboard_refusal(exc),
        )
    pack = result.pack
    notice = (
        f"Pack {pack.pack_id[:12]}… built."
        if result.created
        else f"The job is unchanged since pack {pack.pack_id[:12]}…; here it is."
    )
    if request.htmx:
        return _render_detail(
            request, job_get(actor=actor, job_id=job.job_id), actor, fragment=True, notice=notice
        )
    messages.success(request, notice)
    return redirect("jobs-detail", job.job_id)


# --- run a job ----------------------------------------------------------------------------------


def _job_templates(actor: Actor) -> list[Any]:
    """The saved job templates this user may run (jobs.recurring.template_may_change, or bound
    to no identity: then the run is theirs), enabled ones only."""

    return [
        t
        for t in template_list(actor=actor, enabled=True)
        if not t.identity or template_may_change(actor, t)
    ]


def _policies(actor: Actor) -> list[Any]:
    """The picker's policies: authored ones with a version (not the CLI's file copies)."""

    return [p for p in policy_list(actor=actor, file_copies=False) if p.current_id is not None]


def _run_template(
    request: HttpRequest, actor: Actor, form: dict[str, str], templates: list[Any]
) -> Job | None:
    """Run a saved template now (jobs.recurring.template_run_now, which obeys its overlap
    rule). None when the run is held until the template's active run finishes."""

    chosen = next((t for t in templates if t.template_id == form["template"]), None)
    if chosen is None:
        raise InvalidInput(
            reasons.TEMPLATE_NOT_FOUND,
            "choose one of the saved templates",
            details={"field": "template"},
        )
    fire = template_run_now(
        actor=actor,
        template_id=chosen.template_id,
        job_id=form["job_id"].strip() or None,
        labels=_labels_parse(form["labels"]) or None,
    )
    if fire.job_id is None:
        messages.info(
            request,
            f"Template {chosen.name} has a run in progress; this run is queued behind it ({fire.reason_code}).",
        )
        return None
    messages.success(request, f"Job {fire.job.job_id} started from template {chosen.name}.")
    return fire.job


def _labels_parse(text: str) -> dict[str, str]:
    labels = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(
                reasons.INVALID_LABELS,
                f"line {n}: write labels as key=value, one per line",
                details={"field": "labels"},
            )
        labels[key.strip()] = value.strip()
    return labels


def _leave_form(request: HttpRequest, url: str) -> HttpResponse:
    """Go to ``url`` after the form: a whole-page navigation for htmx too, since following a
    302 inside the request would swap the next page into the form."""
    if request.htmx:
        from django_htmx.http import HttpResponseClientRedirect

        return HttpResponseClientRedirect(url)
    return redirect(url)


FIELD_OF_CODE = {
    "job_exists": "job_id",
    "invalid_job_id": "job_id",
    "identity_revoked": "identity",
    "identity_too_long": "identity",
    "invalid_labels": "labels",
    "policy_not_found": "policy",
    "policy_not_allowed": "policy",
    "template_not_found": "template",
    "template_run_active": "template",
    "jobs_disabled": "template",
}


@login_required
@require_http_methods(["GET", "POST"])
def job_new(request: HttpRequest) -> HttpResponse:
    """Run a job: pick a saved template or paste a spec (YAML or JSON). Validation errors name
    the offending field (``steps[2].retry.max_attempts``) next to the spec box."""

    actor = require_read(request)
    templates = _job_templates(actor)
    policies = _policies(actor)
    ctx: dict[str, Any] = {
        "templates": templates,
        "policies": policies,
        "form": {
            "job_id": "",
            "identity": "",
            "labels": "",
            "spec": "",
            "template": "",
            "policy": "",
        },
        "errors": {},
        "can_submit": actor.can(Scope.SUBMIT),
    }
    status = 200
    if request.method == "POST":
        form = {k: request.POST.get(k, "") for k in ctx["form"]}
        ctx["form"] = form
        errors: dict[str, str] = {}
        try:
            actor.require(Scope.SUBMIT)
            if form["template"]:
                job = _run_template(request, actor, form, templates)
                if job is None:  # held behind the template's active run
                    return _leave_form(request, reverse("jobs-list"))
                return _leave_form(request, reverse("jobs-detail", args=[job.job_id]))
            if form["spec"].strip():
                spec = spec_load(form["spec"])
            else:
                raise InvalidInput(
                    reasons.SPEC_REQUIRED,
                    "paste a spec or choose a template",
                    details={"field": "spec"},
                )
            spec_validate(spec)  # fail on the spec first; job_submit validates it again
            labels = _labels_parse(form["labels"])
            binding = None
            if form["policy"]:
                # only stored policies by name: a free-text ref could name a file on the server
                chosen_policy = next((p for p in policies if p.name == form["policy"]), None)
                if chosen_policy is None:
                    raise InvalidInput(
                        reasons.POLICY_NOT_FOUND,
                        "choose one of the stored policies",
                        details={"field": "policy"},
                    )
                binding = services.PolicyBinding.of(chosen_policy.current, name=chosen_policy.name)
            job = services.job_submit(
                actor=actor,
                job_id=form["job_id"].strip() or None,
                identity=form["identity"].strip(),
                policy=binding,
                spec=spec,
                labels=labels,
            )
        except GaitError as exc:
            field = exc.details.get("field") or FIELD_OF_CODE.get(exc.code)
            if field is None and ("path" in exc.details or exc.code.startswith("spec_")):
                field = "template" if form["template"] else "spec"
            where = exc.details.get("path")
            message = exc.message
            if where and not message.startswith(str(where)):
                message = f"{where}: {message}"
            if field in ctx["form"]:
                errors[field] = f"{message} ({exc.code})"
            else:  # not about one field: say it at the top of the form
                ctx["refusal"] = dashboard_refusal(exc)
            ctx["errors"] = errors
            status = exc.http_status
        else:
            messages.success(request, f"Job {job.job_id} submitted.")
            return _leave_form(request, reverse("jobs-detail", args=[job.job_id]))
        if request.htmx:
            return render(request, "jobs/new.html#form", ctx)
    ctx.update(page_context(request, "run"))
    return render(request, "jobs/new.html", ctx, status=status)
