"""Claim and checkpoint write: what they may do, and the one interface of their two
implementations.

The two writes of the hot path are each one database round trip where the database allows it:

- ``PostgresBackend`` (jobs/engine/pg.py): data-modifying CTEs, optimistic (guarded by the
  revision, status and lease token read a moment earlier), one statement and one commit each;
- ``OrmBackend`` (jobs/engine/orm.py): the ORM inside a transaction that locks the job row
  (SQLite, whose IMMEDIATE transactions serialize writers; it runs on PostgreSQL too).

Both follow the rules below, and tests/engine/test_backend_contract.py holds both to the same
scenarios."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from jobs.models import Job, JobEvent, JobStatus, StepRun, StepRunStatus
from jobs.spec import PARKING_KINDS
from jobs.states import BY_NAME
from jobs.steps import StepResult

if TYPE_CHECKING:
    from jobs.engine.runner import _Runner

S = JobStatus
R = StepRunStatus
CLAIM, RECOVER = BY_NAME["claim"], BY_NAME["recover"]  # (jobs.states)


class ClaimWrite(Protocol):
    # whether write_success completes the job with its last step in the same statement
    completes_in_write: bool

    def claim(self, runner: _Runner) -> bool:
        """Take the lease of ``runner.job_id`` if ``claim_kind`` allows it, journal the claim,
        acknowledge ``runner.broker_row``, write the ``claim_prestart`` record; load the job, the
        outputs so far and the StepRuns of the current step into ``runner``. False (and nothing
        written but the acknowledgement) if this delivery must not claim the job."""
        ...

    def write_success(
        self,
        runner: _Runner,
        prev_rev: int,
        event: JobEvent,
        done: JobEvent | None,
        step: dict[str, Any],
        attempt: int,
        result: StepResult,
        started_at: datetime,
        finished_at: datetime,
        run_id: int | None,
    ) -> str | None:
        """Checkpoint a succeeded step: if the runner holds the lease and the job's revision is
        still ``prev_rev``, advance the cursor, record the StepRun (finishing ``run_id`` if it
        was pre-started) and ``event`` (and ``done``, completing the job, unless it left
        ``running`` meanwhile), pre-start the next step when ``write_prestart`` allows; return
        the job's status. None: nothing written (lease lost or revision moved)."""
        ...


def claim_kind(job: Job, now: datetime) -> tuple[str, str] | None:
    """(event type, reason) of claiming ``job`` now ("" for a silent continuation), or None if
    this delivery must not claim it."""
    if job.step_count == 0:
        return None
    if job.status == S.QUEUED:
        return CLAIM.event, CLAIM.reasons[0]
    if job.status == S.WAITING:
        if job.wake_at is None or job.wake_at > now:
            return None  # early or duplicate wake-up; the due one will come
        return CLAIM.event, CLAIM.reasons[0]
    if job.status == S.RUNNING:
        if job.lease_token is None:
            return "", ""  # the previous slice yielded: just continue
        if job.lease_expires_at is None or job.lease_expires_at < now:
            return RECOVER.event, RECOVER.reasons[0]
        return None  # held by a live worker: a duplicate delivery
    return None


def claim_payload(
    runner: _Runner, job: Job, event_type: str, previous_owner: str
) -> dict[str, Any]:
    payload: dict[str, Any] = {"worker": runner.owner, "cursor": job.cursor}
    if event_type == RECOVER.event:
        payload["previous_worker"] = previous_owner
    return payload


def claim_prestart(job: Job, runs: list[StepRun]) -> tuple[dict[str, Any], int] | None:
    """(step, attempt) whose ``started`` record the claim may write: the step at the cursor when
    it is non-idempotent, runs here (no parking kind, no gate to ask first) and has no open
    attempt (that one is in doubt). The loop drops it if it does not dispatch the step (deadline
    passed, stopped meanwhile); a crash in between leaves it ``started``, which recovery reads
    as in doubt, as for any crash after a ``started`` commit."""
    if job.cursor >= job.step_count or job.policy_id is not None:
        return None
    step = job.spec["steps"][job.cursor]
    if step["idempotent"] or step["kind"] in PARKING_KINDS or step["kind"] == "workflow":
        return None  # a workflow records its own calls (jobs.durable)
    if any(r.status == R.STARTED for r in runs):
        return None
    return step, (runs[-1].attempt if runs else 0) + 1


def write_prestart(job: Job) -> dict[str, Any] | None:
    """The next step, when its ``started`` record rides on this checkpoint's commit: a
    non-idempotent step then costs one commit, like an idempotent one. If the loop does not
    dispatch it (pause, stop, slice end) it deletes the row; a crash in between leaves it
    ``started``, which recovery treats as in doubt: the conservative reading, exactly as for a
    crash right after a separate ``started`` commit."""
    if job.cursor + 1 >= job.step_count or job.policy_id is not None:
        return None
    nxt: dict[str, Any] = job.spec["steps"][job.cursor + 1]
    if nxt["idempotent"] or nxt["kind"] in PARKING_KINDS:
        return None
    return nxt
