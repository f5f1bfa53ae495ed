"""Durable calls for agents that run in their own process (``GaitClient.run``, docs/workflows.md,
"External agents").

An agent-driven job (submitted without steps) records its calls through the API: ``call_begin``
asks what to do at a position (jobs.replay decides, with the same rules as the in-worker
context: replay, raise again, nondeterminism, in doubt, or run — after the gate, for a tool),
and ``call_finish`` records how the attempt ended. A restarted agent process with the same job
id replays instead of repeating. Every call is a StepRun at its position and a journal event;
permission is the job's identity (``jobs.selectors.job_get`` with the caller's ``Actor``: another
identity's job is ``job_not_found``).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.gate import gate_evaluate, job_policy
from approvals.identities import identity_is_revoked
from approvals.models import ApprovalRequest, ApprovalStatus, DecisionKind
from approvals.services import approval_request_create
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.errors import Conflict, InvalidInput, LimitExceeded
from jobs.journal import event_append
from jobs.models import FINISHED_STATUSES, Job, JobStatus, StepRun, StepRunStatus
from jobs.replay import CallLog, CallRecord, nondeterminism_message, record_kind
from jobs.selectors import job_get
from jobs.services import checkpoint_write
from jobs.spec import SIGNAL_NAME_RE

S = JobStatus
R = StepRunStatus
EXTERNAL_KINDS = ("step", "tool")
MAX_POSITION = 100_000


def _limit() -> int:
    return int(settings.GAIT["STEP_OUTPUT_MAX_BYTES"])  # type: ignore[index]


def _json_bounded(value: Any, field: str) -> Any:
    try:
        size = len(json.dumps(value, separators=(",", ":")).encode("utf-8"))
    except (TypeError, ValueError):
        raise InvalidInput(
            reasons.INVALID_JSON_VALUE, f"{field} must be JSON", details={"field": field}
        ) from None
    if size > _limit():
        raise LimitExceeded(
            reasons.CALL_VALUE_TOO_LARGE,
            f"{field} is larger than {_limit()} bytes",
            details={"field": field, "max_bytes": _limit()},
        )
    return value


def _position(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_POSITION:
        raise InvalidInput(
            reasons.INVALID_CALL_POSITION,
            f"position must be an integer from 1 to {MAX_POSITION}",
            details={"field": "position"},
        )
    return value


def _agent_job(actor: Actor, job_id: str) -> Job:
    """The caller's agent-driven job, locked (call inside a transaction)."""
    job = job_get(actor=actor, job_id=job_id, for_update=True)
    if job.step_count:
        raise Conflict(
            reasons.CALLS_NOT_FOR_ENGINE_JOBS,
            "gaitweb's workers record the calls of a job with steps or a workflow themselves",
            details={"job_id": job_id},
        )
    return job


def _log(job: Job) -> CallLog:
    """Every recorded call of ``job`` in one query (the same shape jobs.durable loads)."""
    rows = StepRun.objects.filter(job=job, step_index__gte=1).values_list(
        "id", "step_index", "step_name", "attempt", "status", "input", "output", "error"
    )
    return CallLog(
        CallRecord(
            id=r[0], position=r[1], name=r[2], attempt=r[3], status=r[4], kind=record_kind(r[5]),
            input=r[5] or {}, output=r[6], error=r[7],
        )
        for r in rows
    )  # fmt: skip


def call_list(*, actor: Actor, job_id: str) -> list[dict[str, Any]]:
    """The recorded calls of an agent-driven job the caller may see, in order."""
    actor.require(Scope.READ)
    job = job_get(actor=actor, job_id=job_id)
    return [
        {
            "position": r.step_index,
            "name": r.step_name,
            "kind": record_kind(r.input),
            "attempt": r.attempt,
            "status": r.status,
            "output": r.output,
            "error": r.error,
        }
        for r in StepRun.objects.filter(job=job, step_index__gte=1).order_by(
            "step_index", "attempt"
        )
    ]


