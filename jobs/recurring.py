"""Job templates and recurring jobs (docs/recurring.md).

A ``JobTemplate`` is a reusable job (spec, identity, policy, labels). With a ``cron`` expression
it also fires on a schedule: every fire creates an ordinary job through ``job_submit``, linked to
its template and to the previous run by a ``TemplateFire`` row.

**Exactly once.** A fire runs in one transaction that locks the template row
(``select_for_update(skip_locked=True)``: a second worker skips it instead of waiting), checks
that ``next_fire_at`` is still the slot it read, creates the job, writes the ``TemplateFire``
and advances ``next_fire_at``. The partial unique constraint ``templatefire_one_per_slot`` and
the deterministic job id (``<template>-<slot>``) back this up in the database: two clusters, or
two chains of the fire loop, can never create two runs for one slot.

**On time.** django-q2's scheduler ticks every 30 s, too coarse for "within a few seconds of
the slot". The fire loop is a task that re-enqueues itself through the delayed ORM broker
(jobs/enqueue.py) for the earliest ``next_fire_at`` (at most ``RECURRING_TICK_SECONDS`` ahead),
so it wakes at the slot with the broker's poll precision. Each link is enqueued twice (on time
and a backup) and claimed once, so a worker killed while holding a link costs seconds. One
chain runs at a time (a token in the cache, like the engine's sweep); a django-q2 Schedule
restarts the chain within a minute if it died, and creating or enabling a template kicks it.

**Continuity.** ``fresh`` runs know nothing of each other; a ``resume`` run's fire row carries
``{handle, sequence, previous_job_id, previous_status, previous_outputs}`` (the previous run's
final ``Job.outputs``). Python steps read it with ``continuity_for(ctx.job)``; agents see it in
the API's and MCP's job views.

**Overlap** (a slot comes while the previous run is still active): ``skip`` records a skipped
fire; ``queue`` holds one pending fire that starts when the previous run finishes (a second one
while one is held is skipped: a queue of one, never a backlog).

**Catch-up** (slots missed while no worker was up): the latest due slot is *on time* if it is
less than ``min(RECURRING_GRACE_SECONDS, period)`` old. Earlier due slots are never run one by
one: ``once`` covers them with one run (``trigger=catch_up`` when even the latest slot is
late), ``skip`` runs only an on-time slot and records the rest as skipped. Never a burst.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Min
from django.utils import timezone
from django.utils.text import slugify

from approvals.models import Policy
from approvals.policies import policy_binding_resolve
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.canonical import iso_utc
from gaitweb.lib.errors import Conflict, Forbidden, GaitError, InvalidInput, NotFound
from gaitweb.lib.validation import text_field
from jobs.allowlists import spec_authorize
from jobs.enqueue import CHAIN_BACKUP_SECONDS, TaskChain
from jobs.models import (
    FINISHED_STATUSES,
    FireStatus,
    FireTrigger,
    Job,
    JobTemplate,
    TemplateCatchUp,
    TemplateContinuity,
    TemplateFire,
    TemplateOverlap,
)
from jobs.selectors import job_id_check, template_fires, template_get, template_id_check
from jobs.services import PolicyBinding, job_submit, jobs_enabled_check
from jobs.services import _labels as job_labels
from jobs.spec import spec_load, spec_validate

log = logging.getLogger("gaitweb.recurring")

SCHEDULER_ACTOR = "gaitweb-scheduler"
TICK_TASK = "jobs.recurring.recurring_tick"
KICK_TASK = "jobs.recurring.recurring_kick"
SCHEDULE_NAME = "gaitweb-recurring-kick"
FIRE_LOOP = TaskChain(task=TICK_TASK, key="gaitweb:recurring", label="gaitweb recurring")

CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
NAME_MAX = 200
DESCRIPTION_MAX = 1024
# labels a fire adds to its job; a template keeps room for them under jobs.services.LABELS_MAX
FIRE_LABELS = ("gait.template", "gait.trigger")
TEMPLATE_LABELS_MAX = 30
MISSED_COUNT_CAP = 10_000


def _gait(name: str, default: Any) -> Any:
    return settings.GAIT.get(name, default)


def _grace_seconds() -> float:
    return float(_gait("RECURRING_GRACE_SECONDS", 60.0))


def _tick_seconds() -> float:
    return float(_gait("RECURRING_TICK_SECONDS", 5.0))


# --- parsing -----------------------------------------------------------------------------------


def cron_parse(expr: Any) -> str:
    """A cron expression, normalized (single spaces), or ``InvalidInput('invalid_cron')``.

    Five fields (minute hour day month weekday), the ``@daily``-style macros, or six fields
    whose last one is seconds (croniter's convention) for sub-minute schedules."""
    if expr is None:
        return ""
    if not isinstance(expr, str):
        raise InvalidInput(reasons.INVALID_CRON, "cron must be a string", details={"field": "cron"})
    text = " ".join(expr.split())
    if not text:
        return ""
    if text.startswith("@"):
        if text.lower() not in CRON_MACROS:
            raise InvalidInput(
                reasons.INVALID_CRON,
                f"unknown cron macro {text!r} (allowed: {', '.join(sorted(CRON_MACROS))})",
                details={"field": "cron"},
            )
        return text.lower()
    if len(text.split(" ")) not in (5, 6) or not croniter.is_valid(text):
        raise InvalidInput(
            reasons.INVALID_CRON,
            f"{text!r} is not a cron expression (five fields, a macro such as @daily, or six "
            "fields with seconds last)",
            details={"field": "cron"},
            hint='e.g. "0 9 * * 1-5", "@daily", "*/15 * * * *"',
        )
    return text


def timezone_parse(name: Any) -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(
            reasons.INVALID_TIMEZONE, "timezone must be an IANA name", details={"field": "timezone"}
        )
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            reasons.INVALID_TIMEZONE,
            f"unknown timezone {name!r}",
            details={"field": "timezone"},
            hint="an IANA name such as UTC or Europe/Berlin",
        ) from None


