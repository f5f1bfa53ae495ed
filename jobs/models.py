"""Jobs, their step runs, checkpoints, and the append-only hash-chained event journal."""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from gaitweb.lib.canonical import iso_utc
from jobs.egress import host_normalize

JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SUMMARY_MAX_BYTES = 512
EXECUTABLE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    DECISION_NEEDED = "decision_needed"
    BLOCKED = "blocked"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EMERGENCY_STOPPED = "emergency_stopped"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.CANCELLED})
# failed is terminal unless an operator retries (docs/lifecycle.md)
FINISHED_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.FAILED})

# Which statuses each operator/reviewer action is allowed from (docs/lifecycle.md). jobs.services
# enforces these under a row lock; the dashboard uses Job.can() to decide which buttons to show.
_ALL = frozenset(JobStatus.values)
ALLOWED_FROM: dict[str, frozenset[str]] = {
    "pause": frozenset(
        {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.WAITING, JobStatus.DECISION_NEEDED}
    ),
    "stop": _ALL - TERMINAL_STATUSES - {JobStatus.FAILED, JobStatus.EMERGENCY_STOPPED},
    "approve": frozenset(
        {
            JobStatus.DECISION_NEEDED,
            JobStatus.PAUSED,
            JobStatus.BLOCKED,
            JobStatus.EMERGENCY_STOPPED,
        }
    ),
    "reject": frozenset({JobStatus.DECISION_NEEDED}),
    "resume": frozenset(
        {
            JobStatus.PAUSED,
            JobStatus.DECISION_NEEDED,
            JobStatus.BLOCKED,
            JobStatus.EMERGENCY_STOPPED,
        }
    ),
    "cancel": _ALL - TERMINAL_STATUSES,
    "retry": frozenset({JobStatus.FAILED, JobStatus.BLOCKED, JobStatus.CANCELLED}),
}


class Job(models.Model):
    job_id = models.CharField(max_length=128, unique=True)
    status = models.CharField(max_length=24, choices=JobStatus.choices, default=JobStatus.QUEUED)
    stop_reason = models.CharField(max_length=512, blank=True, default="")
    status_reason_code = models.CharField(max_length=64, blank=True, default="")
    identity = models.CharField(max_length=256, blank=True, default="")
    policy = models.ForeignKey(
        "approvals.PolicyVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="jobs",
        db_index=False,  # partial index below
    )
    policy_digest = models.CharField(max_length=64, blank=True, default="")
    policy_ref = models.CharField(max_length=512, blank=True, default="")
    environment_fingerprint = models.CharField(max_length=128, blank=True, default="")
    spec = models.JSONField(default=dict, blank=True)
    cursor = models.PositiveIntegerField(default=0)
    step_count = models.PositiveIntegerField(default=0)
    revision = models.PositiveIntegerField(default=0)
    last_event_hash = models.CharField(max_length=64, blank=True, default="")
    checkpoint_count = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=128, blank=True, default="")
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    wake_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    stopped_by = models.CharField(max_length=256, blank=True, default="")
    created_by = models.CharField(max_length=256, blank=True, default="")
    created_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # partial index below
    )
    labels = models.JSONField(default=dict, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
        db_index=False,  # partial index below
    )
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        db_index=False,  # partial index below
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("submit_job", "Can submit jobs"),
            ("control_job", "Can pause, stop, resume, retry and cancel jobs"),
            # gaitweb.lib.actors.Scope.CROSS_IDENTITY (docs/security.md)
            ("cross_identity", "Can see and act on every identity's jobs, templates and packs"),
        ]
        indexes = [
            # jobs list: newest first, filtered by status (jobs.selectors.job_list with job_filter)
            models.Index(fields=["status", "-created_at"], name="job_status_created"),
            models.Index(fields=["-created_at", "-id"], name="job_created_id"),
            models.Index(fields=["identity", "-created_at"], name="job_identity_created"),
            # timers: waiting jobs whose wake_at is due (jobs.engine.sweep)
            models.Index(
                fields=["wake_at"], name="job_waiting_wake", condition=Q(status="waiting")
            ),
            # crash recovery: running jobs whose lease expired (jobs.engine.sweep)
            models.Index(
                fields=["lease_expires_at"], name="job_running_lease", condition=Q(status="running")
            ),
            # The optional foreign keys are indexed only where set: most jobs have no parent,
            # no retry_of, no policy or no user, and the job row is written three times in a
            # short job's life (submit, claim, completion), each time into every index whose
            # predicate the row meets (an equality lookup or an ON DELETE still uses these).
            *(
                models.Index(
                    fields=[fk], name=f"job_{fk}_set", condition=Q(**{f"{fk}__isnull": False})
                )
                for fk in ("policy", "created_by_user", "parent", "retry_of")
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(cursor__lte=models.F("step_count")), name="job_cursor_in_range"
            ),
        ]

    def __str__(self) -> str:
        return self.job_id

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def can(self, action: str) -> bool:
        """Whether ``action`` is allowed from the current status (permissions aside)."""
        if self.status not in ALLOWED_FROM[action]:
            return False
        if action == "retry":
            # only jobs gaitweb runs can be retried, and a cancelled one only if steps are left
            return self.step_count > 0 and (
                self.status != JobStatus.CANCELLED or self.cursor < self.step_count
            )
        return True

    def is_submitted_by(self, actor: Any) -> bool:
        """Whether ``actor`` (gaitweb.lib.actors.Actor) submitted this job or runs as its identity:
        separation of duties keeps such an actor from deciding the job's approvals."""
        names = {actor.name, actor.identity} - {None, ""}
        if self.created_by in names or (self.identity and self.identity in names):
            return True
        user = getattr(actor, "user", None)
        return (
            user is not None
            and self.created_by_user_id is not None
            and self.created_by_user_id == user.pk
        )

    @property
    def steps(self) -> list[dict[str, Any]]:
        return list((self.spec or {}).get("steps", []))

    @property
    def is_workflow(self) -> bool:
        """A job whose spec is a workflow in code (jobs.durable): one step of kind workflow."""
        steps = (self.spec or {}).get("steps") or []
        return len(steps) == 1 and steps[0].get("kind") == "workflow"

    @property
    def current_step_name(self) -> str:
        steps = self.steps
        if 0 <= self.cursor < len(steps):
            return str(steps[self.cursor].get("name", ""))
        return ""


