"""The runner: one delivery of ``advance(job_id)``, which claims the job and runs it for one time
slice (jobs/engine/__init__.py tells the whole story).

The loop, while the lease is held: control state (paused → park; stopped / cancelled →
``dispatch_blocked``), deadline, time slice, the gate, then the step at ``cursor``: a parking
kind (jobs/engine/parking.py), a workflow (jobs.durable) or one attempt (jobs/engine/attempts.py),
whose success is checkpointed here through the connection's ``ClaimWrite`` backend."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from django_q.models import OrmQ

from jobs.durable import workflow_advance
from jobs.engine import attempts, gate, parking
from jobs.engine.backend import ClaimWrite
from jobs.engine.heartbeat import heartbeat_get
from jobs.engine.in_doubt import in_doubt_park
from jobs.engine.lease import (
    ENGINE_ACTOR,
    _Attempt,
    _LeaseLost,
    _preempt_reason,
    engine_setting,
    worker_name,
)
from jobs.engine.orm import OrmBackend
from jobs.engine.pg import PostgresBackend
from jobs.engine.retries import fail
from jobs.engine.sweep import sweep_ensure_alive
from jobs.enqueue import advance_enqueue
from jobs.journal import event_build
from jobs.models import Job, JobStatus, StepRun, StepRunStatus
from jobs.services import checkpoint_write
from jobs.spec import PARKING_KINDS
from jobs.states import BY_NAME, FAIL_TIMEOUT, transition_apply, transition_find
from jobs.steps import StepResult

log = logging.getLogger("gaitweb.engine")

S = JobStatus
R = StepRunStatus
COMPLETE = BY_NAME["complete"]


def advance(job_id: str, *, broker_row: int | None = None) -> str:
    """Run ``job_id`` for one time slice if this delivery can claim it; returns what happened
    (``not_claimed``, ``completed``, ``failed``, ``waiting``, ``yielded``, ``parked:<status>`` …).
    ``broker_row``: the django-q2 row that delivered it, acknowledged by the claim
    (jobs.broker.broker_row_to_task)."""
    sweep_ensure_alive()
    return _Runner(job_id=job_id, broker_row=broker_row).run()


def backend_for_connection() -> ClaimWrite:
    return PostgresBackend() if connection.vendor == "postgresql" else OrmBackend()


@dataclass
class _Runner:
    job_id: str
    token: uuid.UUID = field(default_factory=uuid.uuid4)
    owner: str = field(default_factory=worker_name)
    job: Job | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    runs: list[StepRun] = field(default_factory=list)  # StepRuns of the step at the cursor
    attempt: _Attempt | None = None
    preempted: str = ""  # the status that preempted the running step (emergency_stopped, …)
    lease_lost: bool = False
    last_renew: float = 0.0
    # (step_index, StepRun id, started_at) of a ``started`` record committed with the claim or
    # the previous step's checkpoint (jobs/engine/backend.py)
    prestarted: tuple[int, int, datetime] | None = None
    # the job's PolicyVersion (versions are append-only), read once per slice by the gate
    policy: Any = None
    # called before the runner's own writes (jobs.durable: writes its buffered calls first)
    before_write: Callable[[], None] | None = None
    # the broker row that delivered this run, acknowledged by the claim (jobs.broker)
    broker_row: int | None = None
    backend: ClaimWrite = field(default_factory=backend_for_connection)

    def idempotency_key(self, step: dict[str, Any]) -> str:
        return f"{self.job_id}/{step['name']}"

    # -- claim and loop --

    def claim(self) -> bool:
        """Claim the job; a claim that finds an attempt left ``started`` settles it first
        (jobs/engine/in_doubt.py) and does not run on if that parked the job."""
        if not self.backend.claim(self):
            return False
        if any(r.status == R.STARTED for r in self.runs):
            with transaction.atomic():
                self._locked()
                if in_doubt_park(self):
                    return False
        return True

    def run(self) -> str:
        try:
            claimed = self.claim()
        finally:
            if self.broker_row is not None:  # not claimed (or the claim failed): acknowledge
                OrmQ.objects.filter(pk=self.broker_row).delete()
                self.broker_row = None
        if not claimed:
            return "not_claimed"
        hb = heartbeat_get()
        hb.attach(self)
        try:
            return self._loop()
        except _LeaseLost:
            log.warning(
                "job %s: lease lost to another worker; stopping without writing", self.job_id
            )
            return "lease_lost"
        finally:
            hb.detach(self)

    def _loop(self) -> str:
        job = self.job
        assert job is not None
        slice_end = time.monotonic() + float(engine_setting("SLICE_SECONDS"))
        steps = job.steps
        first = job.cursor  # every slice makes progress: at least one step before yielding
        while True:
            if self.lease_lost:
                raise _LeaseLost
            slice_over = job.cursor > first and time.monotonic() >= slice_end
            status = self.preempted or job.status
            if status == S.COMPLETED:  # the last checkpoint completed the job
                return "completed"
            if self.prestarted is not None and (
                status != S.RUNNING
                or self.prestarted[0] != job.cursor
                or slice_over
                or (job.deadline is not None and timezone.now() >= job.deadline)
            ):
                self._drop_prestarted()
            if status != S.RUNNING:
                return self._blocked_by_control(status)
            if job.cursor >= job.step_count:
                self._transition(
                    status=S.COMPLETED,
                    event_type=COMPLETE.event,
                    reason=COMPLETE.reasons[0],
                    payload={"steps": job.step_count},
                )
                return "completed"
            if job.deadline is not None and timezone.now() >= job.deadline:
                fail(
                    self,
                    steps[job.cursor],
                    FAIL_TIMEOUT,
                    {"type": "deadline_exceeded", "message": "the job's deadline passed"},
                )
                return "failed"
            if slice_over:
                self.release(reenqueue=True)
                return "yielded"
            step = steps[job.cursor]
            kind = step["kind"]
            if kind == "workflow":  # code that gates each of its own tool calls (jobs.durable)
                outcome = workflow_advance(self, step)
                if outcome != "continue":
                    return outcome
            elif (
                job.policy_id is not None
                and kind not in PARKING_KINDS
                and not self._gate_allows(step)
            ):
                return "gated"
            elif kind == "sleep":
                if not parking.sleep(self, step):
                    return "waiting"
            elif kind == "wait_event":
                if not parking.wait_event(self, step):
                    return "waiting"
            elif kind == "approval":
                if not parking.approval(self, step):
                    return "decision_needed"
            else:
                outcome = attempts.run_step(self, step)
                if outcome != "continue":
                    return outcome
            job = self.job
            assert job is not None

    def _gate_allows(self, step: dict[str, Any]) -> bool:
        """Ask the policy gate before dispatching ``step``: True if it may run now."""
        result = gate.verdict(self, step)
        if result.get("verdict") in ("allow", "dry_run"):
            return True
        if result.get("verdict") == "require_approval":
            return parking.approval(self, step, gate_result=result)
        gate.block(self, step, result)
        return False

    def _blocked_by_control(self, status: str) -> str:
        """The job left ``running`` under us (pause, stop, cancel): dispatch nothing more."""
        if status in (S.EMERGENCY_STOPPED, S.CANCELLED):
            step = self.job.current_step_name if self.job else ""
            self._transition(
                status=None,
                event_type="dispatch_blocked",
                reason=_preempt_reason(status),
                payload={"step": step, "status": status},
            )
        else:
            self.release()
        return f"parked:{status}"

    def _drop_prestarted(self) -> None:
        """The loop will not dispatch the step whose ``started`` record was pre-committed."""
        if self.prestarted is not None:
            StepRun.objects.filter(pk=self.prestarted[1], status=R.STARTED).delete()
            self.prestarted = None

    # -- the hot path: checkpoint a succeeded step --

    def checkpoint_success(
        self,
        step: dict[str, Any],
        attempt: int,
        result: StepResult,
        started_at: datetime,
        run_id: int | None,
    ) -> str:
        """Record the succeeded StepRun, its event and the new cursor; return the job's status.
        Guarded by the lease token (a worker that lost its lease cannot write) and by the
        revision (a lifecycle service that journaled meanwhile makes us rebuild the event).
        After the last step the same statement completes the job (PostgreSQL)."""
        if self.before_write is not None:
            self.before_write()
        job = self.job
        assert job is not None
        now = timezone.now()
        payload = {
            "step": step["name"],
            "step_index": job.cursor,
            "attempt": attempt,
            "duration_ms": int((now - started_at).total_seconds() * 1000),
        }
        last = job.cursor + 1 == job.step_count
        for _ in range(20):
            prev_rev, prev_hash = job.revision, job.last_event_hash
            event = event_build(
                job,
                type="step_succeeded",
                actor=ENGINE_ACTOR,
                reason_code="step_succeeded",
                payload=payload,
            )
            done = None
            if last and self.backend.completes_in_write:
                done = event_build(
                    job,
                    type=COMPLETE.event,
                    actor=ENGINE_ACTOR,
                    reason_code=COMPLETE.reasons[0],
                    payload={"steps": job.step_count},
                )
            status = self.backend.write_success(
                self, prev_rev, event, done, step, attempt, result, started_at, now, run_id
            )
            if status is not None:
                job.cursor += 1
                job.status = status
                if done is not None and status != S.COMPLETED:  # paused/stopped meanwhile
                    job.revision, job.last_event_hash = event.revision, event.hash
                return status
            job.revision, job.last_event_hash = prev_rev, prev_hash
            fresh = (
                Job.objects.filter(pk=job.pk)
                .values("lease_token", "revision", "last_event_hash", "status")
                .first()
            )
            if fresh is None or fresh["lease_token"] != self.token:
                self.lease_lost = True
                raise _LeaseLost
            job.revision, job.last_event_hash, job.status = (
                fresh["revision"],
                fresh["last_event_hash"],
                fresh["status"],
            )
        raise _LeaseLost  # pragma: no cover - 20 concurrent journal writes in a row

    # -- locked transitions (not the hot path) --

    def _locked(self) -> Job:
        """Inside a transaction: the job row, locked, after checking we still hold the lease."""
        if self.before_write is not None:
            self.before_write()
        job = Job.objects.select_for_update().get(pk=self.job.pk)  # type: ignore[union-attr]
        if job.lease_token != self.token:
            self.lease_lost = True
            raise _LeaseLost
        self.job = job
        return job

    @staticmethod
    def _release_fields(job: Job) -> list[str]:
        job.lease_token = None
        job.lease_owner = ""
        job.lease_expires_at = None
        return ["lease_token", "lease_owner", "lease_expires_at"]

    def _park_with_checkpoint(self, job: Job, **checkpoint: Any) -> None:
        """Inside the locked transaction: release the lease, refresh the outputs mirror and write
        the checkpoint that parks the job (its ``new_status`` comes with the checkpoint)."""
        job.outputs = self.outputs
        released = self._release_fields(job)
        checkpoint_write(
            job, actor=ENGINE_ACTOR, update_fields=[*released, "outputs"], **checkpoint
        )

    def _transition(
        self,
        *,
        status: str | None,
        event_type: str,
        reason: str,
        payload: dict[str, Any],
        release: bool = True,
        wake_at: datetime | None = None,
        before_event: Callable[[Job], None] | None = None,
        cursor: int | None = None,
    ) -> Job:
        """One locked transaction: optional StepRun work, then the transition of the lifecycle
        table (jobs.states) journaled as ``event_type`` to ``status`` (None: unchanged)."""
        row = transition_find(event_type, status, reason)
        with transaction.atomic():
            job = self._locked()
            if before_event is not None:
                before_event(job)
            fields = ["outputs", "wake_at"]
            job.outputs = self.outputs
            if cursor is not None:
                job.cursor = cursor
                fields.append("cursor")
            if (
                status == S.WAITING
                and job.deadline is not None
                and (wake_at is None or job.deadline < wake_at)
            ):
                wake_at = job.deadline  # wake to fail it with job_timeout when the deadline passes
            job.wake_at = wake_at
            if release:
                fields += self._release_fields(job)
            transition_apply(
                job,
                row,
                actor=ENGINE_ACTOR,
                payload=payload,
                to=status,
                reason=reason,
                update_fields=fields,
            )
            if wake_at is not None:
                advance_enqueue(job.job_id, at=wake_at)
        return job

    def release(self, *, reenqueue: bool = False) -> None:
        """Give the lease back without an event (the status does not change)."""
        if self.before_write is not None:
            self.before_write()
        with transaction.atomic():
            n = Job.objects.filter(pk=self.job.pk, lease_token=self.token).update(  # type: ignore[union-attr]
                lease_token=None,
                lease_owner="",
                lease_expires_at=None,
                outputs=self.outputs,
                updated_at=timezone.now(),
            )
            if n and reenqueue:
                advance_enqueue(self.job_id)