def cron_next(expr: str, tz: ZoneInfo, after: datetime) -> datetime:
    """The first slot strictly after ``after``, evaluated in ``tz`` (so ``0 9 * * *`` is 09:00
    local time on both sides of a DST change), as a UTC datetime."""
    it = croniter(expr, after.astimezone(tz))
    return it.get_next(datetime).astimezone(UTC)


def cron_latest(expr: str, tz: ZoneInfo, at: datetime) -> datetime:
    """The latest slot at or before ``at`` (UTC)."""
    it = croniter(expr, (at + timedelta(microseconds=1)).astimezone(tz))
    return it.get_prev(datetime).astimezone(UTC)


def _choice(value: Any, field: str, choices: type, code: str) -> str:
    allowed = [c for c in choices.values]  # type: ignore[attr-defined]
    if value not in allowed:
        raise InvalidInput(
            code,
            f"{field} must be one of {', '.join(allowed)}",
            details={"field": field, "allowed": allowed},
        )
    return str(value)


def _labels(labels: Any) -> dict[str, str]:
    out = job_labels(labels)
    if len(out) > TEMPLATE_LABELS_MAX:
        raise InvalidInput(
            reasons.INVALID_LABELS,
            f"a template has at most {TEMPLATE_LABELS_MAX} labels (its runs add {len(FIRE_LABELS)})",
            details={"field": "labels"},
        )
    reserved = sorted(k for k in out if k.startswith("gait."))
    if reserved:
        raise InvalidInput(
            reasons.INVALID_LABELS,
            f"label keys starting with 'gait.' are set by gaitweb: {', '.join(reserved)}",
            details={"field": "labels"},
        )
    return out


