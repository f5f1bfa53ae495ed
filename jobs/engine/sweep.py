"""The sweep: re-enqueue jobs a worker should be running but probably is not.

It runs every ``SWEEP_SECONDS`` as a self-rescheduling chain of delayed tasks
(jobs.enqueue.TaskChain). A chain lost with a killed cluster is restarted by whichever notices
first: every cluster's broker (jobs.broker.ClusterORM), every worker at most every few seconds
(``sweep_ensure_alive``), and a one-minute django-q2 Schedule as a last resort
(``engine_bootstrap``)."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone
from django_q.models import Schedule

from approvals.services import approval_expire_due
from jobs.engine.lease import engine_setting
from jobs.enqueue import TaskChain, advance_enqueue
from jobs.models import Job, JobStatus

log = logging.getLogger("gaitweb.engine")
S = JobStatus
SWEEP_SCHEDULE_NAME = "gaitweb-engine-sweep"
SWEEP_CHAIN = TaskChain(task="jobs.tasks.sweep", key="gaitweb:engine:sweep", label="gaitweb sweep")
SWEEP_BEAT_KEY = SWEEP_CHAIN.beat_key


def sweep(*, now: datetime | None = None, limit: int = 500) -> dict[str, int]:
    """Re-enqueue jobs a worker should be running but probably is not: running with an expired
    (or, after a yield, missing) lease, waiting past their wake-up, queued for a long time.
    A cache entry per job keeps one sweep from flooding the broker with duplicates."""
    now = now or timezone.now()
    grace = timedelta(seconds=1)
    lost_after = timedelta(seconds=max(60.0, 3 * float(engine_setting("LEASE_SECONDS"))))
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
    ttl = max(int(float(engine_setting("LEASE_SECONDS"))), 5)
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


def sweep_run(token: str, seq: int = 0) -> dict[str, Any]:
    """One link of the sweep chain: sweep, expire due approval requests, enqueue the next link."""
    skip = SWEEP_CHAIN.link_begin(token, seq)
    if skip:
        return {skip: True}
    try:
        counts = sweep()
        # approval requests past their expiry get their fallback (reject or escalate) here too,
        # so an expiry needs no one to act
        counts["approvals_expired"] = len(approval_expire_due())
    finally:
        at = timezone.now() + timedelta(seconds=float(engine_setting("SWEEP_SECONDS")))
        SWEEP_CHAIN.link_next(token, seq, at=at)
    return counts


def sweep_kick(*, force: bool = False) -> bool:
    """Start a sweep chain unless a live one beat recently. True if one was started."""
    period = float(engine_setting("SWEEP_SECONDS"))
    return SWEEP_CHAIN.start(stale_after=2 * period + 1, force=force)


_sweep_checked_at = 0.0


def sweep_ensure_alive() -> None:
    """Workers check (at most every few seconds per process) that the sweep chain is alive, so
    a chain lost with a killed cluster restarts within seconds rather than at the next
    scheduler tick."""
    global _sweep_checked_at
    now_m = time.monotonic()
    if now_m - _sweep_checked_at < max(5.0, float(engine_setting("SWEEP_SECONDS"))):
        return
    _sweep_checked_at = now_m
    try:
        sweep_kick()
    except Exception:
        log.exception("cannot check the sweep chain")


def engine_bootstrap() -> dict[str, Any]:
    """Create (or repair) the django-q2 Schedule that keeps the sweep chain alive, and start a
    chain now. Idempotent: ``manage.py engine_bootstrap`` and ``make run`` call it."""
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
