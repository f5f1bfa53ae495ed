"""The read side of jobs and job templates: every read of a job, its events, step runs and
checkpoints, and of a template and its fires, goes through these functions, which take the
``Actor`` and scope the queryset (docs/security.md).

An actor bound to an identity (``Actor.bound_identity``: an API key or MCP session without
``cross_identity``, a dashboard integrator) sees that identity's objects only; anything else
is ``NotFound`` with the same code and message as an object that does not exist, so a caller
cannot learn whether another identity's job exists. ``actor=None`` is the engine's and the
services' own read of a row they already authorized (or never expose): say so at the call.

The API, the dashboard, MCP and the CLI list jobs with the one ``job_list`` and the one
``JobFilter``: the same filters, the same reason codes, the same counts (``job_counts``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Count, Q, QuerySet, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce
from django.db.models.lookups import Exact
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_q.conf import Conf
from django_q.models import OrmQ

from approvals.assignments import deployment_gate_status
from gaitweb.actors import Actor, Scope
from gaitweb.canonical import iso_utc
from gaitweb.errors import InvalidInput, NotFound
from jobs.models import (
    FINISHED_STATUSES,
    JOB_ID_RE,
    Checkpoint,
    Job,
    JobEvent,
    JobStatus,
    JobTemplate,
    StepRun,
    StepRunStatus,
    TemplateFire,
)

TEMPLATE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
IDENTITY_MAX = 256
Q_MAX = 128
LABEL_FILTERS_MAX = 16
LABEL_FILTER_MAX = 400


def job_id_check(job_id: Any) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise InvalidInput("missing_job_id", "a job id is required", details={"field": "job_id"})
    if not JOB_ID_RE.match(job_id):
        raise InvalidInput(
            "invalid_job_id",
            "job ids are 1-128 characters of letters, digits and . _ : - and start with a letter or digit",
            details={"field": "job_id", "pattern": JOB_ID_RE.pattern},
        )
    return job_id


def template_id_check(template_id: Any) -> str:
    if not isinstance(template_id, str) or not TEMPLATE_ID_RE.match(template_id):
        raise InvalidInput(
            "invalid_template_id",
            "template ids are 1-64 letters, digits and . _ - starting with a letter or digit",
            details={"field": "template_id", "pattern": TEMPLATE_ID_RE.pattern},
        )
    return template_id


def identity_scoped(qs: QuerySet[Any], actor: Actor | None, field: str) -> QuerySet[Any]:
    """``qs`` narrowed to the rows ``actor`` may see; ``field`` is the lookup of the row's
    identity (``identity`` for jobs and templates, ``job__identity`` for what hangs off a job).
    The one place the identity bound is applied: every ``*_visible`` selector calls it."""
    if actor is None:
        return qs
    bound = actor.bound_identity
    if bound is None:
        return qs
    if not bound:
        return qs.none()
    return qs.filter(**{field: bound})


# --- jobs --------------------------------------------------------------------------------------


def jobs_visible(actor: Actor | None) -> QuerySet[Job]:
    """Every job ``actor`` may see (all of them for ``None`` and cross-identity actors)."""
    return identity_scoped(Job.objects.all(), actor, "identity")


def _job_not_found(job_id: str) -> NotFound:
    return NotFound("job_not_found", f"no job with id {job_id!r}", details={"job_id": job_id})


def job_get(*, actor: Actor | None, job_id: Any, for_update: bool = False) -> Job:
    """The job with this public id if ``actor`` may see it, else ``job_not_found`` (whether it
    exists or not). ``for_update`` locks the row (call inside a transaction)."""
    job_id_check(job_id)
    qs = jobs_visible(actor)
    qs = qs.select_for_update() if for_update else qs.select_related("policy")
    try:
        return qs.get(job_id=job_id)
    except Job.DoesNotExist:
        raise _job_not_found(job_id) from None


@dataclass(frozen=True)
class JobFilter:
    """The filters of every job list (API, dashboard, MCP). Build it with ``job_filter``."""

    statuses: tuple[str, ...] = ()
    identity: str = ""
    # (key, value) matches the label's text; (key, None) only needs the key
    labels: tuple[tuple[str, str | None], ...] = ()
    q: str = ""  # job id prefix
    template_id: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None

    def as_query(self) -> dict[str, Any]:
        """The filters as query parameters (the dashboard's links keep them)."""
        out: dict[str, Any] = {}
        if self.statuses:
            out["status"] = ",".join(self.statuses)
        for name in ("identity", "q", "template_id"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.labels:
            out["label"] = [k if v is None else f"{k}={v}" for k, v in self.labels]
        for name in ("created_after", "created_before"):
            if getattr(self, name) is not None:
                out[name] = iso_utc(getattr(self, name))
        return out


def _text(value: Any, field: str, max_len: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput("invalid_field", f"{field} must be a string", details={"field": field})
    value = value.strip()
    if len(value) > max_len:
        raise InvalidInput(
            f"{field}_too_long",
            f"{field} is longer than {max_len} characters",
            details={"field": field, "max_characters": max_len},
        )
    return value


def _moment(value: Any, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    parsed = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
    if parsed is None:
        raise InvalidInput(
            f"invalid_{field}",
            f"{field} must be an ISO 8601 date and time",
            details={"field": field},
        )
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


def _many(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, Mapping | bytes):
        return list(value)
    return [value]


def job_filter(
    *,
    status: Any = None,
    identity: Any = None,
    label: Any = None,
    q: Any = None,
    template_id: Any = None,
    created_after: Any = None,
    created_before: Any = None,
) -> JobFilter:
    """Parse the list filters, as strings (a query string, MCP arguments) or already typed.

    ``status``: one status or a comma-separated list (or a list); ``label``: ``key=value``
    (the label's text equals value) or ``key`` (the label is set), repeatable, all must match;
    ``q``: a job id prefix. Refusals: ``invalid_status``, ``invalid_labels``,
    ``identity_too_long``, ``q_too_long``, ``invalid_template_id``, ``invalid_created_after``,
    ``invalid_created_before``, ``invalid_field`` (not text)."""
    statuses: list[str] = []
    for item in _many(status):
        if not isinstance(item, str):
            raise InvalidInput("invalid_status", "status must be text", details={"field": "status"})
        statuses += [s.strip() for s in item.split(",") if s.strip()]
    bad = sorted(set(statuses) - set(JobStatus.values))
    if bad:
        raise InvalidInput(
            "invalid_status",
            f"unknown status: {', '.join(bad)}",
            details={"field": "status", "allowed": JobStatus.values},
        )
    labels: list[tuple[str, str | None]] = []
    items = _many(label)
    if len(items) > LABEL_FILTERS_MAX:
        raise InvalidInput(
            "invalid_labels",
            f"at most {LABEL_FILTERS_MAX} label filters",
            details={"field": "label"},
        )
    for item in items:
        if not isinstance(item, str) or not item.strip() or len(item) > LABEL_FILTER_MAX:
            raise InvalidInput(
                "invalid_labels",
                f"label filters are key=value or key, at most {LABEL_FILTER_MAX} characters",
                details={"field": "label"},
            )
        key, sep, value = item.partition("=")
        if not key.strip():
            raise InvalidInput(
                "invalid_labels",
                f"label filters are key=value or key, got {item!r}",
                details={"field": "label"},
            )
        labels.append((key.strip(), value.strip() if sep else None))
    template = _text(template_id, "template_id", 64)
    if template:
        template_id_check(template)
    return JobFilter(
        statuses=tuple(dict.fromkeys(statuses)),
        identity=_text(identity, "identity", IDENTITY_MAX),
        labels=tuple(labels),
        q=_text(q, "q", Q_MAX),
        template_id=template,
        created_after=_moment(created_after, "created_after"),
        created_before=_moment(created_before, "created_before"),
    )


def job_list(
    *,
    actor: Actor | None,
    filters: JobFilter | None = None,
    after: tuple[datetime, int] | None = None,
) -> QuerySet[Job]:
    """The jobs ``actor`` may see that match ``filters``, newest first (``created_at``, ``id``:
    index ``job_created_id``). ``after`` is a keyset position ``(created_at, id)``: only older
    jobs. Callers slice it (and may ``.only()`` / annotate it); nothing is counted."""
    if actor is not None:
        actor.require(Scope.READ)
    f = filters or JobFilter()
    qs = jobs_visible(actor)
    if f.statuses:
        qs = qs.filter(status__in=f.statuses)
    if f.identity:
        qs = qs.filter(identity=f.identity)
    for key, value in f.labels:
        # the key's text equals the value: JSON containment is PostgreSQL-only
        qs = (
            qs.filter(labels__has_key=key)
            if value is None
            else qs.filter(Exact(KeyTextTransform(key, "labels"), value))
        )
    if f.q:
        # a prefix match uses the job_id pattern index; "contains" would scan every row
        qs = qs.filter(job_id__startswith=f.q)
    if f.template_id:
        qs = qs.filter(template_fire__template__template_id=f.template_id)
    if f.created_after is not None:
        qs = qs.filter(created_at__gte=f.created_after)
    if f.created_before is not None:
        qs = qs.filter(created_at__lt=f.created_before)
    if after is not None:
        at, pk = after
        qs = qs.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=pk))
    return qs.order_by("-created_at", "-id")


def job_counts(*, actor: Actor | None) -> dict[str, int]:
    """Jobs per status that ``actor`` may see: one GROUP BY (index ``job_status_created``, or
    ``job_identity_created`` for an identity-bound actor)."""
    by_status = dict(jobs_visible(actor).order_by().values_list("status").annotate(n=Count("id")))
    return {s: int(by_status.get(s, 0)) for s in JobStatus.values}


def job_events(*, actor: Actor | None, job_id: str) -> QuerySet[JobEvent]:
    """A job's journal, oldest first."""
    job = job_get(actor=actor, job_id=job_id)
    return JobEvent.objects.filter(job=job).order_by("revision")


def job_step_runs(*, actor: Actor | None, job_id: str) -> QuerySet[StepRun]:
    """A job's step runs (one per attempt, with outputs and log tails), in the order run."""
    job = job_get(actor=actor, job_id=job_id)
    return StepRun.objects.filter(job=job).order_by("id")


def job_checkpoints(*, actor: Actor | None, job_id: str) -> QuerySet[Checkpoint]:
    job = job_get(actor=actor, job_id=job_id)
    return Checkpoint.objects.filter(job=job).order_by("id")


def checkpoint_get(*, actor: Actor | None, job_id: str, checkpoint_id: str) -> Checkpoint:
    job = job_get(actor=actor, job_id=job_id)
    try:
        return Checkpoint.objects.get(job=job, checkpoint_id=checkpoint_id)
    except Checkpoint.DoesNotExist:
        raise NotFound(
            "checkpoint_not_found",
            f"job {job_id} has no checkpoint {checkpoint_id!r}",
            details={"job_id": job_id, "checkpoint_id": checkpoint_id},
        ) from None


def checkpoint_list(*, job: Job) -> list[Checkpoint]:
    """The checkpoints of a job already read through ``job_get``."""
    return list(Checkpoint.objects.filter(job=job).order_by("checkpoint_id"))


# --- decision points ----------------------------------------------------------------------------

# Events that put a decision in front of a job, with the kind of decision: a resume needs an
# approval recorded after the newest of them (resume check 2, docs/lifecycle.md).
APPROVAL_NEEDING: Mapping[tuple[str, str], str] = {
    ("checkpoint_added", "checkpoint_decision_needed"): "checkpoint",
    ("rejected", "approval_rejected"): "rejection",
    ("emergency_stop_acknowledged", "emergency_stop_preempted"): "emergency_stop",
    ("approval_requested", "approval_requested"): "approval_request",
}


@dataclass(frozen=True)
class DecisionPoint:
    """What a job's next resume needs approved: the newest approval-needing event since the
    last resume (``event``; ``None`` when nothing needs approving) and the approvals recorded
    after it that count. While a job is emergency-stopped, its stopper's own approvals do not
    count (``stopper_approvals``): the stop is a brake only someone else may release."""

    event: JobEvent | None
    approvals: tuple[JobEvent, ...] = ()
    stopper_approvals: tuple[JobEvent, ...] = ()

    @property
    def revision(self) -> int:
        return self.event.revision if self.event is not None else 0

    @property
    def waiting(self) -> bool:
        """A decision is waiting: something needs approving and no approval that counts came."""
        return self.event is not None and not self.approvals

    @property
    def kind(self) -> str:
        """checkpoint, rejection, emergency_stop, approval_request, or "" (nothing)."""
        if self.event is None:
            return ""
        return APPROVAL_NEEDING[(self.event.type, self.event.reason_code)]

    @property
    def checkpoint_id(self) -> str:
        return str(self.payload.get("checkpoint_id") or "") if self.kind == "checkpoint" else ""

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.event.payload or {}) if self.event is not None else {}

    @property
    def question(self) -> str:
        """The decision restated for a reviewer."""
        p, who = self.payload, self.event.actor if self.event is not None else ""
        if self.kind == "emergency_stop":
            reason = f": {p['reason']}" if p.get("reason") else ""
            return f"Release the emergency stop by {who}{reason}?"
        if self.kind == "rejection":
            reason = f" ({p['reason']})" if p.get("reason") else ""
            return f"Approve the job again after {who} rejected it{reason}?"
        return str(p.get("summary") or "")

    @property
    def required_action(self) -> str:
        return str(self.payload.get("required_action") or "")


def job_decision_point(job: Job) -> DecisionPoint:
    """The job's decision point (``DecisionPoint``) for resume check 2, ``job_approve`` and the
    dashboard's decision box. Reads only the approval-needing and approval events since the
    last resume: a long run of progress checkpoints costs nothing here."""
    last_resume = Coalesce(
        Subquery(
            JobEvent.objects.filter(job=job, type="resumed")
            .order_by("-revision")
            .values("revision")[:1]
        ),
        0,
    )
    wanted = Q(type="approved")
    for type_, reason_code in APPROVAL_NEEDING:
        wanted |= Q(type=type_, reason_code=reason_code)
    since = list(
        JobEvent.objects.filter(wanted, job=job, revision__gt=last_resume)
        .order_by("revision")
        .only("revision", "type", "reason_code", "actor", "payload")
    )  # one query, the last resume found inside it
    needing = [e for e in since if e.type != "approved"]
    event = needing[-1] if needing else None
    after = [
        e for e in since if e.type == "approved" and e.revision > (event.revision if event else 0)
    ]
    stopper = job.stopped_by if job.status == JobStatus.EMERGENCY_STOPPED else ""
    return DecisionPoint(
        event=event,
        approvals=tuple(e for e in after if not stopper or e.actor != stopper),
        stopper_approvals=tuple(e for e in after if stopper and e.actor == stopper),
    )


def job_snapshot(job: Job) -> dict[str, Any]:
    """The job as the CLI's ``job`` object and the API's job resource show it."""
    return {
        "job_id": job.job_id,
        "status": job.status,
        "stop_reason": job.stop_reason,
        "status_reason_code": job.status_reason_code,
        "identity": job.identity,
        "policy_digest": job.policy_digest,
        "policy_ref": job.policy_ref,
        "environment_fingerprint": job.environment_fingerprint,
        "revision": job.revision,
        "last_event_hash": job.last_event_hash,
        "cursor": job.cursor,
        "step_count": job.step_count,
        "current_step": job.current_step_name,
        "checkpoint_count": job.checkpoint_count,
        "labels": job.labels,
        "created_by": job.created_by,
        "created_at": iso_utc(job.created_at),
        "updated_at": iso_utc(job.updated_at),
        "started_at": iso_utc(job.started_at),
        "finished_at": iso_utc(job.finished_at),
        "stopped_at": iso_utc(job.stopped_at),
        "stopped_by": job.stopped_by,
        "wake_at": iso_utc(job.wake_at),
        "deadline": iso_utc(job.deadline),
        "retry_of": job.retry_of.job_id if job.retry_of_id and job.retry_of else None,
    }


# --- job templates -------------------------------------------------------------------------------


def templates_visible(actor: Actor | None) -> QuerySet[JobTemplate]:
    return identity_scoped(JobTemplate.objects.all(), actor, "identity")


def template_get(*, actor: Actor | None, template_id: Any, for_update: bool = False) -> JobTemplate:
    """The template if ``actor`` may see it, else ``template_not_found`` (whether it exists or
    not). ``for_update`` locks the row (call inside a transaction)."""
    template_id_check(template_id)
    qs = templates_visible(actor)
    qs = (
        qs.select_for_update(of=("self",)).select_related("policy", "policy__current")
        if for_update
        else qs.select_related("policy", "last_job")
    )
    try:
        return qs.get(template_id=template_id)
    except JobTemplate.DoesNotExist:
        raise NotFound(
            "template_not_found",
            f"no job template with id {template_id!r}",
            details={"template_id": template_id},
        ) from None


def template_list(*, actor: Actor | None, enabled: bool | None = None) -> QuerySet[JobTemplate]:
    """The templates ``actor`` may see, by name."""
    if actor is not None:
        actor.require(Scope.READ)
    qs = templates_visible(actor).select_related("policy", "last_job")
    if enabled is not None:
        qs = qs.filter(enabled=enabled)
    return qs.order_by("name", "template_id")


def template_fires(*, template: JobTemplate, limit: int | None = 20) -> QuerySet[TemplateFire]:
    """The fires of a template already read through ``template_get``, newest first."""
    qs = (
        TemplateFire.objects.filter(template=template)
        .select_related("template", "job", "previous_job")
        .order_by("-fired_at", "-id")
    )
    return qs[:limit] if limit is not None else qs


# --- stats ---------------------------------------------------------------------------------------


def _step_counters(visible: Any) -> dict[str, int]:
    """Attempts of the visible jobs' steps, one aggregate: every attempt that started, those
    running now, how they ended, and how many were retries (attempt 2 or later)."""
    runs = StepRun.objects.filter(job__in=visible.order_by().values("id"))
    return runs.aggregate(
        started=Count("id"),
        running=Count("id", filter=Q(status=StepRunStatus.STARTED)),
        succeeded=Count("id", filter=Q(status=StepRunStatus.SUCCEEDED)),
        failed=Count("id", filter=Q(status__in=(StepRunStatus.FAILED, StepRunStatus.TIMED_OUT))),
        timed_out=Count("id", filter=Q(status=StepRunStatus.TIMED_OUT)),
        cancelled=Count("id", filter=Q(status=StepRunStatus.CANCELLED)),
        in_doubt=Count("id", filter=Q(status=StepRunStatus.IN_DOUBT)),
        retried=Count("id", filter=Q(attempt__gt=1)),
    )


def job_stats(*, actor: Actor | None, recent: int = 200) -> dict[str, Any]:
    """Counters in the spirit of Tau's state: totals by outcome, queue depth (runnable jobs and
    ready broker rows), running jobs, the reason codes of the most recent events, and whether
    the deployment gates its jobs (``gate``: mode ``gated`` / ``partially_gated`` /
    ``ungated``, a warning to print, and the unfinished jobs bound to no policy). Cheap enough
    to poll: one GROUP BY on jobs, a few small counts, the latest ``recent`` events.

    The job counts and reason codes are of the jobs ``actor`` may see (jobs.selectors); the
    broker's queue depth and the gate mode are the deployment's, since they name no job or
    identity."""
    visible = jobs_visible(actor)
    rows = (
        visible.order_by()
        .values("status")
        .annotate(n=Count("id"), ungated=Count("id", filter=Q(policy__isnull=True)))
    )
    by_status: dict[str, int] = {}
    ungated_active = 0
    for row in rows.values_list("status", "n", "ungated"):
        by_status[row[0]] = row[1]
        if row[0] not in FINISHED_STATUSES:
            ungated_active += row[2]
    now = timezone.now()
    created = sum(by_status.values())
    started = visible.filter(started_at__isnull=False).count()
    events = identity_scoped(JobEvent.objects.order_by("-id"), actor, "job__identity")
    reasons = Counter(events.values_list("reason_code", flat=True)[:recent])
    return {
        "created": created,
        "started": started,
        "succeeded": by_status.get(JobStatus.COMPLETED, 0),
        "failed": by_status.get(JobStatus.FAILED, 0),
        "cancelled": by_status.get(JobStatus.CANCELLED, 0),
        "running": by_status.get(JobStatus.RUNNING, 0),
        "waiting": by_status.get(JobStatus.WAITING, 0),
        "queued": by_status.get(JobStatus.QUEUED, 0),
        "decision_needed": by_status.get(JobStatus.DECISION_NEEDED, 0),
        "by_status": {k: by_status.get(k, 0) for k in JobStatus.values},
        "queue_depth": {
            "jobs_runnable": by_status.get(JobStatus.QUEUED, 0)
            + visible.filter(status=JobStatus.WAITING, wake_at__lte=now).count(),
            "broker_ready": OrmQ.objects.using(Conf.ORM).filter(lock__lte=now).count(),
            "broker_delayed_or_taken": OrmQ.objects.using(Conf.ORM).filter(lock__gt=now).count(),
        },
        "recent_reason_codes": dict(reasons.most_common()),
        "steps": _step_counters(visible),
        # "ungated" said loudly: with no policy assigned, every tool call is allowed
        "gate": {**deployment_gate_status(), "ungated_active_jobs": ungated_active},
        "at": iso_utc(now),
    }