def _spec(spec: Any) -> dict[str, Any]:
    """The spec as given (validated now; each fire's ``job_submit`` normalizes it again, so a
    template picks up a later default such as STEP_TIMEOUT_DEFAULT)."""
    if spec is None or spec == {}:
        return {}
    if isinstance(spec, str | bytes):
        spec = spec_load(spec)
    spec_authorize(spec_validate(spec))
    return dict(spec)


def _policy(ref: Any) -> Any:
    """``None``/"" → no policy; otherwise a managed policy name (or ``NAME@N``/digest: the
    template then follows that policy's *current* version) or, from the CLI, a YAML file."""
    if ref in (None, ""):
        return None
    if isinstance(ref, Policy):
        return ref
    binding = policy_binding_resolve(ref=ref)
    assert binding.version is not None
    return binding.version.policy


def _jobs_enabled_check() -> None:
    jobs_enabled_check()


# --- templates ---------------------------------------------------------------------------------


def continuity_handle_new() -> str:
    """The handle a new template's ``resume`` runs share (template_create and the admin)."""
    return f"cont_{uuid.uuid4().hex}"


def template_may_change(actor: Actor, template: JobTemplate) -> bool:
    """Whether ``actor`` may change, enable, disable or run ``template``: a template belongs
    to its identity, and only that identity or an admin may use it (running it acts as that
    identity). Seeing it (``cross_identity``) is not enough. A template bound to no identity
    belongs to no one: admins change it, and anyone who sees it may run it as themselves."""
    if actor.can(Scope.ADMIN):
        return True
    return bool(template.identity) and template.identity == actor.identity


def _template_owner_check(actor: Actor, template: JobTemplate, action: str) -> None:
    if not template_may_change(actor, template):
        raise Forbidden(
            reasons.TEMPLATE_NOT_OWNER,
            f"template {template.template_id} belongs to identity {template.identity!r}: only "
            f"that identity or an admin may {action} it",
            details={"template_id": template.template_id, "identity": template.identity},
        )


def _template_identity(actor: Actor, identity: Any) -> str:
    """The identity a template is created for or moved to: an identity-bound actor's own
    (also when none is named), any for a cross-identity actor."""
    identity = text_field(identity or "", "identity", max_len=256)
    if actor.bound_identity is not None:
        identity = identity or actor.bound_identity
        actor.require_identity(identity)
    return identity


def _schedule_next(template: JobTemplate, *, now: datetime | None = None) -> None:
    """Set ``next_fire_at`` from now: the next slot if enabled with a cron, else None. Slots
    that passed while a template was disabled are not "missed": enabling starts afresh."""
    if template.enabled and template.cron:
        template.next_fire_at = cron_next(
            template.cron, timezone_parse(template.timezone), now or timezone.now()
        )
    else:
        template.next_fire_at = None


def template_create(
    *,
    actor: Actor,
    name: str,
    spec: Any = None,
    template_id: str | None = None,
    description: str = "",
    identity: str = "",
    policy: Any = None,
    labels: Any = None,
    cron: str = "",
    timezone_name: str = "UTC",
    continuity: str = TemplateContinuity.FRESH,
    overlap: str = TemplateOverlap.SKIP,
    catch_up: str = TemplateCatchUp.ONCE,
    enabled: bool = True,
) -> JobTemplate:
    """Create a template; with ``cron`` it fires from the next slot on. Everything is validated
    before anything is written (``invalid_cron``, ``invalid_timezone``, ``spec_*`` …)."""
    actor.require(Scope.CONTROL)
    name = text_field(name, "name", max_len=NAME_MAX, required=True)
    template_id = template_id_check(template_id or slugify(name)[:64] or "")
    template = JobTemplate(
        template_id=template_id,
        name=name,
        description=text_field(description, "description", max_len=DESCRIPTION_MAX),
        spec=_spec(spec),
        identity=_template_identity(actor, identity),
        policy=_policy(policy),
        labels=_labels(labels),
        cron=cron_parse(cron),
        timezone=timezone_parse(timezone_name).key,
        continuity=_choice(
            continuity, "continuity", TemplateContinuity, reasons.INVALID_CONTINUITY
        ),
        overlap=_choice(overlap, "overlap", TemplateOverlap, reasons.INVALID_OVERLAP),
        catch_up=_choice(catch_up, "catch_up", TemplateCatchUp, reasons.INVALID_CATCH_UP),
        enabled=bool(enabled),
        continuity_handle=continuity_handle_new(),
        created_by=actor.name[:256],
    )
    _schedule_next(template)
    try:
        with transaction.atomic():
            template.save(force_insert=True)
            _after_schedule_change(template)
    except IntegrityError:
        raise Conflict(
            reasons.TEMPLATE_EXISTS,
            f"a job template with id {template_id!r} already exists",
            details={"template_id": template_id},
        ) from None
    return template


