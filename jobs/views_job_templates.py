"""Dashboard pages for job templates (docs/recurring.md): the list, a template's page with its latest
fires, and the Run now / Enable / Disable actions.

The services in jobs.recurring decide everything: ``template_run_now`` needs the submit scope
and obeys the overlap rule (``template_run_active``), ``template_enable``/``template_disable``
need the control scope, and all three need the template to be the user's (its identity is
theirs) or the user to be an admin (``template_not_owner``). The pages only hide the buttons a
user may not press; a refusal comes back inline with its reason code, nothing written. Like the jobs pages, one view serves a page
and its fragments (``jobs/job_templates_list.html#rows``, ``#row``; ``jobs/job_template_detail.html#live``)
and polls get 204 while nothing changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cron_descriptor import Options, get_description
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince, timeuntil
from django.views.decorators.http import require_GET, require_POST

from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.errors import GaitError, dashboard_refusal
from gaitweb.views import (
    login_required,
    nav_pending_count,
    page_context,
    require_read,
    safe_next,
)
from jobs import recurring
from jobs.models import FINISHED_STATUSES, FireStatus, JobTemplate, TemplateFire
from jobs.selectors import template_fires, template_get, template_list
from jobs.views import duration, fingerprint, htmx_poll, pretty

FIRES_SHOWN = 20  # the same window as the API's template detail

# What each rule means, next to its value: a reader should not need docs/recurring.md.
RULES = {
    "continuity": {
        "fresh": "each run starts with no prior context",
        "resume": "each run receives the previous run's final outputs and a continuity handle",
    },
    "overlap": {
        "skip": "a slot that comes while the previous run is active is skipped",
        "queue": "a slot that comes while the previous run is active waits for it (one at most)",
    },
    "catch_up": {
        "once": "slots missed while no worker was up are covered by one run",
        "skip": "slots missed while no worker was up are skipped",
    },
}
# the fire statuses drawn with the dashboard's existing badge colours (text always shown)
FIRE_BADGE: dict[str, str] = {
    FireStatus.FIRED: "st-ok",
    FireStatus.PENDING: "st-pending",
    FireStatus.SKIPPED: "st-cancelled",
    FireStatus.FAILED: "st-failed",
}
ACTIONS = {
    "run": "Run now",
    "enable": "Enable",
    "disable": "Disable",
}

# --- the schedule in words ---------------------------------------------------------------------

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_CRON_WORDS = Options()
_CRON_WORDS.use_24hour_time_format = True
_CRON_WORDS.verbose = False


def cron_in_words(expr: str) -> str:
    """The schedule in plain words, by cron-descriptor ("0 9 * * 1-5" → "At 09:00, Monday
    through Friday"); "" when it cannot say (the expression is always shown next to it)."""
    if not expr:
        return ""
    expr = MACROS.get(expr.strip(), expr)
    fields = expr.split()
    if len(fields) == 6:
        # croniter puts seconds last, cron-descriptor first
        fields = [fields[5], *fields[:5]]
    try:
        return str(get_description(" ".join(fields), _CRON_WORDS))
    except Exception:  # cron-descriptor raises its own FormatException and friends
        return ""


def _moment(at: datetime | None, tz: ZoneInfo, now: datetime) -> dict[str, Any] | None:
    """A time as the pages show it: in the template's timezone, in UTC, and relative to now."""
    if at is None:
        return None
    local = at.astimezone(tz)
    utc = at.astimezone(ZoneInfo("UTC"))
    return {
        "iso": at.isoformat(),
        "local": f"{local:%a %Y-%m-%d %H:%M:%S} {local.tzname()}",
        # "" when the template's timezone is UTC: the same time twice says nothing
        "utc": "" if tz.key in ("UTC", "Etc/UTC") else f"{utc:%Y-%m-%d %H:%M:%S} UTC",
        "relative": f"in {timeuntil(at, now, depth=2)}"
        if at > now
        else f"{timesince(at, now, depth=1)} ago",
    }


# --- shared helpers ----------------------------------------------------------------------------


def _get_template_for_user(request: HttpRequest, template_id: str) -> tuple[JobTemplate, Actor]:
    actor = require_read(request)
    try:
        return template_get(actor=actor, template_id=template_id), actor
    except GaitError:  # not found, another identity's (the same 404), or an impossible id
        raise Http404(f"no job template {template_id}") from None


def template_actions(template: JobTemplate, actor: Actor) -> dict[str, bool]:
    """The buttons to offer: what the services would let this user do. The services re-check
    the scope (and run now the overlap rule) when the form is posted."""
    mine = recurring.template_may_change(actor, template)
    control = actor.can(Scope.CONTROL) and mine
    return {
        "run": actor.can(Scope.SUBMIT) and (mine or not template.identity),
        "enable": control and not template.enabled,
        "disable": control and template.enabled,
    }


def _decorate(template: JobTemplate, actor: Actor, now: datetime) -> JobTemplate:
    tz = ZoneInfo(template.timezone)
    template.url = reverse("templates-detail", args=[template.template_id])
    template.schedule_words = cron_in_words(template.cron)
    template.next_fire = _moment(template.next_fire_at, tz, now)
    template.last_fire = _moment(template.last_fire_at, tz, now)
    template.actions = template_actions(template, actor)
    template.row_actions = [
        (name, label) for name, label in ACTIONS.items() if template.actions[name]
    ]
    last = template.last_job if template.last_job_id else None
    template.last_run = (
        {
            "job_id": last.job_id,
            "status": last.status,
            "url": reverse("jobs-detail", args=[last.job_id]),
            "active": last.status not in FINISHED_STATUSES,
        }
        if last is not None
        else None
    )
    return template


# --- the list ----------------------------------------------------------------------------------


def _list_context(actor: Actor) -> dict[str, Any]:
    now = timezone.now()
    templates = [_decorate(t, actor, now) for t in template_list(actor=actor)]
    fp = fingerprint(
        [
            (t.template_id, t.updated_at, t.last_run["status"] if t.last_run else None)
            for t in templates
        ]
    )
    return {"templates": templates, "fp": fp}


@login_required
@require_GET
def templates_list(request: HttpRequest) -> HttpResponse:
    actor = require_read(request)
    ctx = _list_context(actor)
    if htmx_poll(request) and request.GET.get("fp") == ctx["fp"]:
        return HttpResponse(status=204)
    if request.htmx and request.GET.get("fragment") == "rows":
        return render(request, "jobs/job_templates_list.html#rows", ctx)
    ctx.update(page_context(request, "templates"))
    return render(request, "jobs/job_templates_list.html", ctx)


# --- a template's page -------------------------------------------------------------------------


def _fires(template: JobTemplate, tz: ZoneInfo, now: datetime) -> list[TemplateFire]:
    fires = list(template_fires(template=template, limit=FIRES_SHOWN))
    for fire in fires:
        fire.badge = FIRE_BADGE.get(fire.status, "st-queued")
        fire.slot_at = _moment(fire.slot, tz, now)
        fire.fired = _moment(fire.fired_at, tz, now)
        fire.lateness = duration(max(fire.lateness_ms, 0))
        fire.job_url = reverse("jobs-detail", args=[fire.job.job_id]) if fire.job else ""
        fire.previous_url = (
            reverse("jobs-detail", args=[fire.previous_job.job_id]) if fire.previous_job else ""
        )
    return fires


def _detail_context(template: JobTemplate, actor: Actor) -> dict[str, Any]:
    now = timezone.now()
    tz = ZoneInfo(template.timezone)
    template = _decorate(template, actor, now)
    fires = _fires(template, tz, now)
    policy = template.policy if template.policy_id else None
    current = policy.current if policy is not None and policy.current_id else None
    steps = (template.spec or {}).get("steps") or []
    pending = any(f.status == FireStatus.PENDING for f in fires)
    return {
        "template": template,
        "actions": template.actions,
        "fires": fires,
        "spec_json": pretty(template.spec),
        "steps": steps,
        "policy": policy,
        "policy_version": current,
        "rules": {
            key: (getattr(template, key), RULES[key].get(getattr(template, key), ""))
            for key in RULES
        },
        # poll while something can change on its own: a schedule, an active or a held run
        "live": template.enabled
        or pending
        or bool(template.last_run and template.last_run["active"]),
        "fp": fingerprint(
            template.updated_at,
            template.last_run["status"] if template.last_run else None,
            [(f.pk, f.status, f.job.status if f.job else None) for f in fires],
        ),
    }


def _render_detail(
    request: HttpRequest,
    template: JobTemplate,
    actor: Actor,
    *,
    fragment: bool,
    status: int = 200,
    ctx: dict[str, Any] | None = None,
    **extra: Any,
) -> HttpResponse:
    ctx = ctx if ctx is not None else _detail_context(template, actor)
    ctx.update(extra)
    if fragment:
        ctx["nav_pending_approvals"] = nav_pending_count(
            actor
        )  # swapped out of band with the fragment
        return render(request, "jobs/job_template_detail.html#live", ctx, status=status)
    ctx.update(page_context(request, "templates"))
    return render(request, "jobs/job_template_detail.html", ctx, status=status)


@login_required
@require_GET
def template_detail(request: HttpRequest, template_id: str) -> HttpResponse:
    template, actor = _get_template_for_user(request, template_id)
    # a poll needs the whole context for its fingerprint (the fires and their jobs); a changed
    # one renders from that same context instead of reading everything again
    ctx = _detail_context(template, actor)
    if htmx_poll(request) and request.GET.get("fp") == ctx["fp"]:
        return HttpResponse(status=204)
    return _render_detail(request, template, actor, fragment=bool(request.htmx), ctx=ctx)


# --- actions -----------------------------------------------------------------------------------


def _perform(actor: Actor, template: JobTemplate, action: str) -> tuple[str, TemplateFire | None]:
    """Call the action's service; the notice to show and, for run now, the fire."""
    tid, name = template.template_id, template.name
    if action == "run":
        fire = recurring.template_run_now(actor=actor, template_id=tid)
        if fire.job is None:
            return (
                f"Template {name} has a run in progress; this run is queued behind it "
                f"({fire.reason_code}).",
                fire,
            )
        return f"Job {fire.job.job_id} started from template {name}.", fire
    if action == "enable":
        done = recurring.template_enable(actor=actor, template_id=tid)
        if done.next_fire_at is None:
            return f"Template {name} enabled; it has no schedule and runs on demand.", None
        nxt = _moment(done.next_fire_at, ZoneInfo(done.timezone), timezone.now())
        assert nxt is not None
        return f"Template {name} enabled; next run {nxt['local']} ({nxt['relative']}).", None
    recurring.template_disable(actor=actor, template_id=tid)
    return f"Template {name} disabled; it will not fire until it is enabled again.", None


@login_required
@require_POST
def template_action(request: HttpRequest, template_id: str, action: str) -> HttpResponse:
    """Run now / enable / disable, from the template's page or a row of the list
    (``from=list``). A refusal re-renders what the form came from with the reason code and
    message next to the buttons; nothing was written."""
    template, actor = _get_template_for_user(request, template_id)
    if action not in ACTIONS:
        raise Http404(f"no action {action}")
    from_list = request.POST.get("from") == "list"
    try:
        notice, fire = _perform(actor, template, action)
    except GaitError as exc:
        refusal = dashboard_refusal(exc)
        template = template_get(actor=actor, template_id=template.template_id)
        if from_list and request.htmx:
            row = _decorate(template, actor, timezone.now())
            return render(
                request, "jobs/job_templates_list.html#row", {"t": row, "row_refusal": refusal}
            )
        return _render_detail(
            request,
            template,
            actor,
            fragment=bool(request.htmx),
            status=200 if request.htmx else exc.http_status,
            refusal=refusal,
        )
    template = template_get(actor=actor, template_id=template.template_id)
    job_url = reverse("jobs-detail", args=[fire.job.job_id]) if fire and fire.job else ""
    if request.htmx:
        if from_list:
            row = _decorate(template, actor, timezone.now())
            return render(
                request,
                "jobs/job_templates_list.html#row",
                {"t": row, "row_notice": notice, "notice_url": job_url},
            )
        return _render_detail(
            request, template, actor, fragment=True, notice=notice, notice_url=job_url
        )
    messages.success(request, notice)
    return redirect(safe_next(request, reverse("templates-detail", args=[template.template_id])))