class StepRunStatus(models.TextChoices):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    IN_DOUBT = "in_doubt"


class StepRun(models.Model):
    # no index of its own: every query leads with the job, which steprun_unique_attempt serves,
    # and each index is one more write per checkpointed step
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="step_runs", db_index=False)
    step_index = models.PositiveIntegerField()
    step_name = models.CharField(max_length=128)
    attempt = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=StepRunStatus.choices)
    idempotency_key = models.CharField(max_length=300, blank=True, default="")
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    stdout = models.TextField(blank=True, default="")
    stderr = models.TextField(blank=True, default="")
    worker = models.CharField(max_length=128, blank=True, default="")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "step_index", "attempt"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "step_index", "attempt"], name="steprun_unique_attempt"
            ),
            # the durable memo: at most one succeeded run per step (jobs.engine never re-runs it)
            models.UniqueConstraint(
                fields=["job", "step_index"],
                condition=Q(status="succeeded"),
                name="steprun_one_success",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}:{self.step_name}#{self.attempt}"

    @property
    def duration_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.started_at).total_seconds() * 1000)


class CheckpointType(models.TextChoices):
    PLAN = "plan"
    PROGRESS = "progress"
    DECISION_NEEDED = "decision-needed"
    BLOCKED = "blocked"
    COMPLETED = "completed"


class Checkpoint(models.Model):
    # no index of its own: checkpoint_unique_id leads with the job
    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, related_name="checkpoints", db_index=False
    )
    checkpoint_id = models.CharField(max_length=16)
    type = models.CharField(max_length=24, choices=CheckpointType.choices)
    summary = models.CharField(max_length=512)
    required_action = models.CharField(max_length=512, blank=True, default="")
    reason_code = models.CharField(max_length=64, blank=True, default="")
    actor = models.CharField(max_length=256, blank=True, default="")
    event_revision = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "checkpoint_id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "checkpoint_id"], name="checkpoint_unique_id"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}:{self.checkpoint_id}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "type": self.type,
            "summary": self.summary,
            "required_action": self.required_action,
            "reason_code": self.reason_code,
            "actor": self.actor,
            "revision": self.event_revision,
            "created_at": iso_utc(self.created_at),
        }