# The fields template_update accepts, in form order (the admin form lists them after the id)
UPDATABLE = (
    "name",
    "description",
    "spec",
    "identity",
    "policy",
    "labels",
    "cron",
    "timezone",
    "continuity",
    "overlap",
    "catch_up",
    "enabled",
)
# Changing any of these moves next_fire_at (template_update and the admin form both reschedule)
RESCHEDULE_FIELDS = frozenset({"cron", "timezone", "enabled"})


def template_update(*, actor: Actor, template_id: str, **changes: Any) -> JobTemplate:
    """Change some fields. A new cron, timezone or enabled flag reschedules from now."""
    actor.require(Scope.CONTROL)
    unknown = sorted(set(changes).difference(UPDATABLE))
    if unknown:
        raise InvalidInput(
            reasons.UNKNOWN_FIELD,
            f"cannot update {', '.join(unknown)}",
            details={"field": unknown[0], "fields": unknown, "allowed": sorted(UPDATABLE)},
        )
    parsed: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "name":
            parsed[key] = text_field(value, "name", max_len=NAME_MAX, required=True)
        elif key == "description":
            parsed[key] = text_field(value, "description", max_len=DESCRIPTION_MAX)
        elif key == "spec":
            parsed[key] = _spec(value)
        elif key == "identity":
            parsed[key] = _template_identity(actor, value)
        elif key == "policy":
            parsed[key] = _policy(value)
        elif key == "labels":
            parsed[key] = _labels(value)
        elif key == "cron":
            parsed[key] = cron_parse(value)
        elif key == "timezone":
            parsed[key] = timezone_parse(value).key
        elif key == "continuity":
            parsed[key] = _choice(value, key, TemplateContinuity, reasons.INVALID_CONTINUITY)
        elif key == "overlap":
            parsed[key] = _choice(value, key, TemplateOverlap, reasons.INVALID_OVERLAP)
        elif key == "catch_up":
            parsed[key] = _choice(value, key, TemplateCatchUp, reasons.INVALID_CATCH_UP)
        elif key == "enabled":
            if not isinstance(value, bool):
                raise InvalidInput(reasons.INVALID_FIELD, "enabled must be true or false")
            parsed[key] = value
    with transaction.atomic():
        template = template_get(actor=actor, template_id=template_id, for_update=True)
        _template_owner_check(actor, template, "change")
        reschedule = any(
            k in parsed and parsed[k] != getattr(template, k) for k in RESCHEDULE_FIELDS
        )
        for key, value in parsed.items():
            setattr(template, key, value)
        if reschedule:
            _schedule_next(template)
        template.save()
        if reschedule:
            _after_schedule_change(template)
    return template


def template_enable(*, actor: Actor, template_id: str) -> JobTemplate:
    return template_update(actor=actor, template_id=template_id, enabled=True)


def template_disable(*, actor: Actor, template_id: str) -> JobTemplate:
    return template_update(actor=actor, template_id=template_id, enabled=False)


