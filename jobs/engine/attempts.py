"""One attempt of one step that runs here (python, command, http …): its ``started`` record, the
executor (jobs.steps), and where its outcome goes — the checkpoint on success (the runner's
write path), the retry policy on failure (jobs/engine/retries.py), ``step_cancelled`` when a
stop or cancel preempted it."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.utils import timezone

from gaitweb.lib import reasons
from gaitweb.lib.errors import InvalidInput
from jobs.engine.heartbeat import heartbeat_get
from jobs.engine.lease import ENGINE_ACTOR, _Attempt, _LeaseLost, _preempt_reason, _token_param
from jobs.engine.retries import attempt_failed, steprun_finish
from jobs.models import CheckpointType, Job, StepRun, StepRunStatus
from jobs.services import checkpoint_write
from jobs.steps import StepContext, StepResult, step_execute

if TYPE_CHECKING:
    from jobs.engine.runner import _Runner

log = logging.getLogger("gaitweb.engine")
R = StepRunStatus


def run_step(runner: _Runner, step: dict[str, Any]) -> str:
    """Run the step at the cursor once; ``continue`` after its checkpoint, else what the loop
    returns (``retry_scheduled``, ``failed``, ``preempted:<status>``)."""
    job = runner.job
    assert job is not None
    attempt_no = (runner.runs[-1].attempt if runner.runs else 0) + 1
    started_at = timezone.now()
    timeout = float(step["timeout"])
    if job.deadline is not None:
        timeout = max(min(timeout, (job.deadline - started_at).total_seconds()), 0.001)
    run_id = None
    if runner.prestarted is not None and runner.prestarted[0] == job.cursor:
        _, run_id, started_at = runner.prestarted
        runner.prestarted = None
    elif not step["idempotent"] or step["kind"] == "command":
        # a command always gets its ``started`` record: the heartbeat streams its output tail
        # into it, and a recovered attempt is numbered after the lost one
        run_id = record_started(
            runner,
            index=job.cursor,
            name=step["name"],
            attempt=attempt_no,
            key=runner.idempotency_key(step),
            input=step["with"],
            started_at=started_at,
        )
    ctx = StepContext(
        job=job,
        step=step,
        step_index=job.cursor,
        attempt=attempt_no,
        idempotency_key=runner.idempotency_key(step),
        outputs=runner.outputs,
        checkpoint_hook=lambda type, summary: _progress_checkpoint(runner, type, summary),
    )
    runner.attempt = _Attempt(ctx=ctx, deadline=time.monotonic() + timeout, run_id=run_id)
    if runner.preempted:  # seen by the heartbeat since the loop looked: do not start it
        ctx.stop_event.set()
    if step["kind"] == "command":
        heartbeat_get().wake.set()  # start polling for stop right away
    try:
        result = step_execute(ctx, timeout=timeout)
    except Exception as exc:  # an executor bug must still be recorded, not crash the loop
        log.exception("step %s of %s raised", step["name"], runner.job_id)
        result = StepResult(
            "failed", error={"type": type(exc).__name__, "message": str(exc), "retryable": True}
        )
    finally:
        runner.attempt = None
    if runner.lease_lost:
        raise _LeaseLost
    if runner.preempted and not result.ok:
        _record_preempted(runner, step, attempt_no, started_at, run_id, result)
        return f"preempted:{runner.preempted}"
    if result.ok:
        runner.checkpoint_success(step, attempt_no, result, started_at, run_id)
        runner.outputs[step["name"]] = result.output
        runner.runs = []
        return "continue"
    return attempt_failed(runner, step, attempt_no, started_at, run_id, result)


def record_started(
    runner: _Runner,
    *,
    index: int,
    name: str,
    attempt: int,
    key: str,
    input: Any,
    started_at: datetime,
) -> int:
    """Commit the ``started`` StepRun of a non-idempotent step or workflow call before it runs
    (one statement, guarded by the lease token): its id, or ``_LeaseLost``."""
    job = runner.job
    assert job is not None
    st, jt = StepRun._meta.db_table, Job._meta.db_table
    cast = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    sql = (
        f'INSERT INTO "{st}" ("job_id", "step_index", "step_name", "attempt", "status", "idempotency_key", '
        '"input", "output", "error", "stdout", "stderr", "worker", "started_at", "finished_at") '
        f"SELECT \"id\", %s, %s, %s, 'started', %s, {cast}, NULL, NULL, '', '', %s, %s, NULL "
        f'FROM "{jt}" WHERE "id" = %s AND "lease_token" = %s RETURNING "id"'
    )
    params = [
        index, name, attempt, key, json.dumps(input), runner.owner[:128], started_at, job.pk,
        _token_param(runner.token),
    ]  # fmt: skip
    with connection.cursor() as cur:  # autocommit: one statement, one round trip
        cur.execute(sql, params)
        row = cur.fetchone()
    if row is None:
        runner.lease_lost = True
        raise _LeaseLost
    return int(row[0])


def _record_preempted(
    runner: _Runner,
    step: dict[str, Any],
    attempt: int,
    started_at: datetime,
    run_id: int | None,
    result: StepResult,
) -> None:
    error = {
        "type": "preempted",
        "message": f"the job was {runner.preempted} while the step ran",
        "retryable": False,
    }

    def record(job: Job) -> None:
        steprun_finish(runner, job, step, attempt, started_at, run_id, R.CANCELLED, result, error)

    runner._transition(
        status=None,
        event_type="step_cancelled",
        reason=_preempt_reason(runner.preempted),
        payload={
            "step": step["name"],
            "step_index": runner.job.cursor,  # type: ignore[union-attr]
            "attempt": attempt,
            "status": runner.preempted,
        },
        before_event=record,
    )


def _progress_checkpoint(runner: _Runner, type: str, summary: str) -> None:
    """``ctx.checkpoint()`` from a python step: a plan/progress checkpoint on the timeline."""
    if type not in (CheckpointType.PLAN, CheckpointType.PROGRESS):
        raise InvalidInput(
            reasons.INVALID_CHECKPOINT_TYPE,
            "a step may add plan or progress checkpoints",
            details={"field": "type"},
        )
    with transaction.atomic():
        job = runner._locked()
        checkpoint_write(job, actor=ENGINE_ACTOR, type=type, summary=summary[:512], reason_code="")
