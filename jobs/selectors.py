"""Read-side helpers: fetch a job by public id, and its JSON snapshot for the CLI and API."""

from __future__ import annotations

from typing import Any

from gaitweb.canonical import iso_utc
from gaitweb.errors import InvalidInput, NotFound
from jobs.models import JOB_ID_RE, Checkpoint, Job


def job_id_check(job_id: Any) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise InvalidInput("missing_job_id", "a job id is required", details={"field": "job_id"})
    if not JOB_ID_RE.match(job_id):
        raise InvalidInput(
            "invalid_job_id",
            "job ids are 1-128 characters of letters, digits and . _ : - and start with a letter or digit",
            details={"field": "job_id", "pattern": JOB_ID_RE.pattern},
        )
    return job_id


def job_get(*, job_id: Any, for_update: bool = False) -> Job:
    """The job with this public id; ``for_update`` locks the row (call inside a transaction)."""
    job_id_check(job_id)
    qs = Job.objects.select_for_update() if for_update else Job.objects.select_related("policy")
    try:
        return qs.get(job_id=job_id)
    except Job.DoesNotExist:
        raise NotFound(
            "job_not_found", f"no job with id {job_id!r}", details={"job_id": job_id}
        ) from None


def job_snapshot(job: Job) -> dict[str, Any]:
    """The job as the CLI's ``job`` object and the API's job resource show it."""
    return {
        "job_id": job.job_id,
        "status": job.status,
        "stop_reason": job.stop_reason,
        "status_reason_code": job.status_reason_code,
        "identity": job.identity,
        "policy_digest": job.policy_digest,
        "policy_ref": job.policy_ref,
        "environment_fingerprint": job.environment_fingerprint,
        "revision": job.revision,
        "last_event_hash": job.last_event_hash,
        "cursor": job.cursor,
        "step_count": job.step_count,
        "current_step": job.current_step_name,
        "checkpoint_count": job.checkpoint_count,
        "labels": job.labels,
        "created_by": job.created_by,
        "created_at": iso_utc(job.created_at),
        "updated_at": iso_utc(job.updated_at),
        "started_at": iso_utc(job.started_at),
        "finished_at": iso_utc(job.finished_at),
        "stopped_at": iso_utc(job.stopped_at),
        "stopped_by": job.stopped_by,
        "wake_at": iso_utc(job.wake_at),
        "deadline": iso_utc(job.deadline),
        "retry_of": job.retry_of.job_id if job.retry_of_id and job.retry_of else None,
    }


def checkpoint_list(*, job: Job) -> list[Checkpoint]:
    return list(Checkpoint.objects.filter(job=job).order_by("checkpoint_id"))