def _after_schedule_change(template: JobTemplate) -> None:
    """After the commit: make sure the fire loop runs and will wake for this template's slot."""
    if template.next_fire_at is None:
        return
    at = template.next_fire_at

    def kick() -> None:
        try:
            recurring_schedule_ensure()
            recurring_kick()
            FIRE_LOOP.link_enqueue("", 0, at=at)  # a one-shot tick at the slot: on time even if the
            # running chain sleeps longer (it wakes at most RECURRING_TICK_SECONDS apart)
        except Exception:  # the Schedule repairs the chain within a minute
            log.exception("cannot kick the recurring fire loop")

    transaction.on_commit(kick)


# --- firing ------------------------------------------------------------------------------------


def _slot_job_id(template: JobTemplate, slot: datetime) -> str:
    return f"{template.template_id}-{slot.astimezone(UTC):%Y%m%dT%H%M%S}Z"


def _previous_run(template: JobTemplate) -> Job | None:
    if template.last_job_id is None:
        return None
    return Job.objects.filter(pk=template.last_job_id).first()


def _run_active(previous: Job | None) -> bool:
    """Whether ``previous`` (the template's last run, from ``_previous_run``) is still running."""
    return previous is not None and previous.status not in FINISHED_STATUSES


def _continuity(template: JobTemplate, previous: Job | None) -> dict[str, Any]:
    if template.continuity != TemplateContinuity.RESUME:
        return {}
    return {
        "handle": template.continuity_handle,
        "sequence": template.run_count + 1,
        "previous_job_id": previous.job_id if previous else None,
        "previous_status": previous.status if previous else None,
        "previous_outputs": dict(previous.outputs or {}) if previous else {},
        "previous_finished_at": iso_utc(previous.finished_at) if previous else None,
    }


def _create_run(
    template: JobTemplate,
    fire: TemplateFire,
    *,
    previous: Job | None,
    actor: Actor,
    job_id: str,
    labels: dict[str, str] | None = None,
    raise_refusal: bool = False,
) -> None:
    """Create the job of ``fire`` (template row locked by the caller, ``previous`` its last run
    as the caller read it for the overlap check) and record it. A refusal
    (revoked identity, bad spec after a settings change, jobs switched off …) of a scheduled
    fire marks it ``failed`` with the refusal's reason code; with ``raise_refusal`` (someone
    asked for this run) the refusal is raised and nothing is saved."""
    fire.previous_job = previous
    fire.continuity = _continuity(template, previous)
    try:
        _jobs_enabled_check()
        binding = None
        policy = template.policy if template.policy_id is not None else None
        if policy is not None:
            current = policy.current
            if current is None:
                raise NotFound(
                    reasons.POLICY_NOT_FOUND,
                    f"template {template.template_id}'s policy has no current version",
                )
            binding = PolicyBinding.of(current, name=policy.name)
        with transaction.atomic():  # a savepoint: a refusal leaves nothing behind
            job = job_submit(
                actor=actor,
                job_id=job_id,
                identity=template.identity,
                policy=binding,
                spec=template.spec or None,
                labels={
                    **template.labels,
                    **(labels or {}),
                    "gait.template": template.template_id,
                    "gait.trigger": fire.trigger,
                },
            )
    except GaitError as exc:
        if raise_refusal:
            raise
        fire.status = FireStatus.FAILED
        fire.reason_code = exc.code
        fire.save()
        log.warning("template %s: fire refused: %s", template.template_id, exc.code)
        return
    fire.status = FireStatus.FIRED
    fire.job = job
    fire.save()
    template.last_job = job
    template.last_fire_at = fire.fired_at
    template.run_count += 1