class JobEvent(models.Model):
    """Append-only journal row. Never updated or deleted by the application.

    ``hash = sha256(JCS(record without hash))`` where the record is ``JobEvent.record()``;
    ``prev_hash`` is the previous event's hash (64 zeros for revision 1).
    """

    # no index of its own: jobevent_gapless_revision leads with the job (one index write less
    # per event)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events", db_index=False)
    revision = models.PositiveIntegerField()
    type = models.CharField(max_length=48)
    actor = models.CharField(max_length=256, blank=True, default="")
    reason_code = models.CharField(max_length=64, blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["job", "revision"]
        constraints = [
            models.UniqueConstraint(fields=["job", "revision"], name="jobevent_gapless_revision"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}@{self.revision}:{self.type}"

    def record(self, job_id: str) -> dict[str, Any]:
        """The hashed fields, as they appear in ``job_events.jsonl`` (without ``hash``)."""

        return {
            "job_id": job_id,
            "revision": self.revision,
            "type": self.type,
            "actor": self.actor,
            "reason_code": self.reason_code,
            "payload": self.payload,
            "created_at": iso_utc(self.created_at),
            "prev_hash": self.prev_hash,
        }


# --- job templates and recurring jobs (jobs/recurring.py) -----------------------------------


class TemplateContinuity(models.TextChoices):
    FRESH = "fresh"  # each run starts with no prior context
    RESUME = "resume"  # each run receives the previous run's final outputs and a handle


class TemplateOverlap(models.TextChoices):
    SKIP = "skip"  # a slot that comes while the previous run is active is skipped
    QUEUE = "queue"  # ... is held (at most one) and starts when the previous run finishes


class TemplateCatchUp(models.TextChoices):
    ONCE = "once"  # after downtime, the missed slots are covered by one run
    SKIP = "skip"  # after downtime, missed slots are skipped


class JobTemplate(models.Model):
    """A reusable job: spec, identity, policy and labels, optionally fired on a cron schedule.

    ``next_fire_at`` is the next slot (UTC) while the template is enabled and has a cron, else
    null. The fire loop (jobs.recurring) advances it with a compare-and-set inside the same
    transaction that records the fire, so each slot fires at most once across all workers."""

    template_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.CharField(max_length=1024, blank=True, default="")
    spec = models.JSONField(default=dict, blank=True)
    identity = models.CharField(max_length=256, blank=True, default="")
    policy = models.ForeignKey(
        "approvals.Policy",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="templates",
    )
    labels = models.JSONField(default=dict, blank=True)
    cron = models.CharField(max_length=128, blank=True, default="")
    timezone = models.CharField(max_length=64, default="UTC")
    continuity = models.CharField(
        max_length=8, choices=TemplateContinuity.choices, default=TemplateContinuity.FRESH
    )
    continuity_handle = models.CharField(max_length=64, blank=True, default="")
    overlap = models.CharField(
        max_length=8, choices=TemplateOverlap.choices, default=TemplateOverlap.SKIP
    )
    catch_up = models.CharField(
        max_length=8, choices=TemplateCatchUp.choices, default=TemplateCatchUp.ONCE
    )
    enabled = models.BooleanField(default=True)
    next_fire_at = models.DateTimeField(null=True, blank=True)
    last_fire_at = models.DateTimeField(null=True, blank=True)
    last_job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    run_count = models.PositiveIntegerField(default=0)
    created_by = models.CharField(max_length=256, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "template_id"]
        indexes = [
            # the fire loop's query: enabled templates whose slot is due (jobs.recurring)
            models.Index(
                fields=["next_fire_at"], name="jobtemplate_due", condition=Q(enabled=True)
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(continuity__in=["fresh", "resume"]), name="jobtemplate_continuity_valid"
            ),
            models.CheckConstraint(
                condition=Q(overlap__in=["skip", "queue"]), name="jobtemplate_overlap_valid"
            ),
            models.CheckConstraint(
                condition=Q(catch_up__in=["once", "skip"]), name="jobtemplate_catch_up_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.template_id


class FireTrigger(models.TextChoices):
    CRON = "cron"  # an on-time slot
    CATCH_UP = "catch_up"  # one run covering slots missed while no worker was up
    MANUAL = "manual"  # run now (API, CLI, dashboard, MCP job_create)


class FireStatus(models.TextChoices):
    FIRED = "fired"  # a job was created
    PENDING = "pending"  # overlap=queue: waits for the previous run to finish
    SKIPPED = "skipped"  # nothing created; reason_code says why
    FAILED = "failed"  # the job could not be created; reason_code is the refusal's code


class TemplateFire(models.Model):
    """One fire of a template: the bookkeeping row of a slot, written in the same transaction
    as the job it created (or the reason it created none). The partial unique constraint on
    (template, slot) for scheduled fires is the database's guarantee of exactly-once."""

    template = models.ForeignKey(JobTemplate, on_delete=models.CASCADE, related_name="fires")
    slot = models.DateTimeField()
    trigger = models.CharField(max_length=12, choices=FireTrigger.choices)
    status = models.CharField(max_length=12, choices=FireStatus.choices)
    reason_code = models.CharField(max_length=64, blank=True, default="")
    missed_slots = models.PositiveIntegerField(default=0)
    job = models.OneToOneField(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="template_fire"
    )
    previous_job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # resume continuity: {handle, sequence, previous_job_id, previous_status, previous_outputs}
    continuity = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=256, blank=True, default="")
    fired_at = models.DateTimeField()
    lateness_ms = models.IntegerField(default=0)

    class Meta:
        ordering = ["template", "-slot", "-id"]
        indexes = [
            models.Index(fields=["template", "-fired_at"], name="templatefire_recent"),
            # overlap=queue: held fires waiting for their previous run (jobs.recurring)
            models.Index(
                fields=["template"], name="templatefire_pending", condition=Q(status="pending")
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["template", "slot"],
                condition=Q(trigger__in=["cron", "catch_up"]),
                name="templatefire_one_per_slot",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.template_id}@{self.slot:%Y-%m-%dT%H:%M:%S}"


# --- what steps may touch (docs/security.md, "Steps that touch the machine are opt-in") -------


class AllowedExecutable(models.Model):
    """An executable ``command`` steps may run, managed by admins in Django admin.

    ``name`` is what a spec's ``argv[0]`` says (``git``); ``path`` is the absolute file the
    worker runs for it (``/usr/bin/git``), never a lookup in ``PATH`` or the working directory.
    A spec may also name the absolute ``path`` itself (jobs.allowlists)."""

    name = models.CharField(max_length=128, unique=True)
    path = models.CharField(
        max_length=1024,
        blank=True,
        help_text="absolute path the worker runs; leave empty to look the name up on "
        "GAIT_COMMAND_PATH now",
    )
    note = models.CharField(max_length=512, blank=True, default="")
    created_by = models.CharField(max_length=256, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "allowed executable"
        constraints = [
            models.CheckConstraint(
                condition=Q(path__startswith="/"), name="allowedexecutable_absolute_path"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} → {self.path}"

    def clean(self) -> None:
        if not EXECUTABLE_NAME_RE.match(self.name or ""):
            raise ValidationError(
                {"name": "a bare command name (letters, digits and . _ + -), no slash"}
            )
        if not self.path:
            # resolved once, here, on the commands' own PATH (GAIT_COMMAND_PATH): the worker
            # runs this file and never searches for the name again
            found = shutil.which(self.name, path=str(settings.GAIT["COMMAND_PATH"]))  # type: ignore[index]
            if found is None:
                raise ValidationError({"path": f"{self.name!r} is not on GAIT_COMMAND_PATH"})
            self.path = found
        if "\x00" in self.path or not os.path.isabs(self.path):
            raise ValidationError({"path": "must be an absolute path"})
        if os.path.normpath(self.path) != self.path:
            raise ValidationError({"path": f"must be normalized ({os.path.normpath(self.path)})"})


class AllowedHttpHost(models.Model):
    """A host ``http`` steps may reach although it resolves to a loopback, private, link-local,
    multicast or metadata address (an internal service). Matched against the URL's host as
    written (``host_normalize``), on every redirect too; ``port`` 0 allows every port."""

    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=0, help_text="0: any port")
    note = models.CharField(max_length=512, blank=True, default="")
    created_by = models.CharField(max_length=256, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["host", "port"]
        verbose_name = "allowed HTTP host"
        constraints = [
            models.UniqueConstraint(fields=["host", "port"], name="allowedhttphost_unique"),
            models.CheckConstraint(condition=Q(port__lte=65535), name="allowedhttphost_port"),
        ]

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host

    def clean(self) -> None:
        host = host_normalize(self.host)
        if not host:
            raise ValidationError({"host": "a host name or an IP address"})
        self.host = host
