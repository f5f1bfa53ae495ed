"""The parking kinds: steps that wait rather than run (``sleep``, ``wait_event``, ``approval``,
and the gate's ``require_approval``). Parking releases the lease: a timer is a delayed broker
row (jobs/enqueue.py), a signal or a decision wakes the job through its service; no worker is
held. Each returns True once the step is done (and recorded), False when the job parked."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from approvals.models import ApprovalRequest, ApprovalStatus
from approvals.services import approval_request_create
from gaitweb.lib.actors import Actor
from gaitweb.lib.canonical import iso_utc
from jobs.engine.gate import intent, step_tools
from jobs.engine.lease import ENGINE_ACTOR, engine_setting
from jobs.engine.retries import fail
from jobs.journal import event_append
from jobs.models import Job, JobEvent, JobStatus, StepRun, StepRunStatus
from jobs.states import BY_NAME, FAIL_TIMEOUT, transition_apply, transition_status

if TYPE_CHECKING:
    from jobs.engine.runner import _Runner

S = JobStatus
R = StepRunStatus
APPROVAL_REQUEST = BY_NAME["approval_request"]


def sleep(runner: _Runner, step: dict[str, Any]) -> bool:
    """Durable timer: park as ``waiting`` until due."""
    now = timezone.now()
    with transaction.atomic():
        job = runner._locked()
        until = now + timedelta(seconds=float(step["with"]["duration"]))
        run = _open_run(runner, step, {"until": iso_utc(until)})
        due = datetime.fromisoformat(run.input["until"])
        if due <= now:
            _succeed_locked(runner, job, step, {"slept_until": run.input["until"]})
            return True
    runner._transition(
        status=S.WAITING,
        event_type="waiting",
        reason="step_sleeping",
        payload={"step": step["name"], "step_index": job.cursor, "until": iso_utc(due)},
        wake_at=due,
    )
    return False


def wait_event(runner: _Runner, step: dict[str, Any]) -> bool:
    """Park as ``waiting`` until ``job_signal`` delivers the named signal (or it times out)."""
    name = step["with"]["signal"]
    now = timezone.now()
    with transaction.atomic():
        job = runner._locked()
        timeout = step["with"].get("timeout")
        run = _open_run(
            runner,
            step,
            {"timeout_at": iso_utc(now + timedelta(seconds=timeout)) if timeout else None},
        )
        consumed = {
            o.get("signal_revision")
            for o in runner.outputs.values()
            if isinstance(o, dict) and o.get("signal") == name and "signal_revision" in o
        }
        signal = (
            JobEvent.objects.filter(job=job, type="signal_received", payload__name=name)
            .exclude(revision__in=[r for r in consumed if r is not None])
            .order_by("revision")
            .first()
        )
        if signal is not None:
            output = {
                "signal": name,
                "payload": signal.payload.get("payload"),
                "signal_revision": signal.revision,
            }
            _succeed_locked(
                runner, job, step, output, {"signal": name, "signal_revision": signal.revision}
            )
            return True
        timeout_at = run.input.get("timeout_at")
        due = datetime.fromisoformat(timeout_at) if timeout_at else None
        if due is not None and due <= now:
            run.status, run.finished_at = R.TIMED_OUT, now
            run.error = {
                "type": "timeout",
                "message": f"no {name!r} signal before {timeout_at}",
                "retryable": False,
                "gave_up": True,
            }
            run.save(update_fields=["status", "finished_at", "error"])
            failed = True
        else:
            failed = False
    if failed:
        fail(
            runner,
            step,
            FAIL_TIMEOUT,
            {"type": "timeout", "message": f"no {name!r} signal arrived in time"},
        )
        return False
    runner._transition(
        status=S.WAITING,
        event_type="waiting",
        reason="step_waiting_for_signal",
        payload={
            "step": step["name"],
            "step_index": job.cursor,
            "signal": name,
            "timeout_at": timeout_at,
        },
        wake_at=due,
    )
    return False  # without a timeout only job_signal wakes it


def approval(
    runner: _Runner, step: dict[str, Any], gate_result: dict[str, Any] | None = None
) -> bool:
    """An approval step (or a gate verdict of require_approval): True once approved."""
    w = step["with"] if step["kind"] == "approval" else {}
    with transaction.atomic():
        job = runner._locked()
        latest = (
            ApprovalRequest.objects.filter(job=job, step_index=job.cursor)
            .order_by("-created_at", "-id")
            .first()
        )
        if latest is not None and latest.status == ApprovalStatus.APPROVED:
            if step["kind"] == "approval":
                _succeed_locked(
                    runner, job, step, {"approved": True, "approval_request": latest.request_id}
                )
            return True
        if latest is not None and latest.status == ApprovalStatus.PENDING:
            job.outputs = runner.outputs
            transition_apply(
                job,
                BY_NAME["approval_pending"],
                actor=ENGINE_ACTOR,
                payload={"step": step["name"], "approval_request": latest.request_id},
                status_reason=APPROVAL_REQUEST.reasons[0],
                update_fields=[*runner._release_fields(job), "outputs"],
            )
            return False
        _approval_request(runner, job, step, w, gate_result)
    return False


def _approval_request(
    runner: _Runner,
    job: Job,
    step: dict[str, Any],
    w: dict[str, Any],
    gate_result: dict[str, Any] | None,
) -> None:
    """Open the request and park in ``decision_needed`` (one event: approval_requested)."""
    status = transition_status(job, APPROVAL_REQUEST)  # the request journals its event
    job.outputs = runner.outputs
    release = runner._release_fields(job)
    approval_request_create(
        actor=Actor.system(ENGINE_ACTOR),
        job=job,
        summary=w.get("summary") or f"Step {step['name']} ({step_tools(step)}) needs approval",
        step_index=job.cursor,
        step_name=step["name"],
        intent=intent(job, step),
        gate_result=gate_result,
        required_approvals=w.get("required_approvals"),
        distinct_approvers=w.get("distinct_approvers"),
        expires_in=w.get("expires_in"),
        on_expiry=w.get("on_expiry") or "reject",
    )
    job.save(update_fields=[*status, "outputs", *release])


def _succeed_locked(
    runner: _Runner,
    job: Job,
    step: dict[str, Any],
    output: Any,
    payload_extra: dict[str, Any] | None = None,
) -> None:
    """Record a parking step's success (sleep done, signal received, approval granted)."""
    now = timezone.now()
    open_run = next((r for r in reversed(runner.runs) if r.status == R.STARTED), None)
    if open_run is not None:
        open_run.status, open_run.output, open_run.finished_at = R.SUCCEEDED, output, now
        open_run.save(update_fields=["status", "output", "finished_at"])
        attempt = open_run.attempt
    else:
        attempt = (runner.runs[-1].attempt if runner.runs else 0) + 1
        StepRun.objects.create(
            job=job, step_index=job.cursor, step_name=step["name"], attempt=attempt, status=R.SUCCEEDED,
            idempotency_key=runner.idempotency_key(step), input=step["with"], output=output,
            worker=runner.owner[:128], started_at=now, finished_at=now,
        )  # fmt: skip
    job.lease_expires_at = now + timedelta(seconds=float(engine_setting("LEASE_SECONDS")))
    runner.outputs[step["name"]] = output
    payload = {
        "step": step["name"],
        "step_index": job.cursor,
        "attempt": attempt,
        **(payload_extra or {}),
    }
    job.cursor += 1
    event_append(
        job,
        type="step_succeeded",
        actor=ENGINE_ACTOR,
        reason_code="step_succeeded",
        payload=payload,
        update_fields=["cursor", "lease_expires_at"],
    )
    runner.runs = []


def _open_run(runner: _Runner, step: dict[str, Any], inputs: dict[str, Any]) -> StepRun:
    """The ``started`` StepRun that makes a timer durable (created on first arrival)."""
    job = runner.job
    assert job is not None
    open_run = next((r for r in reversed(runner.runs) if r.status == R.STARTED), None)
    if open_run is None:
        attempt = (runner.runs[-1].attempt if runner.runs else 0) + 1
        open_run = StepRun.objects.create(
            job=job, step_index=job.cursor, step_name=step["name"], attempt=attempt, status=R.STARTED,
            idempotency_key=runner.idempotency_key(step), input={**step["with"], **inputs},
            worker=runner.owner[:128], started_at=timezone.now(),
        )  # fmt: skip
        runner.runs.append(open_run)
    return open_run