def _fire_due(template: JobTemplate, now: datetime) -> str:
    """Fire the due slot(s) of a locked template; return the outcome. Advances
    ``next_fire_at`` past ``now`` whatever happens, so a slot is considered exactly once."""
    tz = timezone_parse(template.timezone)
    slot = template.next_fire_at
    assert slot is not None
    following = cron_next(template.cron, tz, slot)
    latest, missed = slot, 0
    if following <= now:
        latest = cron_latest(template.cron, tz, now)
        cursor = following
        missed = 1
        while cursor < latest and missed < MISSED_COUNT_CAP:
            cursor = cron_next(template.cron, tz, cursor)
            missed += 1
        following = cron_next(template.cron, tz, latest)
    period = (following - latest).total_seconds()
    on_time = (now - latest).total_seconds() <= min(_grace_seconds(), period)
    fire = TemplateFire(
        template=template,
        slot=latest,
        fired_at=now,
        lateness_ms=int((now - latest).total_seconds() * 1000),
        missed_slots=missed,
        actor=SCHEDULER_ACTOR,
        trigger=FireTrigger.CRON if on_time else FireTrigger.CATCH_UP,
    )
    template.next_fire_at = following
    if not on_time and template.catch_up == TemplateCatchUp.SKIP:
        fire.status, fire.reason_code = FireStatus.SKIPPED, "catch_up_skipped"
        fire.missed_slots = missed + 1
        fire.save()
    elif _run_active(previous := _previous_run(template)) or _pending(template).exists():
        _overlap(template, fire)
    else:
        _create_run(
            template,
            fire,
            previous=previous,
            actor=Actor.system(SCHEDULER_ACTOR, identity=template.identity or None),
            job_id=_slot_job_id(template, latest),
        )
    template.save(
        update_fields=["next_fire_at", "last_fire_at", "last_job", "run_count", "updated_at"]
    )
    return f"{fire.status}:{fire.reason_code}" if fire.reason_code else str(fire.status)


def _pending(template: JobTemplate) -> Any:
    # jobs.models "templatefire_pending" partial index
    return TemplateFire.objects.filter(template=template, status=FireStatus.PENDING)


def _overlap(template: JobTemplate, fire: TemplateFire) -> None:
    if template.overlap == TemplateOverlap.QUEUE and not _pending(template).exists():
        fire.status, fire.reason_code = FireStatus.PENDING, "overlap_queued"
    elif template.overlap == TemplateOverlap.QUEUE:
        fire.status, fire.reason_code = FireStatus.SKIPPED, "overlap_queue_full"
    else:
        fire.status, fire.reason_code = FireStatus.SKIPPED, "overlap_skipped"
    fire.save()


def _start_pending(template: JobTemplate, now: datetime) -> str:
    """overlap=queue: start the held fire once the previous run has finished."""
    fire = _pending(template).order_by("fired_at", "id").first()
    if fire is None:
        return ""
    previous = _previous_run(template)
    if _run_active(previous):
        return ""
    fire.fired_at = now
    fire.lateness_ms = int((now - fire.slot).total_seconds() * 1000)
    fire.reason_code = "overlap_queued"
    if fire.trigger == FireTrigger.MANUAL:
        job_id = f"{template.template_id}-m{uuid.uuid4().hex[:12]}"
    else:
        job_id = _slot_job_id(template, fire.slot)
    _create_run(
        template,
        fire,
        previous=previous,
        actor=Actor.system(fire.actor or SCHEDULER_ACTOR, identity=template.identity or None),
        job_id=job_id,
    )
    template.save(update_fields=["last_fire_at", "last_job", "run_count", "updated_at"])
    return f"started_pending:{fire.status}"


