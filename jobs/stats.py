"""Counters for the dashboard, ``GET /stats`` and ``gait jobs stats``: jobs by outcome, step
attempts, queue depth, recent reason codes and whether the deployment gates its jobs. A read
like the selectors, apart from them because it asks the identities which policy the deployment
binds (evidence packs read the selectors and must not depend on approvals)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from approvals.identities import deployment_gate_status
from gaitweb.lib.actors import Actor
from gaitweb.lib.canonical import iso_utc
from jobs.models import FINISHED_STATUSES, JobEvent, JobStatus, StepRun, StepRunStatus
from jobs.selectors import identity_scoped, jobs_visible


def _step_counters(visible: Any) -> dict[str, int]:
    """Attempts of the visible jobs' steps, one aggregate: every attempt that started, those
    running now, how they ended, and how many were retries (attempt 2 or later)."""
    runs = StepRun.objects.filter(job__in=visible.order_by().values("id"))
    return runs.aggregate(
        started=Count("id"),
        running=Count("id", filter=Q(status=StepRunStatus.STARTED)),
        succeeded=Count("id", filter=Q(status=StepRunStatus.SUCCEEDED)),
        failed=Count("id", filter=Q(status__in=(StepRunStatus.FAILED, StepRunStatus.TIMED_OUT))),
        timed_out=Count("id", filter=Q(status=StepRunStatus.TIMED_OUT)),
        cancelled=Count("id", filter=Q(status=StepRunStatus.CANCELLED)),
        in_doubt=Count("id", filter=Q(status=StepRunStatus.IN_DOUBT)),
        retried=Count("id", filter=Q(attempt__gt=1)),
    )


def job_stats(*, actor: Actor | None, recent: int = 200) -> dict[str, Any]:
    """Counters in the spirit of Tau's state: totals by outcome, queue depth (runnable jobs and
    ready broker rows), running jobs, the reason codes of the most recent events, and whether
    the deployment gates its jobs (``gate``: mode ``gated`` / ``partially_gated`` /
    ``ungated``, a warning to print, and the unfinished jobs bound to no policy). Cheap enough
    to poll: one GROUP BY on jobs, a few small counts, the latest ``recent`` events.

    The job counts and reason codes are of the jobs ``actor`` may see (``jobs_visible``); the
    broker's queue depth and the gate mode are the deployment's, since they name no job or
    identity."""
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
    codes = Counter(events.values_list("reason_code", flat=True)[:recent])
    return {
        "created": created,
        "started": started,
        "succeeded": by_status.get(JobStatus.COMPLETED, 0),
        "failed": by_status.get(JobStatus.FAILED, 0),
        "cancelled": by_status.get(JobStatus.CANCELLED, 0),
        "running": by_status.get(JobStatus.RUNNING, 0),
        "waiting": by_status.get(JobStatus.WAITING, 0),
        "queued": by_status.get(JobStatus.QUEUED, 0),
        "decision_needed": by_status.get(JobStatus.DECISION_NEEDED, 0),
        "by_status": {k: by_status.get(k, 0) for k in JobStatus.values},
        "queue_depth": {
            "jobs_runnable": by_status.get(JobStatus.QUEUED, 0)
            + visible.filter(status=JobStatus.WAITING, wake_at__lte=now).count(),
            "broker_ready": OrmQ.objects.using(Conf.ORM).filter(lock__lte=now).count(),
            "broker_delayed_or_taken": OrmQ.objects.using(Conf.ORM).filter(lock__gt=now).count(),
        },
        "recent_reason_codes": dict(codes.most_common()),
        "steps": _step_counters(visible),
        # "ungated" said loudly: with no policy assigned, every tool call is allowed
        "gate": {**deployment_gate_status(), "ungated_active_jobs": ungated_active},
        "at": iso_utc(now),
    }
