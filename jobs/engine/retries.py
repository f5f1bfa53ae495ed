"""What a failed attempt leads to: another attempt after a backoff (``waiting`` with a wake-up),
or the job ``failed`` with the reason code of how it gave up (docs/lifecycle.md)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from jobs.models import Job, JobStatus, StepRun, StepRunStatus
from jobs.spec import step_backoff_seconds
from jobs.states import FAIL_EXIT, FAIL_NON_RETRYABLE, FAIL_RUNTIME, FAIL_SPAWN, FAIL_TIMEOUT
from jobs.steps import StepResult

if TYPE_CHECKING:
    from jobs.engine.runner import _Runner

S = JobStatus
R = StepRunStatus


def attempt_failed(
    runner: _Runner,
    step: dict[str, Any],
    attempt: int,
    started_at: datetime,
    run_id: int | None,
    result: StepResult,
) -> str:
    """Retry the step after its backoff if its error is retryable and its budget allows
    (``retry_scheduled``); otherwise fail the job (``failed``)."""
    error = dict(result.error or {"type": "error", "message": "the step failed", "retryable": True})
    retry = step["retry"]
    names = set(retry.get("non_retryable") or [])
    etype = str(error.get("type", ""))
    listed = etype in names or etype.rsplit(".", 1)[-1] in names
    if "exit_code" in error and f"exit_{error['exit_code']}" in names:
        listed = True
    retryable = bool(error.get("retryable")) and not listed
    # what the journal and the StepRun say is what the engine decided, not what the step
    # claimed: an error named in non_retryable is recorded as not retryable
    error["retryable"] = retryable
    failures = len(_round(runner.runs)) + 1
    status = R.TIMED_OUT if result.status == "timed_out" else R.FAILED
    if retryable and failures < int(retry["max_attempts"]):
        delay = step_backoff_seconds(retry, failures)
        # the backoff runs from the end the attempt records: with pushed wake-ups the next
        # attempt starts within milliseconds of its due time
        failed_at = timezone.now()
        wake_at = failed_at + timedelta(seconds=delay)

        def record(job: Job) -> None:
            steprun_finish(
                runner, job, step, attempt, started_at, run_id, status, result, error, failed_at
            )

        runner._transition(
            status=S.WAITING,
            event_type="step_retry_scheduled",
            reason="step_retry_scheduled",
            payload={
                "step": step["name"],
                "step_index": runner.job.cursor,  # type: ignore[union-attr]
                "attempt": attempt,
                "error": _error_summary(error),
                "delay_s": round(delay, 3),
            },
            wake_at=wake_at,
            before_event=record,
        )
        return "retry_scheduled"
    error["gave_up"] = True
    fail(
        runner,
        step,
        _give_up_reason(error, retryable, result),
        error,
        attempt=attempt,
        started_at=started_at,
        run_id=run_id,
        result=result,
        run_status=status,
    )
    return "failed"


def _give_up_reason(error: dict[str, Any], retryable: bool, result: StepResult) -> str:
    etype = str(error.get("type", ""))
    if error.get("refused"):
        # the deployment refused the attempt (jobs.steps): an allow-list, a switch, a missing
        # secret; the error's type is the reason code
        return etype
    if etype == "spawn_failed":
        return FAIL_SPAWN
    if not retryable:
        return FAIL_NON_RETRYABLE
    if result.status == "timed_out":
        return FAIL_TIMEOUT
    if etype == "non_zero_exit":
        return FAIL_EXIT
    return FAIL_RUNTIME


def _round(runs: list[StepRun]) -> list[StepRun]:
    """Attempts of the current step since its retry budget was last reset (an operator retry
    after giving up, a preemption, an in-doubt decision)."""
    out: list[StepRun] = []
    for r in runs:
        if r.status in (R.CANCELLED, R.IN_DOUBT) or (r.error or {}).get("gave_up"):
            out = []
        else:
            out.append(r)
    return out


def fail(
    runner: _Runner,
    step: dict[str, Any],
    reason: str,
    error: dict[str, Any],
    *,
    attempt: int | None = None,
    started_at: datetime | None = None,
    run_id: int | None = None,
    result: StepResult | None = None,
    run_status: str = R.FAILED,
) -> None:
    """The job fails at ``step`` with ``reason`` (recording the attempt, if there was one)."""

    def record(job: Job) -> None:
        if attempt is not None and started_at is not None and result is not None:
            steprun_finish(
                runner, job, step, attempt, started_at, run_id, run_status, result, error
            )

    runner._transition(
        status=S.FAILED,
        event_type="failed",
        reason=reason,
        payload={
            "step": step["name"],
            "step_index": runner.job.cursor,  # type: ignore[union-attr]
            "attempt": attempt,
            "error": _error_summary(error),
        },
        before_event=record,
    )


def steprun_finish(
    runner: _Runner,
    job: Job,
    step: dict[str, Any],
    attempt: int,
    started_at: datetime,
    run_id: int | None,
    status: str,
    result: StepResult,
    error: dict[str, Any] | None,
    finished_at: datetime | None = None,
) -> None:
    """Record how an attempt that did not succeed ended: finish its ``started`` record (one
    UPDATE) or write the whole row."""
    now = finished_at or timezone.now()
    if run_id is not None:
        StepRun.objects.filter(pk=run_id).update(
            status=status,
            error=error,
            stdout=result.stdout,
            stderr=result.stderr,
            finished_at=now,
        )
        return
    StepRun.objects.create(
        job=job, step_index=job.cursor, step_name=step["name"], attempt=attempt, status=status,
        idempotency_key=runner.idempotency_key(step), input=step["with"], error=error, stdout=result.stdout,
        stderr=result.stderr, worker=runner.owner[:128], started_at=started_at, finished_at=now,
    )  # fmt: skip


def _error_summary(error: dict[str, Any]) -> dict[str, Any]:
    """The fields of a step's error the journal keeps."""
    return {
        k: error[k]
        for k in (
            "type",
            "message",
            "retryable",
            "exit_code",
            "status_code",
            "secret",
            "executable",
            "host",
            "category",
        )  # fmt: skip
        if k in error
    }