def call_begin(
    *,
    actor: Actor,
    job_id: str,
    position: Any,
    name: Any,
    kind: Any,
    args: Any = None,
    targets: Any = None,
    idempotent: bool = False,
) -> dict[str, Any]:
    """What the agent does at ``position``: ``{"action": "replay", "output"}``, ``{"action":
    "raise", "error"}``, ``{"action": "wait", "status"}`` (the job is parked: an approval, an
    in-doubt question, a pause; ask again later) or ``{"action": "run", "attempt",
    "idempotency_key"}`` (a ``started`` record is committed first). A tool is gated first, with
    the job's identity (never the caller's claim): block → a final ``ToolBlocked`` error;
    require_approval → an approval request and ``wait``. A call whose name or kind differs from
    the one recorded at the position is refused with ``workflow_nondeterministic``."""

    actor.require(Scope.SUBMIT)
    position = _position(position)
    if not isinstance(name, str) or not SIGNAL_NAME_RE.match(name):
        raise InvalidInput(
            reasons.INVALID_CALL_NAME,
            "call names are 1-128 letters, digits and . _ : - starting with a letter or digit",
            details={"field": "name"},
        )
    if kind not in EXTERNAL_KINDS:
        raise InvalidInput(
            reasons.INVALID_CALL_KIND, "kind must be step or tool", details={"field": "kind"}
        )
    args = _json_bounded(args if args is not None else {}, "args")
    if not isinstance(args, dict):
        raise InvalidInput(
            reasons.INVALID_CALL_ARGS, "args must be an object", details={"field": "args"}
        )
    targets = _targets(targets)
    with transaction.atomic():
        job = _agent_job(actor, job_id)
        if job.status == S.EMERGENCY_STOPPED:
            event_append(
                job, type="dispatch_blocked", actor=actor.name, reason_code="emergency_stop_preempted",
                payload={"path": "calls", "tool": name, "step_index": position, "status": job.status},
            )  # fmt: skip
            return {
                "action": "raise",
                "error": {
                    "type": "emergency_stop_preempted",
                    "raised": "Stopped",
                    "message": "the job is emergency-stopped",
                },
            }
        if job.status in FINISHED_STATUSES:
            raise Conflict(
                reasons.JOB_NOT_ACTIVE,
                f"job {job_id} is {job.status}",
                details={"status": job.status},
            )
        log = _log(job)
        if position > log.last_position + 1:
            raise InvalidInput(
                reasons.CALL_POSITION_GAP,
                f"the next new call is at position {log.last_position + 1}",
                details={"field": "position", "next": log.last_position + 1},
            )
        decision = log.decide(position, name, kind, idempotent=idempotent)
        if decision.action == "mismatch":
            assert decision.record is not None
            raise Conflict(
                reasons.WORKFLOW_NONDETERMINISTIC,
                nondeterminism_message(position, decision.record, name, kind),
                details={"position": position, "recorded": decision.record.name, "called": name},
            )
        if decision.action == "replay":
            return {
                "action": "replay",
                "output": decision.output,
                "attempt": decision.record.attempt,
            }  # type: ignore[union-attr]
        if decision.action == "raise":
            return {"action": "raise", "error": decision.record.error}  # type: ignore[union-attr]
        if job.status != S.RUNNING:
            return {"action": "wait", "status": job.status}
        if decision.action == "in_doubt":
            return _in_doubt(job, actor, position, name, decision.record)  # type: ignore[arg-type]
        record_input: dict[str, Any] = {
            "kind": kind,
            "args": args,
            "targets": targets,
            "idempotent": idempotent,
        }
        attempt = decision.attempt
        if kind == "tool":
            identity = job.identity or actor.identity or ""
            intent = {
                "tool_name": name,
                "args": args,
                "targets": targets,
                "context": {"identity": identity, "job_id": job.job_id},
            }
            if identity_is_revoked(identity):
                gate: dict[str, Any] = {"verdict": "block", "reason_codes": ["identity_revoked"]}
            else:
                gate = gate_evaluate(intent=intent, policy=job_policy(job)).as_dict()
            record_input["gate"] = {
                k: gate.get(k) for k in ("verdict", "reason_codes", "violations", "policy_digest")
            }
            if gate["verdict"] == "block":
                error = {
                    "type": "ToolBlocked",
                    "raised": "ToolBlocked",
                    "message": ", ".join(gate.get("reason_codes") or []),
                    "retryable": False,
                    "gave_up": True,
                    "final": True,
                    "gate": record_input["gate"],
                }
                _record(job, position, name, attempt, R.FAILED, record_input, error=error)
                event_append(
                    job, type="dispatch_blocked", actor=actor.name, reason_code="policy_blocked",
                    payload={"path": "calls", "tool": name, "step_index": position, **record_input["gate"]},
                )  # fmt: skip
                return {"action": "raise", "error": error}
            if gate["verdict"] == "require_approval":
                latest = (
                    ApprovalRequest.objects.filter(job=job, step_index=position)
                    .order_by("-created_at", "-id")
                    .first()
                )
                used = {(r.error or {}).get("approval_request") for r in decision.attempts}
                if (
                    latest is not None
                    and latest.status == ApprovalStatus.REJECTED
                    and latest.request_id not in used
                ):
                    d = (
                        latest.decisions.filter(decision=DecisionKind.REJECT)
                        .order_by("-id")
                        .first()
                    )
                    error = {
                        "type": "ToolRejected",
                        "raised": "ToolRejected",
                        "message": d.reason if d else "rejected",
                        "by": d.actor if d else "",
                        "approval_request": latest.request_id,
                        "retryable": False,
                        "gave_up": True,
                        "final": True,
                    }
                    _record(job, position, name, attempt, R.FAILED, record_input, error=error)
                    return {"action": "raise", "error": error}
                if latest is None or latest.status not in (
                    ApprovalStatus.APPROVED,
                    ApprovalStatus.PENDING,
                ):
                    request = approval_request_create(
                        actor=Actor.system(actor.name), job=job,
                        summary=f"Tool call {name} (call {position}) needs approval: {', '.join(gate.get('reason_codes') or [])}"[:512],
                        step_index=position, step_name=name, intent=intent, gate_result=gate,
                    )  # fmt: skip
                    job.status, job.status_reason_code = S.DECISION_NEEDED, "approval_requested"
                    job.save(update_fields=["status", "status_reason_code"])
                    return {
                        "action": "wait",
                        "status": job.status,
                        "approval_request": request.request_id,
                    }
                if latest.status == ApprovalStatus.PENDING:
                    return {
                        "action": "wait",
                        "status": job.status,
                        "approval_request": latest.request_id,
                    }
        _record(job, position, name, attempt, R.STARTED, record_input)
        return {
            "action": "run",
            "attempt": attempt,
            "idempotency_key": f"{job.job_id}/{name}/{position}",
        }


