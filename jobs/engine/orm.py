"""Claim and checkpoint write with the ORM, inside a transaction that locks the job row
(jobs/engine/backend.py states what they do; jobs/engine/pg.py does the same in one statement).
SQLite's IMMEDIATE transactions serialize writers; on PostgreSQL the row lock does."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_q.models import OrmQ

from jobs.engine.backend import claim_kind, claim_payload, claim_prestart
from jobs.engine.lease import ENGINE_ACTOR, engine_setting
from jobs.journal import event_append
from jobs.models import Job, JobEvent, JobStatus, StepRun, StepRunStatus
from jobs.steps import StepResult

if TYPE_CHECKING:
    from jobs.engine.runner import _Runner

S = JobStatus
R = StepRunStatus


class OrmBackend:
    completes_in_write = False  # the last step's checkpoint leaves the completion to the loop

    def claim(self, runner: _Runner) -> bool:
        now = timezone.now()
        lease = now + timedelta(seconds=float(engine_setting("LEASE_SECONDS")))
        with transaction.atomic():
            job = Job.objects.select_for_update().filter(job_id=runner.job_id).first()
            if job is None or (kind := claim_kind(job, now)) is None:
                return False
            event_type, reason = kind
            previous_owner = job.lease_owner
            job.status = S.RUNNING
            job.lease_token = runner.token
            job.lease_owner = runner.owner[:128]
            job.lease_expires_at = lease
            job.wake_at = None
            if runner.broker_row is not None:  # the delivery's acknowledgement, in this commit
                OrmQ.objects.filter(pk=runner.broker_row).delete()
                runner.broker_row = None
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
                    payload=claim_payload(runner, job, event_type, previous_owner),
                    update_fields=[*fields, "status_reason_code"],
                )
            else:
                job.save(update_fields=[*fields, "updated_at"])
            runner.job = job
            runner.last_renew = time.monotonic()
            runner.outputs = _outputs(job)
            runner.runs = list(
                StepRun.objects.filter(job=job, step_index=job.cursor).order_by("attempt")
            )
            start = claim_prestart(job, runner.runs)
            if start is not None:  # as on PostgreSQL: the started record rides on the claim
                step, attempt_no = start
                run = StepRun.objects.create(
                    job=job, step_index=job.cursor, step_name=step["name"], attempt=attempt_no,
                    status=R.STARTED, idempotency_key=runner.idempotency_key(step), input=step["with"],
                    worker=job.lease_owner, started_at=now,
                )  # fmt: skip
                runner.prestarted = (job.cursor, int(run.pk), now)
        return True

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
        assert done is None  # completes_in_write is False
        job = runner.job
        assert job is not None
        lease = finished_at + timedelta(seconds=float(engine_setting("LEASE_SECONDS")))
        with transaction.atomic():
            n = Job.objects.filter(pk=job.pk, lease_token=runner.token, revision=prev_rev).update(
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
                    idempotency_key=runner.idempotency_key(step), input=step["with"], output=result.output,
                    stdout=result.stdout, stderr=result.stderr, worker=runner.owner[:128], started_at=started_at,
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


def _outputs(job: Job) -> dict[str, Any]:
    """The outputs of the job's succeeded steps, by step name."""
    if job.cursor == 0:
        return {}
    return dict(
        StepRun.objects.filter(job=job, status=R.SUCCEEDED).values_list("step_name", "output")
    )