def recurring_fire_due(*, now: datetime | None = None, limit: int = 100) -> dict[str, int]:
    """Fire every due slot and start held (queued) fires whose previous run finished.

    Safe to run in any number of processes at once: each template is handled in its own
    transaction with its row locked (``skip_locked``: a contended template is someone else's
    now). ``now`` is for tests with a frozen clock; workers use the real one per template."""
    counts: Counter[str] = Counter()
    frozen = now
    moment = frozen or timezone.now()
    # jobs.models "jobtemplate_due" partial index
    due = list(
        JobTemplate.objects.filter(enabled=True, next_fire_at__lte=moment)
        .order_by("next_fire_at")
        .values_list("pk", flat=True)[:limit]
    )
    held = list(
        TemplateFire.objects.filter(status=FireStatus.PENDING, template__enabled=True)
        .order_by("template_id")
        .values_list("template_id", flat=True)
        .distinct()[:limit]
    )
    for pk, handler in [(pk, "fire") for pk in due] + [(pk, "pending") for pk in held]:
        with transaction.atomic():
            t = (
                JobTemplate.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("policy", "policy__current")
                .filter(pk=pk, enabled=True)
                .first()
            )
            at = frozen or timezone.now()
            if t is None:
                counts["contended"] += 1
                continue
            if handler == "fire":
                if t.next_fire_at is None or t.next_fire_at > at:
                    counts["already_fired"] += 1  # another worker fired it meanwhile
                    continue
                outcome = _fire_due(t, at)
            else:
                outcome = _start_pending(t, at)
            if outcome:
                counts[outcome] += 1
    return dict(counts)


def template_run_now(
    *,
    actor: Actor,
    template_id: str,
    job_id: str | None = None,
    labels: Any = None,
) -> TemplateFire:
    """Create a run of ``template_id`` now (dashboard "run now", API, CLI, MCP job_create).

    It obeys the template's overlap rule: while a run is active, ``skip`` refuses with
    ``template_run_active`` and ``queue`` holds the run (status ``pending``). A refusal from
    ``job_submit`` (``identity_revoked``, ``job_exists``, ``jobs_disabled`` …) is raised, and
    nothing is written."""
    actor.require(Scope.SUBMIT)
    extra = _labels(labels) if labels else {}
    if job_id:
        job_id_check(job_id)
    _jobs_enabled_check()
    now = timezone.now()
    with transaction.atomic():
        template = template_get(actor=actor, template_id=template_id, for_update=True)
        if template.identity:  # a run acts as the template's identity: its owner's right
            _template_owner_check(actor, template, "run")
        fire = TemplateFire(
            template=template,
            slot=now,
            fired_at=now,
            trigger=FireTrigger.MANUAL,
            actor=actor.name[:256],
        )
        previous = _previous_run(template)
        queued = _pending(template).exists()
        if _run_active(previous) or queued:
            if template.overlap == TemplateOverlap.SKIP or queued:
                raise Conflict(
                    reasons.TEMPLATE_RUN_ACTIVE,
                    f"template {template.template_id} already has an active or queued run",
                    details={
                        "template_id": template.template_id,
                        "active_job_id": previous.job_id if previous else None,
                        "overlap": template.overlap,
                    },
                    hint="wait for the run to finish, or cancel it",
                )
            fire.status, fire.reason_code = FireStatus.PENDING, "overlap_queued"
            fire.save()
            return fire
        _create_run(
            template,
            fire,
            previous=previous,
            actor=actor,
            job_id=job_id or f"{template.template_id}-m{uuid.uuid4().hex[:12]}",
            labels=extra,
            raise_refusal=True,
        )
        template.save(update_fields=["last_fire_at", "last_job", "run_count", "updated_at"])
    return fire


# --- continuity --------------------------------------------------------------------------------


def continuity_for(job: Job | str) -> dict[str, Any]:
    """What a run of a ``resume`` template received: ``{handle, sequence, previous_job_id,
    previous_status, previous_outputs, previous_finished_at}``; ``{}`` for any other job.
    Python steps call ``continuity_for(ctx.job)``."""
    if isinstance(job, str):
        qs = TemplateFire.objects.filter(job__job_id=job)
    else:
        qs = TemplateFire.objects.filter(job_id=job.pk)
    fire = qs.only("continuity").first()
    return dict(fire.continuity) if fire is not None else {}


# --- snapshots ---------------------------------------------------------------------------------