def _targets(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 64:
        raise InvalidInput(
            reasons.INTENT_INVALID,
            "targets must be a list (at most 64)",
            details={"field": "targets"},
        )
    out = []
    for t in value:
        if (
            not isinstance(t, dict)
            or not all(
                isinstance(k, str) and isinstance(v, str) and len(v) <= 2048 for k, v in t.items()
            )
            or "value" not in t
        ):
            raise InvalidInput(
                reasons.INTENT_INVALID,
                "each target is an object of strings with a value",
                details={"field": "targets"},
            )
        out.append(dict(t))
    return out


def _record(
    job: Job, position: int, name: str, attempt: int, status: str, record_input: dict[str, Any],
    *, error: dict[str, Any] | None = None,
) -> StepRun:  # fmt: skip
    now = timezone.now()
    return StepRun.objects.create(
        job=job, step_index=position, step_name=name, attempt=attempt, status=status,
        idempotency_key=f"{job.job_id}/{name}/{position}", input=record_input, error=error,
        worker="external", started_at=now, finished_at=None if status == R.STARTED else now,
    )  # fmt: skip


def _in_doubt(
    job: Job, actor: Actor, position: int, name: str, record: CallRecord
) -> dict[str, Any]:
    """A non-idempotent call begun by an agent process that never finished it: a person decides
    (approve and resume runs it again), as for a worker's in-doubt step."""

    StepRun.objects.filter(pk=record.id).update(
        status=R.IN_DOUBT, finished_at=timezone.now(),
        error={"type": "in_doubt", "message": "the agent began this call and never recorded its outcome", "retryable": False},
    )  # fmt: skip
    checkpoint_write(
        job,
        actor=actor.name,
        type="decision-needed",
        summary=f"Call {position} {name} may have run (attempt {record.attempt}); the agent never recorded its outcome."[
            :512
        ],
        required_action=f"Check whether {name} took effect; approve and resume to run it again, or cancel the job."[
            :512
        ],
        reason_code="step_in_doubt",
        new_status=S.DECISION_NEEDED,
        payload={"step": name, "step_index": position, "attempt": record.attempt},
    )
    return {"action": "wait", "status": job.status, "reason": "in_doubt"}


def call_finish(
    *,
    actor: Actor,
    job_id: str,
    position: Any,
    attempt: Any,
    status: Any,
    output: Any = None,
    error: Any = None,
) -> dict[str, Any]:
    """Record how an attempt begun with ``call_begin`` ended: ``succeeded`` with its JSON
    ``output``, or ``failed`` with ``error`` ``{type, message, final?}`` (``final``: the agent
    gave up and raised it; replays raise it again). Only an open (``started``) attempt can be
    finished: a call the gate never saw cannot be recorded."""
    actor.require(Scope.SUBMIT)
    position = _position(position)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise InvalidInput(
            reasons.INVALID_CALL_ATTEMPT,
            "attempt must be a positive integer",
            details={"field": "attempt"},
        )
    if status not in ("succeeded", "failed"):
        raise InvalidInput(
            reasons.INVALID_CALL_STATUS,
            "status must be succeeded or failed",
            details={"field": "status"},
        )
    output = _json_bounded(output, "output")
    if status == "failed":
        if not isinstance(error, dict) or not isinstance(error.get("type"), str):
            raise InvalidInput(
                reasons.INVALID_CALL_ERROR,
                "error must be an object with a type",
                details={"field": "error"},
            )
        error = {
            "type": error["type"][:128],
            "message": str(error.get("message", ""))[:2000],
            "retryable": False,
            "gave_up": bool(error.get("final")),
            "final": bool(error.get("final")),
        }
    with transaction.atomic():
        job = _agent_job(actor, job_id)
        if job.status in FINISHED_STATUSES:
            raise Conflict(
                reasons.JOB_NOT_ACTIVE,
                f"job {job_id} is {job.status}",
                details={"status": job.status},
            )
        run = (
            StepRun.objects.select_for_update()
            .filter(job=job, step_index=position, attempt=attempt)
            .first()
        )
        if run is None or run.status != R.STARTED:
            raise Conflict(
                reasons.CALL_NOT_OPEN,
                f"call {position} attempt {attempt} was not begun (or is already recorded)",
                details={"position": position, "attempt": attempt},
            )
        run.finished_at = timezone.now()
        if status == "succeeded":
            run.status, run.output = R.SUCCEEDED, output
        else:
            run.status, run.error = R.FAILED, error
        try:
            with transaction.atomic():
                run.save(update_fields=["status", "output", "error", "finished_at"])
        except IntegrityError:
            raise Conflict(
                reasons.CALL_ALREADY_RECORDED, f"call {position} already succeeded"
            ) from None
        event_append(
            job,
            type="step_succeeded" if status == "succeeded" else "step_failed",
            actor=actor.name,
            reason_code="step_succeeded" if status == "succeeded" else "step_failed",
            payload={
                "step": run.step_name,
                "step_index": position,
                "attempt": attempt,
                "call": record_kind(run.input),
                "path": "calls",
            },
        )
    return {"position": position, "attempt": attempt, "status": run.status}
