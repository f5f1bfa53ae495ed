"""The job lifecycle in one table: every transition, by an operator or agent (jobs.services) or by
a worker (jobs.engine), with the statuses it starts from, where it leads, its event type and its
reason codes. docs/lifecycle.md shows the same table; tests/test_docs_match_code.py holds the
two together.

Every status change goes through ``transition_apply``, which finds the transition's row and
refuses one the table does not have (a programming error, not a refusal): a new transition is
a new row. Operators' transitions are also checked against the job's status first
(``transition_check``, with ``invalid_transition``); the engine's are guarded by its lease (a
worker writes only while it holds the job), and their from-statuses say where they happen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from gaitweb.lib import reasons
from gaitweb.lib.errors import Conflict
from jobs.journal import event_append
from jobs.models import ALLOWED_FROM, FINISHED_STATUSES, Job, JobEvent, JobStatus

S = JobStatus
OPERATOR = "operator"  # a person or an agent, through jobs.services (and approvals.services)
ENGINE = "engine"  # a worker holding the job's lease (jobs.engine, jobs.durable)
# a step the deployment refused (an allow-list, a switch, a missing secret: jobs.steps) fails
# with the refusal's own code, a workflow that cannot go on with its own (jobs.durable)
ANY_REASON = "<refusal>"

_ACTIVE = frozenset({S.QUEUED, S.RUNNING, S.WAITING, S.PAUSED})
_PREEMPTED = frozenset({S.EMERGENCY_STOPPED, S.CANCELLED})
_RUNNING = frozenset({S.RUNNING})


@dataclass(frozen=True)
class Transition:
    name: str
    by: tuple[str, ...]  # OPERATOR, ENGINE
    from_: frozenset[str]
    to: tuple[str, ...]  # the statuses it may lead to, the usual one first; () = unchanged
    event: str  # the JobEvent type it journals
    # the event's reason codes, the usual one first; the job's status reason is the same
    # unless the caller names its own (a checkpoint's, an approval request's)
    reasons: tuple[str, ...]

    def leads_to(self, status: str | None) -> bool:
        return status in self.to if self.to else status is None

    def records(self, reason: str) -> bool:
        return reason in self.reasons or ANY_REASON in self.reasons


def _operator(name: str, to: tuple[str, ...], event: str, *reasons: str) -> Transition:
    return Transition(name, (OPERATOR,), ALLOWED_FROM[name], to, event, reasons)


def _engine(
    name: str, from_: frozenset[str], to: tuple[str, ...], event: str, *reasons: str
) -> Transition:
    return Transition(name, (ENGINE,), from_, to, event, reasons)


def _checkpoint(name: str, from_: frozenset[str], to: tuple[str, ...], *types: str) -> Transition:
    reasons = tuple(f"checkpoint_{t}" for t in types)
    return Transition(name, (OPERATOR, ENGINE), from_, to, "checkpoint_added", reasons)


# Reason codes of a step that gives up (docs/lifecycle.md)
FAIL_SPAWN = "job_spawn_failed"
FAIL_EXIT = "job_non_zero_exit"
FAIL_TIMEOUT = "job_timeout"
FAIL_RUNTIME = "job_runtime_error"
FAIL_NON_RETRYABLE = "step_non_retryable"
PREEMPT_REASONS = ("emergency_stop_preempted", "job_cancelled_during_run")
RESUME_REASONS = (
    "resumed",
    "resumed_with_env_override",
    "resumed_policy_transition",
    "resumed_with_env_override_policy_transition",
)

TRANSITIONS: tuple[Transition, ...] = (
    # what people and agents do (the actions of jobs.models.ALLOWED_FROM)
    _operator("pause", (S.PAUSED,), "paused", "paused"),
    _operator("stop", (S.EMERGENCY_STOPPED,), "emergency_stop_acknowledged", PREEMPT_REASONS[0]),
    _operator("approve", (), "approved", "approval_recorded"),
    # a rejected tool call of a workflow goes back to its code (queued; running: agent-driven)
    _operator("reject", (S.BLOCKED, S.QUEUED, S.RUNNING), "rejected", "approval_rejected"),
    _operator("resume", (S.QUEUED, S.RUNNING), "resumed", *RESUME_REASONS),
    _operator(
        "cancel",
        (S.CANCELLED,),
        "cancelled",
        "cancelled",
        "job_cancelled_before_start",
        "job_cancelled_during_run",
    ),
    _operator("retry", (S.QUEUED,), "retried", "job_retried"),
    Transition(
        "signal",
        (OPERATOR,),
        frozenset(S.values) - FINISHED_STATUSES,
        (),
        "signal_received",
        ("signal_received",),
    ),  # fmt: skip
    # an agent's checkpoint (jobs.services.job_checkpoint_add), a step's progress, and the
    # engine's own: the in-doubt question (job reason step_in_doubt), the gate's block
    # (policy_blocked)
    _checkpoint("checkpoint", _ACTIVE, (), "plan", "progress"),
    _checkpoint("checkpoint_decision_needed", _RUNNING, (S.DECISION_NEEDED,), "decision_needed"),
    _checkpoint("checkpoint_blocked", _RUNNING, (S.BLOCKED,), "blocked"),
    _checkpoint("checkpoint_completed", _RUNNING, (S.COMPLETED,), "completed"),
    # what workers do
    _engine("claim", frozenset({S.QUEUED, S.WAITING}), (S.RUNNING,), "started", "job_started"),
    _engine("recover", _RUNNING, (S.RUNNING,), "recovered", "job_recovered_after_restart"),
    _engine("sleep", _RUNNING, (S.WAITING,), "waiting", "step_sleeping"),
    _engine("wait_event", _RUNNING, (S.WAITING,), "waiting", "step_waiting_for_signal"),
    _engine(
        "retry_backoff", _RUNNING, (S.WAITING,), "step_retry_scheduled", "step_retry_scheduled"
    ),
    _engine(
        "approval_request",
        _RUNNING,
        (S.DECISION_NEEDED,),
        "approval_requested",
        "approval_requested",
    ),
    # a request already open (the job's reason stays approval_requested)
    _engine("approval_pending", _RUNNING, (S.DECISION_NEEDED,), "waiting", "approval_pending"),
    _engine(
        "fail",
        _RUNNING,
        (S.FAILED,),
        "failed",
        FAIL_RUNTIME,
        FAIL_TIMEOUT,
        FAIL_EXIT,
        FAIL_SPAWN,
        FAIL_NON_RETRYABLE,
        ANY_REASON,
    ),
    _engine("complete", _RUNNING, (S.COMPLETED,), "completed", "job_succeeded"),
    _engine("dispatch_blocked", _PREEMPTED, (), "dispatch_blocked", *PREEMPT_REASONS),
    _engine("step_cancelled", _PREEMPTED, (), "step_cancelled", *PREEMPT_REASONS),
)
BY_NAME = {t.name: t for t in TRANSITIONS}


def transition_find(event: str, to: str | None, reason: str) -> Transition:
    """The row of a transition journaled as ``event`` with ``reason`` that leads to ``to``
    (None: unchanged); a row naming the reason wins over one that takes any."""
    rows = [t for t in TRANSITIONS if t.event == event and t.leads_to(to) and t.records(reason)]
    rows.sort(key=lambda t: reason not in t.reasons)
    if not rows:
        raise ValueError(f"no lifecycle transition {event} → {to} ({reason}) in jobs.states")
    return rows[0]


def checkpoint_reason(type: str) -> str:
    """The reason code of the event that adds a checkpoint of ``type`` (CheckpointType)."""
    return "checkpoint_" + type.replace("-", "_")


def checkpoint_transition(type: str) -> Transition:
    """The row of adding a checkpoint of ``type``."""
    reason = checkpoint_reason(type)
    return next(t for t in TRANSITIONS if t.event == "checkpoint_added" and reason in t.reasons)


def transition_check(job: Job, name: str, *, allowed: Iterable[str] | None = None) -> None:
    """Refuse with ``invalid_transition`` unless ``job`` may take operator transition ``name``
    now. ``allowed`` (with a ``name`` that is a description) is for refusals the table's rows
    do not name one by one (a checkpoint of a given type)."""
    ok = job.status in set(allowed) if allowed is not None else job.can(name)
    if ok:
        return
    statuses = sorted(allowed if allowed is not None else BY_NAME[name].from_)
    raise Conflict(
        reasons.INVALID_TRANSITION,
        f"cannot {name} a job that is {job.status}",
        details={
            "job_id": job.job_id,
            "status": job.status,
            "action": name,
            "allowed_from": statuses,
        },
        hint=f"{name} is allowed from: {', '.join(statuses)}",
    )


def transition_status(
    job: Job, row: Transition, *, to: str | None = None, reason: str = ""
) -> list[str]:
    """Set the status ``row`` leads to (``to`` when it may lead to several) and its reason code
    on ``job``; return the fields that changed. The event is the caller's to journal (see
    ``transition_apply``)."""
    status = to if to is not None else (row.to[0] if row.to else None)
    reason = reason or row.reasons[0]
    if not row.leads_to(status) or not row.records(reason):
        raise ValueError(f"{row.name} does not lead to {status} with {reason} (jobs.states)")
    if status is None:
        return []
    job.status = status
    job.status_reason_code = reason
    fields = ["status", "status_reason_code"]
    if status in FINISHED_STATUSES:
        job.finished_at = timezone.now()
        fields.append("finished_at")
    return fields


def transition_apply(
    job: Job,
    row: Transition,
    *,
    actor: str,
    payload: dict[str, Any],
    to: str | None = None,
    reason: str = "",
    status_reason: str = "",
    update_fields: Iterable[str] = (),
) -> JobEvent:
    """Take transition ``row``: the new status, its reason code (``status_reason`` when it is not
    the event's ``reason``) and its one event, saved with the caller's own ``update_fields`` in
    one UPDATE. The job row must be locked (or lease-guarded)."""
    reason = reason or row.reasons[0]
    fields = [*update_fields, *transition_status(job, row, to=to, reason=reason)]
    if status_reason and "status_reason_code" in fields:
        job.status_reason_code = status_reason
    return event_append(
        job, type=row.event, actor=actor, reason_code=reason, payload=payload, update_fields=fields
    )