def fire_snapshot(fire: TemplateFire) -> dict[str, Any]:
    return {
        "template_id": fire.template.template_id if fire.template_id else None,
        "slot": iso_utc(fire.slot),
        "trigger": fire.trigger,
        "status": fire.status,
        "reason_code": fire.reason_code,
        "missed_slots": fire.missed_slots,
        "job_id": fire.job.job_id if fire.job_id and fire.job else None,
        "job_status": fire.job.status if fire.job_id and fire.job else None,
        "previous_job_id": fire.previous_job.job_id
        if fire.previous_job_id and fire.previous_job
        else None,
        "fired_at": iso_utc(fire.fired_at),
        "lateness_ms": fire.lateness_ms,
        "actor": fire.actor,
    }


def template_snapshot(template: JobTemplate, *, fires: int = 0) -> dict[str, Any]:
    """The template as the API, CLI and MCP show it; ``fires`` > 0 adds the recent fires."""
    out: dict[str, Any] = {
        "template_id": template.template_id,
        "name": template.name,
        "description": template.description,
        "spec": template.spec,
        "identity": template.identity,
        "policy": template.policy.name if template.policy_id and template.policy else None,
        "labels": template.labels,
        "cron": template.cron,
        "timezone": template.timezone,
        "continuity": template.continuity,
        "overlap": template.overlap,
        "catch_up": template.catch_up,
        "enabled": template.enabled,
        "next_fire_at": iso_utc(template.next_fire_at),
        "last_fire_at": iso_utc(template.last_fire_at),
        "last_job_id": template.last_job.job_id
        if template.last_job_id and template.last_job
        else None,
        "run_count": template.run_count,
        "created_by": template.created_by,
        "created_at": iso_utc(template.created_at),
        "updated_at": iso_utc(template.updated_at),
    }
    if fires:
        out["fires"] = [fire_snapshot(f) for f in template_fires(template=template, limit=fires)]
    return out


# --- the fire loop (django-q2 tasks) -----------------------------------------------------------


def _next_wake(now: datetime) -> datetime:
    """When the chain should run next: the earliest slot, at most RECURRING_TICK_SECONDS away
    (sooner while a queued fire waits for its previous run)."""
    wake = now + timedelta(seconds=_tick_seconds())
    nxt = JobTemplate.objects.filter(enabled=True).aggregate(m=Min("next_fire_at"))["m"]
    if nxt is not None:
        wake = min(wake, nxt)
    if TemplateFire.objects.filter(status=FireStatus.PENDING).exists():
        wake = min(wake, now + timedelta(seconds=1))
    return max(wake, now)


def recurring_tick(token: str = "", seq: int = 0) -> dict[str, Any]:
    """One link of the fire loop (``FIRE_LOOP``, jobs.enqueue.TaskChain).

    With a ``token`` it is the chain: it fires what is due and enqueues the next link for the
    next slot. Without a token it is a one-shot wake-up for a single slot (and checks the chain
    is alive)."""
    if token:
        skip = FIRE_LOOP.link_begin(token, seq)
        if skip:
            return {skip: True}
    else:
        try:
            recurring_kick()
        except Exception:
            log.exception("cannot check the recurring chain")
    try:
        counts = recurring_fire_due()
    finally:
        if token:
            FIRE_LOOP.link_next(token, seq, at=_next_wake(timezone.now()))
    return counts


def recurring_kick(*, force: bool = False) -> bool:
    """Start a chain unless a live one beat recently. True if one was started."""
    return FIRE_LOOP.start(stale_after=3 * _tick_seconds() + 2 * CHAIN_BACKUP_SECONDS, force=force)


def recurring_schedule_ensure() -> bool:
    """The django-q2 Schedule that restarts a dead chain (every minute). True if created."""
    from django_q.models import Schedule

    if Schedule.objects.filter(name=SCHEDULE_NAME).exists():
        return False
    _, created = Schedule.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": KICK_TASK,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    return created


def recurring_bootstrap() -> dict[str, Any]:
    """Create the Schedule and start a chain now. Idempotent (``gait templates bootstrap``)."""
    created = recurring_schedule_ensure()
    started = recurring_kick(force=True)
    return {"schedule": SCHEDULE_NAME, "created": created, "chain_started": started}
