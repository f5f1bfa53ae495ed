"""In-doubt attempts: a non-idempotent attempt left ``started`` by a dead worker may have had its
effect, so it is never repeated silently.

The claim that finds such a record marks it ``in_doubt`` and moves the job to
``decision_needed`` with a decision-needed checkpoint; approving and resuming runs the step
again. An idempotent step's lost attempt is closed as failed (it counts toward the retry
budget) and simply retried."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.utils import timezone

from jobs.models import CheckpointType, JobStatus, StepRunStatus
from jobs.spec import PARKING_KINDS

if TYPE_CHECKING:
    from jobs.engine.runner import _Runner

R = StepRunStatus
LOST = "the worker running this attempt stopped before recording its outcome"


def in_doubt_park(runner: _Runner) -> bool:
    """Settle the current step's attempts left ``started``, inside the claim's locked
    transaction. True if the job parked (in doubt)."""
    job = runner.job
    assert job is not None
    if job.cursor >= job.step_count:
        return False
    step = job.steps[job.cursor]
    if step["kind"] in PARKING_KINDS:
        return False
    open_runs = [r for r in runner.runs if r.status == R.STARTED]
    if not open_runs:
        return False
    now = timezone.now()
    idempotent = bool(step["idempotent"])
    for r in open_runs:
        # running an idempotent step again is safe: close the lost attempt so the next one is
        # numbered after it (GAIT_ATTEMPT, ctx.attempt)
        r.status = R.FAILED if idempotent else R.IN_DOUBT
        r.finished_at = now
        r.error = {
            "type": "worker_lost" if idempotent else "in_doubt",
            "message": LOST,
            "retryable": idempotent,
            "worker": r.worker,
        }
        r.save(update_fields=["status", "finished_at", "error"])
    if idempotent:
        return False
    runner._park_with_checkpoint(
        job,
        type=CheckpointType.DECISION_NEEDED,
        summary=f"Step {step['name']} may have run (attempt {open_runs[-1].attempt}); its worker stopped before recording the outcome.",
        required_action=f"Check whether {step['name']} took effect; approve and resume to run it again, or cancel the job.",
        reason_code="step_in_doubt",
        new_status=JobStatus.DECISION_NEEDED,
        payload={
            "step": step["name"],
            "step_index": job.cursor,
            "attempt": open_runs[-1].attempt,
        },
    )
    return True
