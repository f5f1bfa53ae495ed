"""The durable execution engine (docs/engine.md).

``advance(job_id)`` — run as a django-q2 task (jobs/tasks.py) — is the only entry point that
executes steps. It is safe to deliver any number of times:

1. **Claim.** With the job row locked: take a lease (``lease_token``, ``lease_owner``,
   ``lease_expires_at``) only if the job is queued, waiting and due, or running with no lease or
   an expired one. Anything else (a lease held by a live worker, a paused or stopped job, a
   duplicate delivery) exits without writing. The claim journals ``started`` (from queued or
   waiting) or ``recovered`` (an expired lease: the previous worker died).
2. **Loop** while the lease is held: control state (paused → park; stopped / cancelled →
   ``dispatch_blocked``), deadline, time slice, the gate, then the step at ``cursor``.
3. **Checkpoint** each success in ONE statement guarded by the lease token and the revision
   (PostgreSQL: a data-modifying CTE that updates the job, inserts the StepRun and the event and
   returns the job's status: one round trip, one commit).
4. **Park** (sleep, wait_event, approval, retry backoff, pause) by releasing the lease; timers
   are delayed broker rows (jobs/broker.py), not a held worker.

A heartbeat thread (one per worker process) renews the lease every ``HEARTBEAT_SECONDS`` and,
while a step runs, polls the job's status every ``STOP_POLL_SECONDS``: a stop or cancel sets the
step context's ``stopped`` flag and kills a command's process group.

A non-idempotent step's ``started`` StepRun is committed before it runs. If its worker dies,
the next claim finds that row, marks it ``in_doubt`` and moves the job to ``decision_needed``
with a decision-needed checkpoint; approving and resuming runs the step again. Idempotent steps
are simply retried.

``sweep()`` re-enqueues jobs whose lease expired or whose wake-up is due or lost. It re-enqueues
itself through the delayed broker every ``SWEEP_SECONDS``; a django-q2 Schedule
(``engine_bootstrap``) restarts the chain if it dies, and a token in the cache keeps one chain.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone
from django_q.models import OrmQ

from approvals.assignments import deployment_gate_status
from gaitweb.actors import Actor, Scope
from gaitweb.canonical import iso_utc
from gaitweb.errors import Conflict, InvalidInput, LimitExceeded
from jobs.journal import event_append, event_build
from jobs.models import (
    FINISHED_STATUSES,
    CheckpointType,
    Job,
    JobEvent,
    JobStatus,
    StepRun,
    StepRunStatus,
)
from jobs.spec import PARKING_KINDS, SIGNAL_NAME_RE, step_backoff_seconds, step_gate_tool
from jobs.steps import StepContext, StepResult, step_execute
from jobs.wake import PREEMPT_CHANNEL, Listener, listens_for_stops

log = logging.getLogger("gaitweb.engine")

S = JobStatus
R = StepRunStatus
ENGINE_ACTOR = "gaitweb-engine"
ADVANCE_TASK = "jobs.tasks.advance"
SWEEP_TASK = "jobs.tasks.sweep"
SWEEP_SCHEDULE_NAME = "gaitweb-engine-sweep"
SWEEP_TOKEN_KEY = "gaitweb:engine:sweep:token"
SWEEP_BEAT_KEY = "gaitweb:engine:sweep:beat"
# Reason codes of a step that gives up (docs/lifecycle.md).
FAIL_SPAWN = "job_spawn_failed"
FAIL_EXIT = "job_non_zero_exit"
FAIL_TIMEOUT = "job_timeout"
FAIL_RUNTIME = "job_runtime_error"
FAIL_NON_RETRYABLE = "step_non_retryable"


def _gait(name: str, default: Any = None) -> Any:
    return settings.GAIT.get(name, default)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- wake-ups ----------------------------------------------------------------------------------


def advance_enqueue(job_id: str, *, at: datetime | None = None) -> None:
    """Deliver ``advance(job_id)`` now, or not before ``at`` (a delayed ORM broker row, written
    with a NOTIFY on PostgreSQL: jobs/broker.py). Call it inside the transaction that made the
    job runnable (jobs.wake.job_wake does): the row commits or rolls back with it."""
    from django_q.tasks import async_task

    from jobs.broker import DelayedORM

    # django-q2's per-task timeout must not kill a slice whose step may legitimately run up to
    # STEP_TIMEOUT_MAX. (A broker re-delivery of a long-running task after Q_CLUSTER["retry"]
    # is harmless: the lease is held, the duplicate exits.)
    timeout = int(float(_gait("STEP_TIMEOUT_MAX")) + float(_gait("SLICE_SECONDS")) + 60)
    async_task(
        ADVANCE_TASK,
        job_id,
        q_options={
            "timeout": max(timeout, _q_timeout()),
            "broker": DelayedORM(at=at),
            "save": False,
            "task_name": f"advance {job_id}"[:100],
        },
    )


def _q_timeout() -> int:
    q: dict[str, Any] = settings.Q_CLUSTER  # type: ignore[assignment]
    return int(q.get("timeout") or 0)


# --- the heartbeat -----------------------------------------------------------------------------


class _Heartbeat:
    """One daemon thread per worker process (django-q2 runs one task at a time per process).

    It serves whichever runner is registered: renews its lease, and while a step runs polls the
    job's status so a stop or cancel preempts the step within ``STOP_POLL_SECONDS``. It keeps its
    own database connection open between tasks (opening one per task would cost more than the
    tasks themselves)."""

    def __init__(self) -> None:
        self.runner: _Runner | None = None
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.pid = os.getpid()
        self.used_db = False
        self.thread = threading.Thread(target=self._loop, name="gaitweb-heartbeat", daemon=True)
        self.thread.start()

    def attach(self, runner: _Runner) -> None:
        with self.lock:
            self.runner = runner
        self.wake.set()

    def detach(self, runner: _Runner) -> None:
        with self.lock:
            if self.runner is runner:
                self.runner = None

    def _loop(self) -> None:
        # PostgreSQL: stops and cancels are announced (jobs.wake.job_preempt_notify), so the
        # thread waits on LISTEN and looks at the status at once when its job is named; the
        # status poll below stays as the fallback
        listener = Listener((PREEMPT_CHANNEL,)) if listens_for_stops() else None
        while True:
            poll = float(_gait("STOP_POLL_SECONDS", 0.2))
            named = False
            if listener is not None:
                got = listener.wait(poll)
                with self.lock:
                    runner = self.runner
                named = runner is not None and any(p == runner.job_id for _, p in got)
            else:
                self.wake.wait(poll)
                self.wake.clear()
                with self.lock:
                    runner = self.runner
            if runner is None:
                if self.used_db:  # idle: give the connection back (it is reopened on demand)
                    self.used_db = False
                    connection.close()
                continue
            try:
                self.used_db = runner.heartbeat_tick(look=named) or self.used_db
            except Exception:  # a broken connection must not kill the thread
                log.exception("heartbeat failed for %s", runner.job_id)
                try:
                    connection.close()
                except Exception:
                    pass


_heartbeat: _Heartbeat | None = None
_heartbeat_lock = threading.Lock()


def _heartbeat_get() -> _Heartbeat:
    global _heartbeat
    with _heartbeat_lock:
        if _heartbeat is None or _heartbeat.pid != os.getpid() or not _heartbeat.thread.is_alive():
            _heartbeat = _Heartbeat()
        return _heartbeat


# --- the runner --------------------------------------------------------------------------------


class _LeaseLost(Exception):
    """Another worker holds the job now (our lease expired): stop without writing anything."""


@dataclass
class _Attempt:
    ctx: StepContext
    deadline: float  # time.monotonic() after which a python step is told to stop
    run_id: int | None = None  # the committed ``started`` StepRun (non-idempotent, command)
    output_saved_at: float = 0.0  # time.monotonic() the heartbeat last saved a command's tails
    output_saved: tuple[str, str] = ("", "")


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
    # (step_index, StepRun id, started_at) of a ``started`` record committed with the previous
    # step's checkpoint (see _write_success)
    prestarted: tuple[int, int, datetime] | None = None
    # the job's PolicyVersion (versions are append-only), read once per slice by _gate_allows
    policy: Any = None
    # called before the runner's own writes (jobs.durable: writes its buffered calls first)
    before_write: Callable[[], None] | None = None
    # the broker row that delivered this run, acknowledged by the claim (jobs.broker)
    broker_row: int | None = None

    # -- heartbeat side (runs on the heartbeat thread) --

    def heartbeat_tick(self, *, look: bool = False) -> bool:
        """Renew the lease when due; while a step runs (or when ``look``: a stop of this job was
        announced), look for a stop. True if it used the database."""
        now_m = time.monotonic()
        attempt = self.attempt
        lease_s = float(_gait("LEASE_SECONDS"))
        renew = now_m - self.last_renew >= float(_gait("HEARTBEAT_SECONDS"))
        if not renew and attempt is None and not look:
            return False
        table = Job._meta.db_table
        with connection.cursor() as cur:
            if renew:
                cur.execute(
                    f'UPDATE "{table}" SET "lease_expires_at" = %s WHERE "job_id" = %s AND "lease_token" = %s RETURNING "status"',
                    [
                        timezone.now() + timedelta(seconds=lease_s),
                        self.job_id,
                        _token_param(self.token),
                    ],
                )
                self.last_renew = now_m
            else:
                cur.execute(
                    f'SELECT "status" FROM "{table}" WHERE "job_id" = %s AND "lease_token" = %s',
                    [self.job_id, _token_param(self.token)],
                )
            row = cur.fetchone()
        if row is None:
            self.lease_lost = True
        elif row[0] in (S.EMERGENCY_STOPPED, S.CANCELLED):
            self.preempted = row[0]
        attempt = self.attempt  # it may have started meanwhile (_run_step looks at preempted)
        if attempt is None:
            return True
        # python steps cannot be killed: a timeout only raises ctx.stopped (commands time out
        # themselves and are killed)
        timed_out = attempt.ctx.step["kind"] == "python" and now_m > attempt.deadline
        if self.lease_lost or self.preempted or timed_out:
            attempt.ctx.stop_event.set()
        self._save_live_output(attempt, now_m)
        return True

    @staticmethod
    def _save_live_output(attempt: _Attempt, now_m: float) -> None:
        """A running command's stdout/stderr tails onto its ``started`` StepRun, about every
        LIVE_OUTPUT_SECONDS, so the dashboard and the API show them while it runs. Only a row
        still ``started``: the attempt's own outcome always wins."""
        live = attempt.ctx.live_output
        if live is None or attempt.run_id is None:
            return
        if now_m - attempt.output_saved_at < float(_gait("LIVE_OUTPUT_SECONDS", 1.0)):
            return
        attempt.output_saved_at = now_m
        tails = live()
        if tails == attempt.output_saved:
            return
        attempt.output_saved = tails
        StepRun.objects.filter(pk=attempt.run_id, status=R.STARTED).update(
            stdout=tails[0], stderr=tails[1]
        )

    # -- claim --

    @staticmethod
    def _claim_kind(job: Job, now: datetime) -> tuple[str, str] | None:
        """(event type, reason) of claiming ``job`` now ("" for a silent continuation), or None
        if this delivery must not claim it."""
        if job.step_count == 0:
            return None
        if job.status == S.QUEUED:
            return "started", "job_started"
        if job.status == S.WAITING:
            if job.wake_at is None or job.wake_at > now:
                return None  # early or duplicate wake-up; the due one will come
            return "started", "job_started"
        if job.status == S.RUNNING:
            if job.lease_token is None:
                return "", ""  # the previous slice yielded: just continue
            if job.lease_expires_at is None or job.lease_expires_at < now:
                return "recovered", "job_recovered_after_restart"
            return None  # held by a live worker: a duplicate delivery
        return None

    def _claim_payload(self, job: Job, event_type: str, previous_owner: str) -> dict[str, Any]:
        payload: dict[str, Any] = {"worker": self.owner, "cursor": job.cursor}
        if event_type == "recovered":
            payload["previous_worker"] = previous_owner
        return payload

    def claim(self) -> bool:
        if connection.vendor == "postgresql":
            return self._claim_pg()
        return self._claim_locked()

    def _claim_pg(self) -> bool:
        """Optimistic claim, two round trips and one commit: read the job with the StepRuns of
        its current step (and earlier outputs), then one statement takes the lease and journals
        the claim only if nothing changed since the read (revision, status and lease token)."""
        from django.db.models.expressions import RawSQL

        st = StepRun._meta.db_table
        jt = Job._meta.db_table
        runs_sql = (
            "SELECT coalesce(json_agg(json_build_object('id', r.id, 'attempt', r.attempt, 'status', r.status, "
            "'error', r.error, 'input', r.input, 'output', r.output, 'worker', r.worker) ORDER BY r.attempt), '[]'::json) "
            f'FROM "{st}" r WHERE r.job_id = "{jt}"."id" AND r.step_index = "{jt}"."cursor"'
        )
        outputs_sql = (
            f'CASE WHEN "{jt}"."cursor" > 0 THEN (SELECT json_object_agg(o.step_name, o.output) '
            f'FROM "{st}" o WHERE o.job_id = "{jt}"."id" AND o.status = \'succeeded\') END'
        )
        for _ in range(10):
            now = timezone.now()
            job = (
                Job.objects.filter(job_id=self.job_id)
                .annotate(_runs=RawSQL(runs_sql, []), _outputs=RawSQL(outputs_sql, []))
                .first()
            )
            if job is None:
                return False
            kind = self._claim_kind(job, now)
            if kind is None:
                return False
            event_type, reason = kind
            lease = now + timedelta(seconds=float(_gait("LEASE_SECONDS")))
            old = {"revision": job.revision, "status": job.status, "token": job.lease_token}
            previous_owner = job.lease_owner
            job.status, job.lease_token, job.lease_owner = S.RUNNING, self.token, self.owner[:128]
            job.lease_expires_at, job.wake_at = lease, None
            job.started_at = job.started_at or now
            params: list[Any]
            if event_type:
                job.status_reason_code = reason
                event = event_build(
                    job,
                    type=event_type,
                    actor=ENGINE_ACTOR,
                    reason_code=reason,
                    payload=self._claim_payload(job, event_type, previous_owner),
                )
                sql = (
                    f'WITH j AS (UPDATE "{jt}" SET "status" = \'running\', "status_reason_code" = %s, '
                    '"lease_token" = %s, "lease_owner" = %s, "lease_expires_at" = %s, "wake_at" = NULL, '
                    '"started_at" = %s, "revision" = %s, "last_event_hash" = %s, "updated_at" = %s '
                    'WHERE "id" = %s AND "revision" = %s AND "status" = %s AND "lease_token" IS NOT DISTINCT FROM %s '
                    'RETURNING "id"), '
                    f'e AS (INSERT INTO "{JobEvent._meta.db_table}" ("job_id", "revision", "type", "actor", '
                    '"reason_code", "payload", "created_at", "prev_hash", "hash") '
                    "SELECT j.id, %s, %s, %s, %s, %s::jsonb, %s, %s, %s FROM j)"
                )
                params = [
                    reason, self.token, job.lease_owner, lease, job.started_at, event.revision, event.hash, now,
                    job.pk, old["revision"], old["status"], old["token"],
                    event.revision, event.type, event.actor, event.reason_code, json.dumps(event.payload),
                    event.created_at, event.prev_hash, event.hash,
                ]  # fmt: skip
            else:
                sql = (
                    f'WITH j AS (UPDATE "{jt}" SET "lease_token" = %s, "lease_owner" = %s, "lease_expires_at" = %s, '
                    '"updated_at" = %s WHERE "id" = %s AND "revision" = %s AND "status" = %s '
                    'AND "lease_token" IS NULL RETURNING "id")'
                )
                params = [
                    self.token,
                    job.lease_owner,
                    lease,
                    now,
                    job.pk,
                    old["revision"],
                    old["status"],
                ]
            runs = [_steprun_from_json(job, r) for r in job._runs]  # type: ignore[attr-defined]
            # the delivery's broker row is deleted by the claim (its acknowledgement), and a
            # non-idempotent step's ``started`` record rides on it: one commit for both
            if self.broker_row is not None:
                sql += f', q AS (DELETE FROM "{OrmQ._meta.db_table}" WHERE "id" = %s)'
                params.append(self.broker_row)
            start = self._claim_prestart(job, runs)
            if start is not None:
                step, attempt_no = start
                sql += (
                    f', n AS (INSERT INTO "{st}" ("job_id", "step_index", "step_name", "attempt", "status", '
                    '"idempotency_key", "input", "output", "error", "stdout", "stderr", "worker", "started_at", '
                    "\"finished_at\") SELECT j.id, %s, %s, %s, 'started', %s, %s::jsonb, NULL, NULL, '', '', %s, %s, NULL "
                    'FROM j RETURNING "id") SELECT (SELECT count(*) FROM j), (SELECT "id" FROM n)'
                )
                params += [
                    job.cursor, step["name"], attempt_no, self.idempotency_key(step),
                    json.dumps(step["with"]), job.lease_owner, now,
                ]  # fmt: skip
            else:
                sql += " SELECT (SELECT count(*) FROM j), NULL"
            with connection.cursor() as cur:
                cur.execute(sql, params)
                row = cur.fetchone()
            self.broker_row = None  # acknowledged, whether or not the claim went through
            if not row or not row[0]:
                continue  # someone changed the job since we read it: look again
            self.job = job
            self.last_renew = time.monotonic()
            self.outputs = dict(job._outputs or {})  # type: ignore[attr-defined]
            self.runs = runs
            if row[1] is not None:
                self.prestarted = (job.cursor, int(row[1]), now)
            if any(r.status == R.STARTED for r in self.runs):
                with transaction.atomic():
                    self._locked()
                    if self._in_doubt_check():
                        return False
            return True
        return False

    def _claim_prestart(self, job: Job, runs: list[StepRun]) -> tuple[dict[str, Any], int] | None:
        """(step, attempt) whose ``started`` record the claim may write: the step at the cursor
        when it is non-idempotent, runs here (no parking kind, no gate to ask first) and has no
        open attempt (that one is in doubt). The loop drops it if it does not dispatch the step
        (deadline passed, stopped meanwhile); a crash in between leaves it ``started``, which
        recovery reads as in doubt, as for any crash after a ``started`` commit."""
        if job.cursor >= job.step_count or job.policy_id is not None:
            return None
        step = job.spec["steps"][job.cursor]
        if step["idempotent"] or step["kind"] in PARKING_KINDS or step["kind"] == "workflow":
            return None  # a workflow records its own calls (jobs.durable)
        if any(r.status == R.STARTED for r in runs):
            return None
        return step, (runs[-1].attempt if runs else 0) + 1

    def _claim_locked(self) -> bool:
        """The claim with the row locked (SQLite, where IMMEDIATE transactions serialize)."""
        now = timezone.now()
        lease = now + timedelta(seconds=float(_gait("LEASE_SECONDS")))
        with transaction.atomic():
            job = Job.objects.select_for_update().filter(job_id=self.job_id).first()
            if job is None or (kind := self._claim_kind(job, now)) is None:
                return False
            event_type, reason = kind
            previous_owner = job.lease_owner
            job.status = S.RUNNING
            job.lease_token = self.token
            job.lease_owner = self.owner[:128]
            job.lease_expires_at = lease
            job.wake_at = None
            if self.broker_row is not None:  # the delivery's acknowledgement, in this commit
                OrmQ.objects.filter(pk=self.broker_row).delete()
                self.broker_row = None
            fields = ["status", "lease_token", "lease_owner", "lease_expires_at", "wake_at"]
            if job.started_at is None:
                job.started_at = now
                fields.append("started_at")
            if event_type:
                job.status_reason_code = reason
                event_append(
                    job,
                    type=event_type,
                    actor=ENGINE_ACTOR,
                    reason_code=reason,
                    payload=self._claim_payload(job, event_type, previous_owner),
                    update_fields=[*fields, "status_reason_code"],
                )
            else:
                job.save(update_fields=[*fields, "updated_at"])
            self.job = job
            self.last_renew = time.monotonic()
            self._load_state()
            if self._in_doubt_check():
                return False
            start = self._claim_prestart(job, self.runs)
            if start is not None:  # as on PostgreSQL: the started record rides on the claim
                step, attempt_no = start
                run = StepRun.objects.create(
                    job=job, step_index=job.cursor, step_name=step["name"], attempt=attempt_no,
                    status=R.STARTED, idempotency_key=self.idempotency_key(step), input=step["with"],
                    worker=job.lease_owner, started_at=now,
                )  # fmt: skip
                self.prestarted = (job.cursor, int(run.pk), now)
        return True

    def _load_state(self) -> None:
        job = self.job
        assert job is not None
        self.outputs = {}
        if job.cursor > 0:
            for name, output in StepRun.objects.filter(job=job, status=R.SUCCEEDED).values_list(
                "step_name", "output"
            ):
                self.outputs[name] = output
        self.runs = list(StepRun.objects.filter(job=job, step_index=job.cursor).order_by("attempt"))

    def _in_doubt_check(self) -> bool:
        """A non-idempotent attempt left ``started`` by a dead worker may have had its effect:
        do not repeat it silently. Runs inside the claim transaction. True if the job parked."""
        job = self.job
        assert job is not None
        if job.cursor >= job.step_count:
            return False
        step = job.steps[job.cursor]
        if step["kind"] in PARKING_KINDS:
            return False
        open_runs = [r for r in self.runs if r.status == R.STARTED]
        if not open_runs:
            return False
        now = timezone.now()
        if step["idempotent"]:
            # running it again is safe: close the lost attempt (it counts toward the retry
            # budget) so the next one is numbered after it (GAIT_ATTEMPT, ctx.attempt)
            for r in open_runs:
                r.status = R.FAILED
                r.finished_at = now
                r.error = {
                    "type": "worker_lost",
                    "message": "the worker running this attempt stopped before recording its outcome",
                    "retryable": True,
                    "worker": r.worker,
                }
                r.save(update_fields=["status", "finished_at", "error"])
            return False
        for r in open_runs:
            r.status = R.IN_DOUBT
            r.finished_at = now
            r.error = {
                "type": "in_doubt",
                "message": "the worker running this attempt stopped before recording its outcome",
                "retryable": False,
                "worker": r.worker,
            }
            r.save(update_fields=["status", "finished_at", "error"])
        self._park_with_checkpoint(
            job,
            type=CheckpointType.DECISION_NEEDED,
            summary=f"Step {step['name']} may have run (attempt {open_runs[-1].attempt}); its worker stopped before recording the outcome.",
            required_action=f"Check whether {step['name']} took effect; approve and resume to run it again, or cancel the job.",
            reason_code="step_in_doubt",
            new_status=S.DECISION_NEEDED,
            payload={
                "step": step["name"],
                "step_index": job.cursor,
                "attempt": open_runs[-1].attempt,
            },
        )
        return True

    # -- locked transitions (not the hot path) --

    def _park_with_checkpoint(self, job: Job, **checkpoint: Any) -> None:
        """Inside the locked transaction: release the lease, refresh the outputs mirror and write
        the checkpoint that parks the job (its ``new_status`` comes with the checkpoint)."""
        from jobs.services import checkpoint_write

        job.outputs = self.outputs
        released = self._release_fields(job)
        checkpoint_write(
            job, actor=ENGINE_ACTOR, update_fields=[*released, "outputs"], **checkpoint
        )

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
        """One locked transaction: optional StepRun work, the new status, one event."""
        with transaction.atomic():
            job = self._locked()
            if before_event is not None:
                before_event(job)
            fields = ["outputs"]
            job.outputs = self.outputs
            if status is not None:
                job.status = status
                job.status_reason_code = reason
                fields += ["status", "status_reason_code"]
                if status in (S.COMPLETED, S.FAILED):
                    job.finished_at = timezone.now()
                    fields.append("finished_at")
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
            fields.append("wake_at")
            if release:
                fields += self._release_fields(job)
            event_append(
                job,
                type=event_type,
                actor=ENGINE_ACTOR,
                reason_code=reason,
                payload=payload,
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

    # -- the hot path: checkpoint a succeeded step in one statement --

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
            if last and connection.vendor == "postgresql":
                done = event_build(
                    job,
                    type="completed",
                    actor=ENGINE_ACTOR,
                    reason_code="job_succeeded",
                    payload={"steps": job.step_count},
                )
            status = self._write_success(
                job, prev_rev, event, done, step, attempt, result, started_at, now, run_id
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

    def _write_success(
        self,
        job: Job,
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
        """One statement (a data-modifying CTE): update the job if we hold the lease and the
        revision is the one we chained from, record the StepRun and the event(s), return the
        job's status. ``done`` is the ``completed`` event of the last step: the job completes in
        the same statement unless it left ``running`` meanwhile (pause, stop)."""
        if connection.vendor != "postgresql":
            return self._write_success_orm(
                job, prev_rev, event, step, attempt, result, started_at, finished_at, run_id
            )
        output_json = json.dumps(result.output)
        jt, st, et = Job._meta.db_table, StepRun._meta.db_table, JobEvent._meta.db_table
        # The next step's ``started`` record rides on this commit when it will need one: a
        # non-idempotent step costs one commit, like an idempotent one. If the loop then does
        # not dispatch it (pause, stop, slice end), _drop_prestarted deletes the row; a crash in
        # between leaves it ``started``, which recovery treats as in doubt: the conservative
        # reading, exactly as for a crash right after a separate ``started`` commit.
        nxt = job.spec["steps"][job.cursor + 1] if job.cursor + 1 < job.step_count else None
        prestart = (
            nxt is not None
            and not nxt["idempotent"]
            and nxt["kind"] not in PARKING_KINDS
            and job.policy_id is None
        )
        params: list[Any] = []
        if done is None:
            job_sql = (
                f'UPDATE "{jt}" SET "cursor" = "cursor" + 1, "revision" = %s, "last_event_hash" = %s, '
                '"updated_at" = %s '
                'WHERE "id" = %s AND "lease_token" = %s AND "revision" = %s RETURNING "id", "status"'
            )
            # No indexed column changes here (the lease is renewed by the heartbeat, not by each
            # checkpoint), so PostgreSQL can update the job row in place (HOT) without touching
            # the job table's indexes: the difference is measurable at hundreds of steps/s.
            params += [event.revision, event.hash, finished_at, job.pk, self.token, prev_rev]
        else:
            # right-hand sides see the row before the update: "status" is the old status
            run = "\"status\" = 'running'"
            job_sql = (
                f'UPDATE "{jt}" SET "cursor" = "cursor" + 1, '
                f'"revision" = CASE WHEN {run} THEN %s ELSE %s END, '
                f'"last_event_hash" = CASE WHEN {run} THEN %s ELSE %s END, '
                f'"status_reason_code" = CASE WHEN {run} THEN \'job_succeeded\' ELSE "status_reason_code" END, '
                f'"finished_at" = CASE WHEN {run} THEN %s ELSE "finished_at" END, '
                f'"outputs" = CASE WHEN {run} THEN %s::jsonb ELSE "outputs" END, '
                f'"lease_token" = CASE WHEN {run} THEN NULL ELSE "lease_token" END, '
                f'"lease_owner" = CASE WHEN {run} THEN \'\' ELSE "lease_owner" END, '
                f'"lease_expires_at" = CASE WHEN {run} THEN NULL ELSE "lease_expires_at" END, '
                f'"status" = CASE WHEN {run} THEN \'completed\' ELSE "status" END, '
                '"updated_at" = %s '
                'WHERE "id" = %s AND "lease_token" = %s AND "revision" = %s RETURNING "id", "status"'
            )
            outputs = {**self.outputs, step["name"]: result.output}
            params += [
                done.revision, event.revision, done.hash, event.hash, finished_at,
                json.dumps(outputs), finished_at, job.pk, self.token, prev_rev,
            ]  # fmt: skip
        if run_id is None:
            step_sql = (
                f'INSERT INTO "{st}" ("job_id", "step_index", "step_name", "attempt", "status", "idempotency_key", '
                '"input", "output", "error", "stdout", "stderr", "worker", "started_at", "finished_at") '
                "SELECT j.id, %s, %s, %s, 'succeeded', %s, %s::jsonb, %s::jsonb, NULL, %s, %s, %s, %s, %s FROM j"
            )
            params += [
                job.cursor, step["name"], attempt, self.idempotency_key(step), json.dumps(step["with"]),
                output_json, result.stdout, result.stderr, self.owner[:128], started_at, finished_at,
            ]  # fmt: skip
        else:
            step_sql = (
                f'UPDATE "{st}" SET "status" = \'succeeded\', "output" = %s::jsonb, "stdout" = %s, "stderr" = %s, '
                f'"finished_at" = %s FROM j WHERE "{st}"."id" = %s'
            )
            params += [output_json, result.stdout, result.stderr, finished_at, run_id]
        event_cols = '("job_id", "revision", "type", "actor", "reason_code", "payload", "created_at", "prev_hash", "hash")'
        sql = f'WITH j AS ({job_sql}), s AS ({step_sql}), e AS (INSERT INTO "{et}" {event_cols} SELECT j.id, %s, %s, %s, %s, %s::jsonb, %s, %s, %s FROM j)'
        params += [
            event.revision, event.type, event.actor, event.reason_code, json.dumps(event.payload),
            event.created_at, event.prev_hash, event.hash,
        ]  # fmt: skip
        if done is not None:
            sql += (
                f', d AS (INSERT INTO "{et}" {event_cols} SELECT j.id, %s, %s, %s, %s, %s::jsonb, %s, %s, %s '
                "FROM j WHERE j.status = 'completed')"
            )
            params += [
                done.revision, done.type, done.actor, done.reason_code, json.dumps(done.payload),
                done.created_at, done.prev_hash, done.hash,
            ]  # fmt: skip
        if prestart:
            assert nxt is not None
            sql += (
                f', n AS (INSERT INTO "{st}" ("job_id", "step_index", "step_name", "attempt", "status", '
                '"idempotency_key", "input", "output", "error", "stdout", "stderr", "worker", "started_at", '
                "\"finished_at\") SELECT j.id, %s, %s, 1, 'started', %s, %s::jsonb, NULL, NULL, '', '', %s, %s, NULL "
                "FROM j WHERE j.status = 'running' RETURNING \"id\") "
                'SELECT j."status", (SELECT "id" FROM n) FROM j'
            )
            params += [
                job.cursor + 1,
                nxt["name"],
                self.idempotency_key(nxt),
                json.dumps(nxt["with"]),
                self.owner[:128],
                finished_at,
            ]
        else:
            sql += ' SELECT "status", NULL FROM j'
        with connection.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        if row is None:
            return None
        if row[1] is not None:
            self.prestarted = (job.cursor + 1, int(row[1]), finished_at)
        return str(row[0])

    def _write_success_orm(
        self,
        job: Job,
        prev_rev: int,
        event: JobEvent,
        step: dict[str, Any],
        attempt: int,
        result: StepResult,
        started_at: datetime,
        finished_at: datetime,
        run_id: int | None,
    ) -> str | None:
        """The same write for SQLite (whose IMMEDIATE transactions serialize writers)."""
        from django.db.models import F

        lease = finished_at + timedelta(seconds=float(_gait("LEASE_SECONDS")))
        with transaction.atomic():
            n = Job.objects.filter(pk=job.pk, lease_token=self.token, revision=prev_rev).update(
                cursor=F("cursor") + 1,
                revision=event.revision,
                last_event_hash=event.hash,
                updated_at=finished_at,
                lease_expires_at=lease,
            )
            if n != 1:
                return None
            if run_id is None:
                StepRun.objects.create(
                    job=job, step_index=job.cursor, step_name=step["name"], attempt=attempt, status=R.SUCCEEDED,
                    idempotency_key=self.idempotency_key(step), input=step["with"], output=result.output,
                    stdout=result.stdout, stderr=result.stderr, worker=self.owner[:128], started_at=started_at,
                    finished_at=finished_at,
                )  # fmt: skip
            else:
                StepRun.objects.filter(pk=run_id).update(
                    status=R.SUCCEEDED,
                    output=result.output,
                    stdout=result.stdout,
                    stderr=result.stderr,
                    finished_at=finished_at,
                )
            event.save(force_insert=True)
            return str(Job.objects.filter(pk=job.pk).values_list("status", flat=True).get())

    # -- the loop --

    def _drop_prestarted(self) -> None:
        """The loop will not dispatch the step whose ``started`` record was pre-committed."""
        if self.prestarted is not None:
            StepRun.objects.filter(pk=self.prestarted[1], status=R.STARTED).delete()
            self.prestarted = None

    def idempotency_key(self, step: dict[str, Any]) -> str:
        return f"{self.job_id}/{step['name']}"

    def run(self) -> str:
        try:
            claimed = self.claim()
        finally:
            if self.broker_row is not None:  # not claimed (or the claim failed): acknowledge
                OrmQ.objects.filter(pk=self.broker_row).delete()
                self.broker_row = None
        if not claimed:
            return "not_claimed"
        hb = _heartbeat_get()
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
        slice_end = time.monotonic() + float(_gait("SLICE_SECONDS"))
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
                    event_type="completed",
                    reason="job_succeeded",
                    payload={"steps": job.step_count},
                )
                return "completed"
            if job.deadline is not None and timezone.now() >= job.deadline:
                self._fail(
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
                from jobs.durable import workflow_advance  # jobs.durable imports this module

                outcome = workflow_advance(self, step)
                if outcome != "continue":
                    return outcome
                job = self.job
                assert job is not None
                continue
            if (
                job.policy_id is not None
                and kind not in PARKING_KINDS
                and not self._gate_allows(step)
            ):
                return "gated"
            if kind == "sleep":
                if not self._sleep(step):
                    return "waiting"
            elif kind == "wait_event":
                if not self._wait_event(step):
                    return "waiting"
            elif kind == "approval":
                if not self._approval(step):
                    return "decision_needed"
            else:
                outcome = self._run_step(step)
                if outcome != "continue":
                    return outcome
            job = self.job
            assert job is not None

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

    # -- running one attempt --

    def _round(self) -> list[StepRun]:
        """Attempts of the current step since its retry budget was last reset (an operator
        retry after giving up, a preemption, an in-doubt decision)."""
        out: list[StepRun] = []
        for r in self.runs:
            if r.status in (R.CANCELLED, R.IN_DOUBT) or (r.error or {}).get("gave_up"):
                out = []
            else:
                out.append(r)
        return out

    def _run_step(self, step: dict[str, Any]) -> str:
        job = self.job
        assert job is not None
        attempt_no = (self.runs[-1].attempt if self.runs else 0) + 1
        started_at = timezone.now()
        timeout = float(step["timeout"])
        if job.deadline is not None:
            timeout = max(min(timeout, (job.deadline - started_at).total_seconds()), 0.001)
        run_id = None
        if self.prestarted is not None and self.prestarted[0] == job.cursor:
            _, run_id, started_at = self.prestarted
            self.prestarted = None
        elif not step["idempotent"] or step["kind"] == "command":
            # a command always gets its ``started`` record: the heartbeat streams its output
            # tail into it, and a recovered attempt is numbered after the lost one
            run_id = self._record_started(step, attempt_no, started_at)
        ctx = StepContext(
            job=job,
            step=step,
            step_index=job.cursor,
            attempt=attempt_no,
            idempotency_key=self.idempotency_key(step),
            outputs=self.outputs,
            checkpoint_hook=self._progress_checkpoint,
        )
        self.attempt = _Attempt(ctx=ctx, deadline=time.monotonic() + timeout, run_id=run_id)
        if self.preempted:  # seen by the heartbeat since the loop looked: do not start it
            ctx.stop_event.set()
        if step["kind"] == "command":
            _heartbeat_get().wake.set()  # start polling for stop right away
        try:
            result = step_execute(ctx, timeout=timeout)
        except Exception as exc:  # an executor bug must still be recorded, not crash the loop
            log.exception("step %s of %s raised", step["name"], self.job_id)
            result = StepResult(
                "failed", error={"type": type(exc).__name__, "message": str(exc), "retryable": True}
            )
        finally:
            self.attempt = None
        if self.lease_lost:
            raise _LeaseLost
        if self.preempted and not result.ok:
            self._record_preempted(step, attempt_no, started_at, run_id, result)
            return f"preempted:{self.preempted}"
        if result.ok:
            self.checkpoint_success(step, attempt_no, result, started_at, run_id)
            self.outputs[step["name"]] = result.output
            self.runs = []
            return "continue"
        return self._attempt_failed(step, attempt_no, started_at, run_id, result)

    def _record_started(self, step: dict[str, Any], attempt: int, started_at: datetime) -> int:
        """Commit the ``started`` StepRun of a non-idempotent step before running it (one
        statement, guarded by the lease token)."""
        job = self.job
        assert job is not None
        st, jt = StepRun._meta.db_table, Job._meta.db_table
        cast = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
        sql = (
            f'INSERT INTO "{st}" ("job_id", "step_index", "step_name", "attempt", "status", "idempotency_key", '
            '"input", "output", "error", "stdout", "stderr", "worker", "started_at", "finished_at") '
            f"SELECT \"id\", %s, %s, %s, 'started', %s, {cast}, NULL, NULL, '', '', %s, %s, NULL "
            f'FROM "{jt}" WHERE "id" = %s AND "lease_token" = %s RETURNING "id"'
        )
        token = _token_param(self.token)
        params = [
            job.cursor,
            step["name"],
            attempt,
            self.idempotency_key(step),
            json.dumps(step["with"]),
            self.owner[:128],
            started_at,
            job.pk,
            token,
        ]
        with connection.cursor() as cur:  # autocommit: one statement, one round trip
            cur.execute(sql, params)
            row = cur.fetchone()
        if row is None:
            self.lease_lost = True
            raise _LeaseLost
        return int(row[0])

    def _steprun_finish(
        self,
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
        """Record how an attempt that did not succeed ended: finish its ``started`` record
        (one UPDATE) or write the whole row."""
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
            idempotency_key=self.idempotency_key(step), input=step["with"], error=error, stdout=result.stdout,
            stderr=result.stderr, worker=self.owner[:128], started_at=started_at, finished_at=now,
        )  # fmt: skip

    def _record_preempted(
        self,
        step: dict[str, Any],
        attempt: int,
        started_at: datetime,
        run_id: int | None,
        result: StepResult,
    ) -> None:
        error = {
            "type": "preempted",
            "message": f"the job was {self.preempted} while the step ran",
            "retryable": False,
        }

        def record(job: Job) -> None:
            self._steprun_finish(job, step, attempt, started_at, run_id, R.CANCELLED, result, error)

        self._transition(
            status=None,
            event_type="step_cancelled",
            reason=_preempt_reason(self.preempted),
            payload={
                "step": step["name"],
                "step_index": self.job.cursor,  # type: ignore[union-attr]
                "attempt": attempt,
                "status": self.preempted,
            },  # type: ignore[union-attr]
            before_event=record,
        )

    def _attempt_failed(
        self,
        step: dict[str, Any],
        attempt: int,
        started_at: datetime,
        run_id: int | None,
        result: StepResult,
    ) -> str:
        error = dict(
            result.error or {"type": "error", "message": "the step failed", "retryable": True}
        )
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
        failures = len(self._round()) + 1
        status = R.TIMED_OUT if result.status == "timed_out" else R.FAILED
        if retryable and failures < int(retry["max_attempts"]):
            delay = step_backoff_seconds(retry, failures)
            # the backoff runs from the end the attempt records: with pushed wake-ups the next
            # attempt starts within milliseconds of its due time
            failed_at = timezone.now()
            wake_at = failed_at + timedelta(seconds=delay)

            def record(job: Job) -> None:
                self._steprun_finish(
                    job, step, attempt, started_at, run_id, status, result, error, failed_at
                )

            self._transition(
                status=S.WAITING,
                event_type="step_retry_scheduled",
                reason="step_retry_scheduled",
                payload={
                    "step": step["name"],
                    "step_index": self.job.cursor,  # type: ignore[union-attr]
                    "attempt": attempt,
                    "error": _error_summary(error),
                    "delay_s": round(delay, 3),
                },  # type: ignore[union-attr]
                wake_at=wake_at,
                before_event=record,
            )
            return "retry_scheduled"
        if error.get("refused"):
            # the deployment refused the attempt (jobs.steps): an allow-list, a switch, a
            # missing secret; the error's type is the reason code
            reason = etype
        elif etype == "spawn_failed":
            reason = FAIL_SPAWN
        elif not retryable:
            reason = FAIL_NON_RETRYABLE
        elif result.status == "timed_out":
            reason = FAIL_TIMEOUT
        elif etype == "non_zero_exit":
            reason = FAIL_EXIT
        else:
            reason = FAIL_RUNTIME
        error["gave_up"] = True
        self._fail(
            step,
            reason,
            error,
            attempt=attempt,
            started_at=started_at,
            run_id=run_id,
            result=result,
            run_status=status,
        )
        return "failed"

    def _fail(
        self,
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
        def record(job: Job) -> None:
            if attempt is not None and started_at is not None and result is not None:
                self._steprun_finish(
                    job, step, attempt, started_at, run_id, run_status, result, error
                )

        self._transition(
            status=S.FAILED,
            event_type="failed",
            reason=reason,
            payload={
                "step": step["name"],
                "step_index": self.job.cursor,  # type: ignore[union-attr]
                "attempt": attempt,
                "error": _error_summary(error),
            },  # type: ignore[union-attr]
            before_event=record,
        )

    def _progress_checkpoint(self, type: str, summary: str) -> None:
        """``ctx.checkpoint()`` from a python step: a plan/progress checkpoint on the timeline."""
        from jobs.services import checkpoint_write

        if type not in (CheckpointType.PLAN, CheckpointType.PROGRESS):
            raise InvalidInput(
                "invalid_checkpoint_type",
                "a step may add plan or progress checkpoints",
                details={"field": "type"},
            )
        with transaction.atomic():
            job = self._locked()
            checkpoint_write(
                job, actor=ENGINE_ACTOR, type=type, summary=summary[:512], reason_code=""
            )

    # -- parking kinds --

    def _succeed_locked(
        self,
        job: Job,
        step: dict[str, Any],
        output: Any,
        payload_extra: dict[str, Any] | None = None,
    ) -> None:
        """Record a parking step's success (sleep done, signal received, approval granted)."""
        now = timezone.now()
        open_run = next((r for r in reversed(self.runs) if r.status == R.STARTED), None)
        if open_run is not None:
            open_run.status, open_run.output, open_run.finished_at = R.SUCCEEDED, output, now
            open_run.save(update_fields=["status", "output", "finished_at"])
            attempt = open_run.attempt
        else:
            attempt = (self.runs[-1].attempt if self.runs else 0) + 1
            StepRun.objects.create(
                job=job, step_index=job.cursor, step_name=step["name"], attempt=attempt, status=R.SUCCEEDED,
                idempotency_key=self.idempotency_key(step), input=step["with"], output=output,
                worker=self.owner[:128], started_at=now, finished_at=now,
            )  # fmt: skip
        job.lease_expires_at = now + timedelta(seconds=float(_gait("LEASE_SECONDS")))
        self.outputs[step["name"]] = output
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
        self.runs = []

    def _open_run(self, step: dict[str, Any], inputs: dict[str, Any]) -> StepRun:
        """The ``started`` StepRun that makes a timer durable (created on first arrival)."""
        job = self.job
        assert job is not None
        open_run = next((r for r in reversed(self.runs) if r.status == R.STARTED), None)
        if open_run is None:
            attempt = (self.runs[-1].attempt if self.runs else 0) + 1
            open_run = StepRun.objects.create(
                job=job, step_index=job.cursor, step_name=step["name"], attempt=attempt, status=R.STARTED,
                idempotency_key=self.idempotency_key(step), input={**step["with"], **inputs},
                worker=self.owner[:128], started_at=timezone.now(),
            )  # fmt: skip
            self.runs.append(open_run)
        return open_run

    def _sleep(self, step: dict[str, Any]) -> bool:
        """Durable timer: park as ``waiting`` until due; True once the sleep is over."""
        now = timezone.now()
        with transaction.atomic():
            job = self._locked()
            until = now + timedelta(seconds=float(step["with"]["duration"]))
            run = self._open_run(step, {"until": iso_utc(until)})
            due = datetime.fromisoformat(run.input["until"])
            if due <= now:
                self._succeed_locked(job, step, {"slept_until": run.input["until"]})
                return True
        self._transition(
            status=S.WAITING,
            event_type="waiting",
            reason="step_sleeping",
            payload={"step": step["name"], "step_index": job.cursor, "until": iso_utc(due)},
            wake_at=due,
        )
        return False

    def _wait_event(self, step: dict[str, Any]) -> bool:
        """Park as ``waiting`` until ``job_signal`` delivers the named signal (or it times out)."""
        name = step["with"]["signal"]
        now = timezone.now()
        with transaction.atomic():
            job = self._locked()
            timeout = step["with"].get("timeout")
            run = self._open_run(
                step, {"timeout_at": iso_utc(now + timedelta(seconds=timeout)) if timeout else None}
            )
            consumed = {
                o.get("signal_revision")
                for o in self.outputs.values()
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
                self._succeed_locked(
                    job, step, output, {"signal": name, "signal_revision": signal.revision}
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
            self._fail(
                step,
                FAIL_TIMEOUT,
                {"type": "timeout", "message": f"no {name!r} signal arrived in time"},
            )
            return False
        self._transition(
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

    def _approval(self, step: dict[str, Any], gate_result: dict[str, Any] | None = None) -> bool:
        """An approval step (or a gate verdict of require_approval): True once approved."""
        from approvals.models import ApprovalRequest, ApprovalStatus

        w = step["with"] if step["kind"] == "approval" else {}
        with transaction.atomic():
            job = self._locked()
            latest = (
                ApprovalRequest.objects.filter(job=job, step_index=job.cursor)
                .order_by("-created_at", "-id")
                .first()
            )
            if latest is not None and latest.status == ApprovalStatus.APPROVED:
                if step["kind"] == "approval":
                    self._succeed_locked(
                        job, step, {"approved": True, "approval_request": latest.request_id}
                    )
                return True
            if latest is not None and latest.status == ApprovalStatus.PENDING:
                request_id = latest.request_id
                job.status, job.status_reason_code = S.DECISION_NEEDED, "approval_requested"
                job.outputs = self.outputs
                fields = ["status", "status_reason_code", "outputs", *self._release_fields(job)]
                event_append(
                    job, type="waiting", actor=ENGINE_ACTOR, reason_code="approval_pending",
                    payload={"step": step["name"], "approval_request": request_id}, update_fields=fields,
                )  # fmt: skip
                return False
            self._approval_request(job, step, w, gate_result)
        return False

    def _approval_request(
        self, job: Job, step: dict[str, Any], w: dict[str, Any], gate_result: dict[str, Any] | None
    ) -> None:
        """Open the request and park in ``decision_needed`` (one event: approval_requested)."""
        from approvals.services import approval_request_create

        job.status, job.status_reason_code = S.DECISION_NEEDED, "approval_requested"
        job.outputs = self.outputs
        release = self._release_fields(job)
        approval_request_create(
            actor=Actor.system(ENGINE_ACTOR),
            job=job,
            summary=w.get("summary") or f"Step {step['name']} ({_step_tools(step)}) needs approval",
            step_index=job.cursor,
            step_name=step["name"],
            intent=_intent(job, step),
            gate_result=gate_result,
            required_approvals=w.get("required_approvals"),
            distinct_approvers=w.get("distinct_approvers"),
            expires_in=w.get("expires_in"),
            on_expiry=w.get("on_expiry") or "reject",
        )
        job.save(update_fields=["status", "status_reason_code", "outputs", *release])

    # -- the gate --

    def _gate_allows(self, step: dict[str, Any]) -> bool:
        """Ask the policy gate before dispatching ``step``. ``block`` → the job is blocked with a
        blocked checkpoint; ``require_approval`` → an approval request (once approved for this
        step, the step runs)."""
        job = self.job
        assert job is not None
        from approvals.gate import gate_evaluate
        from approvals.models import PolicyVersion

        try:
            if self.policy is None or self.policy.pk != job.policy_id:
                self.policy = PolicyVersion.objects.get(pk=job.policy_id)  # type: ignore[misc]
            result = gate_evaluate(intent=_intent(job, step), policy=self.policy).as_dict()
        except InvalidInput as exc:
            result = {"verdict": "block", "reason_codes": [exc.code], "violations": [exc.message]}
        except PolicyVersion.DoesNotExist:
            result = {"verdict": "block", "reason_codes": ["policy_unavailable"], "violations": []}
        verdict = result.get("verdict")
        if verdict in ("allow", "dry_run"):
            return True
        if verdict == "require_approval":
            return self._approval(step, gate_result=result)
        reasons = list(result.get("reason_codes") or ["policy_blocked"])
        with transaction.atomic():
            job = self._locked()
            self._park_with_checkpoint(
                job,
                type=CheckpointType.BLOCKED,
                summary=f"The policy blocked step {step['name']} ({_step_tools(step)}): {', '.join(reasons)}"[
                    :512
                ],
                reason_code="policy_blocked",
                new_status=S.BLOCKED,
                payload={
                    "step": step["name"],
                    "step_index": job.cursor,
                    "tool": step_gate_tool(step),
                    "label": step["tool"],
                    "gate": result,
                },
            )
        return False


def _steprun_from_json(job: Job, r: dict[str, Any]) -> StepRun:
    """A StepRun from the claim query's json_agg row (enough fields for the loop's decisions
    and for ``save(update_fields=…)``)."""
    return StepRun(
        id=r["id"],
        job=job,
        step_index=job.cursor,
        step_name=job.current_step_name,
        attempt=r["attempt"],
        status=r["status"],
        error=r["error"],
        input=r["input"] or {},
        output=r["output"],
        worker=r["worker"] or "",
    )


def _preempt_reason(status: str) -> str:
    """The reason code of a step or dispatch preempted by a stop or a cancel."""
    return (
        "emergency_stop_preempted" if status == S.EMERGENCY_STOPPED else "job_cancelled_during_run"
    )


def _token_param(token: uuid.UUID) -> Any:
    """A lease token as a raw-SQL parameter (SQLite stores UUIDs as 32 hex characters)."""
    return token if connection.vendor == "postgresql" else token.hex


def _error_summary(error: dict[str, Any]) -> dict[str, Any]:
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


def _step_tools(step: dict[str, Any]) -> str:
    """The gate's tool name for a step, with the caller's label when it says something else."""
    gate_tool = step_gate_tool(step)
    label = step.get("tool") or ""
    return gate_tool if label in ("", step["kind"], gate_tool) else f"{gate_tool}, labelled {label}"


def _intent(job: Job, step: dict[str, Any]) -> dict[str, Any]:
    """The intent the gate sees for a step, built only from what the server knows: the tool name
    derived from the step (``step_gate_tool``, never the caller's ``tool`` label), its
    arguments and targets, and the job's identity."""
    w = step["with"]
    targets: list[dict[str, str]] = []
    if step["kind"] == "http":
        from urllib.parse import urlsplit

        targets = [
            {"kind": "url", "value": w["url"], "operation": w["method"].lower()},
            {"kind": "host", "value": urlsplit(w["url"]).hostname or ""},
        ]
    elif step["kind"] == "command":
        exe = "sh" if w.get("shell") else w["argv"][0]
        targets = [
            {"kind": "other", "value": exe, "operation": "exec", "endpoint_class": "proc.exec"}
        ]
    return {
        "tool_name": step_gate_tool(step),
        "args": {k: v for k, v in w.items() if k != "env"},
        "targets": [t for t in targets if t["value"]],
        "context": {"identity": job.identity, "job_id": job.job_id},
    }


def advance(job_id: str, *, broker_row: int | None = None) -> str:
    """Run ``job_id`` for one time slice if this delivery can claim it; returns what happened
    (``not_claimed``, ``completed``, ``failed``, ``waiting``, ``yielded``, ``parked:<status>`` …).
    ``broker_row``: the django-q2 row that delivered it, acknowledged by the claim
    (jobs.broker.broker_row_to_task)."""
    _sweep_ensure_alive()
    return _Runner(job_id=job_id, broker_row=broker_row).run()


# --- signals -----------------------------------------------------------------------------------


def job_signal(*, actor: Actor, job_id: str, name: str, payload: Any = None) -> Job:
    """Deliver signal ``name`` with ``payload`` to a job. Signals are journaled
    (``signal_received``) and buffered: a ``wait_event`` step consumes the oldest unconsumed one
    of its name, whether it arrived before or while the job waited. A waiting job is woken."""
    from jobs.selectors import job_get

    actor.require(Scope.SUBMIT)
    if not isinstance(name, str) or not SIGNAL_NAME_RE.match(name):
        raise InvalidInput(
            "invalid_signal_name",
            "signal names are 1-128 letters, digits and . _ : - starting with a letter or digit",
            details={"field": "name"},
        )
    try:
        size = len(json.dumps(payload).encode("utf-8"))
    except (TypeError, ValueError):
        raise InvalidInput(
            "invalid_signal_payload", "the payload must be JSON", details={"field": "payload"}
        ) from None
    limit = int(_gait("STEP_OUTPUT_MAX_BYTES"))
    if size > limit:
        raise LimitExceeded(
            "signal_payload_too_large",
            f"the payload is larger than {limit} bytes",
            details={"field": "payload", "max_bytes": limit},
        )
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        if job.status in FINISHED_STATUSES or job.step_count == 0:
            raise Conflict(
                "invalid_transition",
                f"cannot signal a job that is {job.status}"
                + ("" if job.step_count else " (it has no steps)"),
                details={"job_id": job_id, "status": job.status},
            )
        fields: list[str] = []
        wake = job.status == S.WAITING
        if wake:
            job.wake_at = timezone.now()
            fields.append("wake_at")
        event_append(
            job,
            type="signal_received",
            actor=actor.name,
            reason_code="signal_received",
            payload={"name": name, "payload": payload},
            update_fields=fields,
        )
        if wake:
            advance_enqueue(job.job_id)
    return job


# --- the sweep ---------------------------------------------------------------------------------


def sweep(*, now: datetime | None = None, limit: int = 500) -> dict[str, int]:
    """Re-enqueue jobs a worker should be running but probably is not: running with an expired
    (or, after a yield, missing) lease, waiting past their wake-up, queued for a long time.
    A cache entry per job keeps one sweep from flooding the broker with duplicates."""
    from django.core.cache import cache

    now = now or timezone.now()
    grace = timedelta(seconds=1)
    lost_after = timedelta(seconds=max(60.0, 3 * float(_gait("LEASE_SECONDS"))))
    groups = {
        # jobs.models "job_running_lease" partial index
        "expired_lease": Job.objects.filter(status=S.RUNNING, step_count__gt=0).filter(
            Q(lease_expires_at__lt=now)
            | Q(lease_token__isnull=True, updated_at__lt=now - timedelta(seconds=5))
        ),
        # jobs.models "job_waiting_wake" partial index
        "due_wake": Job.objects.filter(status=S.WAITING, wake_at__lte=now - grace),
        "lost_queued": Job.objects.filter(
            status=S.QUEUED, step_count__gt=0, updated_at__lt=now - lost_after
        ),
    }
    counts: dict[str, int] = {}
    ttl = max(int(float(_gait("LEASE_SECONDS"))), 5)
    for group, qs in groups.items():
        n = 0
        for job_id in qs.values_list("job_id", flat=True)[:limit]:
            try:
                fresh = cache.add(
                    f"gaitweb:engine:swept:{job_id}",
                    1,
                    timeout=ttl if group != "lost_queued" else 60,
                )
            except Exception:  # no cache table: sweeping twice is harmless
                fresh = True
            if fresh:
                advance_enqueue(job_id)
                n += 1
        counts[group] = n
    return counts


def sweep_run(token: str) -> dict[str, Any]:
    """One link of the self-re-enqueueing sweep chain. A chain whose token is no longer the
    current one (a newer chain was started) ends here."""
    from django.core.cache import cache
    from django_q.tasks import async_task

    from jobs.broker import DelayedORM

    current = cache.get(SWEEP_TOKEN_KEY)
    if current is not None and current != token:
        return {"superseded": True}
    if current is None:
        cache.set(SWEEP_TOKEN_KEY, token, None)
    cache.set(SWEEP_BEAT_KEY, time.time(), None)
    try:
        counts = sweep()
        # approval requests past their expiry get their fallback (reject or escalate) here too,
        # so an expiry needs no one to act
        from approvals.services import approval_expire_due

        counts["approvals_expired"] = len(approval_expire_due())
    finally:
        at = timezone.now() + timedelta(seconds=float(_gait("SWEEP_SECONDS")))
        async_task(
            SWEEP_TASK,
            token,
            q_options={"broker": DelayedORM(at=at), "save": False, "task_name": "gaitweb sweep"},
        )
    return counts


def sweep_kick(*, force: bool = False) -> bool:
    """Start a sweep chain unless a live one beat recently. True if one was started."""
    from django.core.cache import cache
    from django_q.tasks import async_task

    from jobs.broker import DelayedORM

    period = float(_gait("SWEEP_SECONDS"))
    beat = cache.get(SWEEP_BEAT_KEY)
    if not force and beat is not None and time.time() - float(beat) < 2 * period + 1:
        return False
    token = uuid.uuid4().hex
    cache.set(SWEEP_TOKEN_KEY, token, None)
    cache.set(SWEEP_BEAT_KEY, time.time(), None)
    async_task(
        SWEEP_TASK,
        token,
        q_options={"broker": DelayedORM(), "save": False, "task_name": "gaitweb sweep"},
    )
    return True


_sweep_checked_at = 0.0


def _sweep_ensure_alive() -> None:
    """Workers check (at most every few seconds per process) that the sweep chain is alive, so
    a chain lost with a killed cluster restarts within seconds rather than at the next
    scheduler tick."""
    global _sweep_checked_at
    now_m = time.monotonic()
    if now_m - _sweep_checked_at < max(5.0, float(_gait("SWEEP_SECONDS"))):
        return
    _sweep_checked_at = now_m
    try:
        sweep_kick()
    except Exception:
        log.exception("cannot check the sweep chain")


def engine_bootstrap() -> dict[str, Any]:
    """Create (or repair) the django-q2 Schedule that keeps the sweep chain alive, and start a
    chain now. Idempotent: ``manage.py engine_bootstrap`` and ``make run`` call it."""
    from django_q.models import Schedule

    schedule, created = Schedule.objects.update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={
            "func": "jobs.tasks.sweep_kick",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    Schedule.objects.filter(func="jobs.tasks.sweep_kick").exclude(pk=schedule.pk).delete()
    started = sweep_kick(force=True)
    return {"schedule": schedule.name, "created": created, "sweep_started": started}


# --- stats -------------------------------------------------------------------------------------


def _step_counters(visible: Any) -> dict[str, int]:
    """Attempts of the visible jobs' steps, one aggregate: every attempt that started, those
    running now, how they ended, and how many were retries (attempt 2 or later)."""
    runs = StepRun.objects.filter(job__in=visible.order_by().values("id"))
    return runs.aggregate(
        started=Count("id"),
        running=Count("id", filter=Q(status=R.STARTED)),
        succeeded=Count("id", filter=Q(status=R.SUCCEEDED)),
        failed=Count("id", filter=Q(status__in=(R.FAILED, R.TIMED_OUT))),
        timed_out=Count("id", filter=Q(status=R.TIMED_OUT)),
        cancelled=Count("id", filter=Q(status=R.CANCELLED)),
        in_doubt=Count("id", filter=Q(status=R.IN_DOUBT)),
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
    from django_q.conf import Conf
    from django_q.models import OrmQ

    from jobs.selectors import identity_scoped, jobs_visible

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
        "succeeded": by_status.get(S.COMPLETED, 0),
        "failed": by_status.get(S.FAILED, 0),
        "cancelled": by_status.get(S.CANCELLED, 0),
        "running": by_status.get(S.RUNNING, 0),
        "waiting": by_status.get(S.WAITING, 0),
        "queued": by_status.get(S.QUEUED, 0),
        "decision_needed": by_status.get(S.DECISION_NEEDED, 0),
        "by_status": {k: by_status.get(k, 0) for k in S.values},
        "queue_depth": {
            "jobs_runnable": by_status.get(S.QUEUED, 0)
            + visible.filter(status=S.WAITING, wake_at__lte=now).count(),
            "broker_ready": OrmQ.objects.using(Conf.ORM).filter(lock__lte=now).count(),
            "broker_delayed_or_taken": OrmQ.objects.using(Conf.ORM).filter(lock__gt=now).count(),
        },
        "recent_reason_codes": dict(reasons.most_common()),
        "steps": _step_counters(visible),
        # "ungated" said loudly: with no policy assigned, every tool call is allowed
        "gate": {**deployment_gate_status(), "ungated_active_jobs": ungated_active},
        "at": iso_utc(now),
    }
