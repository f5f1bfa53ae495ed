"""The heartbeat: one daemon thread per worker process that keeps the running job's lease and
watches for a stop.

django-q2 runs one task at a time per process, so the thread serves whichever runner is
attached: it renews the lease every ``HEARTBEAT_SECONDS`` and, while a step runs, polls the
job's status every ``STOP_POLL_SECONDS`` (on PostgreSQL it also waits on LISTEN for stop and
cancel announcements, jobs/wake.py): a stop or cancel sets the step context's ``stopped`` flag
and kills a command's process group. It keeps its own database connection open between tasks
(opening one per task would cost more than the tasks themselves)."""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import connection
from django.utils import timezone

from jobs.engine.lease import _Attempt, _token_param, engine_setting
from jobs.models import Job, JobStatus, StepRun, StepRunStatus
from jobs.wake import PREEMPT_CHANNEL, Listener, listens_for_stops

if TYPE_CHECKING:
    from jobs.engine.runner import _Runner

log = logging.getLogger("gaitweb.engine")
S = JobStatus


class _Heartbeat:
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
            poll = float(engine_setting("STOP_POLL_SECONDS", 0.2))
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
                self.used_db = heartbeat_tick(runner, look=named) or self.used_db
            except Exception:  # a broken connection must not kill the thread
                log.exception("heartbeat failed for %s", runner.job_id)
                try:
                    connection.close()
                except Exception:
                    pass


_heartbeat: _Heartbeat | None = None
_heartbeat_lock = threading.Lock()


def heartbeat_get() -> _Heartbeat:
    """This process's heartbeat (started on first use, and again after a fork)."""
    global _heartbeat
    with _heartbeat_lock:
        if _heartbeat is None or _heartbeat.pid != os.getpid() or not _heartbeat.thread.is_alive():
            _heartbeat = _Heartbeat()
        return _heartbeat


def heartbeat_tick(runner: _Runner, *, look: bool = False) -> bool:
    """Renew the lease when due; while a step runs (or when ``look``: a stop of this job was
    announced), look for a stop. True if it used the database."""
    now_m = time.monotonic()
    attempt = runner.attempt
    lease_s = float(engine_setting("LEASE_SECONDS"))
    renew = now_m - runner.last_renew >= float(engine_setting("HEARTBEAT_SECONDS"))
    if not renew and attempt is None and not look:
        return False
    table = Job._meta.db_table
    with connection.cursor() as cur:
        if renew:
            cur.execute(
                f'UPDATE "{table}" SET "lease_expires_at" = %s WHERE "job_id" = %s AND "lease_token" = %s RETURNING "status"',
                [
                    timezone.now() + timedelta(seconds=lease_s),
                    runner.job_id,
                    _token_param(runner.token),
                ],
            )
            runner.last_renew = now_m
        else:
            cur.execute(
                f'SELECT "status" FROM "{table}" WHERE "job_id" = %s AND "lease_token" = %s',
                [runner.job_id, _token_param(runner.token)],
            )
        row = cur.fetchone()
    if row is None:
        runner.lease_lost = True
    elif row[0] in (S.EMERGENCY_STOPPED, S.CANCELLED):
        runner.preempted = row[0]
    attempt = runner.attempt  # it may have started meanwhile (the attempt looks at preempted)
    if attempt is None:
        return True
    # python steps cannot be killed: a timeout only raises ctx.stopped (commands time out
    # themselves and are killed)
    timed_out = attempt.ctx.step["kind"] == "python" and now_m > attempt.deadline
    if runner.lease_lost or runner.preempted or timed_out:
        attempt.ctx.stop_event.set()
    _save_live_output(attempt, now_m)
    return True


def _save_live_output(attempt: _Attempt, now_m: float) -> None:
    """A running command's stdout/stderr tails onto its ``started`` StepRun, about every
    LIVE_OUTPUT_SECONDS, so the dashboard and the API show them while it runs. Only a row still
    ``started``: the attempt's own outcome always wins."""
    live = attempt.ctx.live_output
    if live is None or attempt.run_id is None:
        return
    if now_m - attempt.output_saved_at < float(engine_setting("LIVE_OUTPUT_SECONDS", 1.0)):
        return
    attempt.output_saved_at = now_m
    tails = live()
    if tails == attempt.output_saved:
        return
    attempt.output_saved = tails
    StepRun.objects.filter(pk=attempt.run_id, status=StepRunStatus.STARTED).update(
        stdout=tails[0], stderr=tails[1]
    )
