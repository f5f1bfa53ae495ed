"""Idempotent job submission for the API (docs/api.md).

A submit carrying an ``Idempotency-Key`` header, or a client-chosen ``job_id``, records the
digest of its body next to the job it created. A retry with the same body gets the same job
back (``replayed``); the same key with a different body is a 409. The record and the job are
written in one transaction, so a crash between them leaves neither, and two identical
requests racing each other create one job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import IntegrityError

from gaitweb.lib import reasons
from gaitweb.lib.canonical import digest
from gaitweb.lib.errors import Conflict, GaitError, InvalidInput
from gaitweb.models import IdempotencyRecord
from jobs.models import Job

KEY_MAX = 255


def idempotency_key_check(key: Any) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > KEY_MAX or not key.isprintable():
        raise InvalidInput(
            reasons.INVALID_IDEMPOTENCY_KEY,
            f"Idempotency-Key must be 1-{KEY_MAX} printable characters",
            details={"header": "Idempotency-Key"},
        )
    return key.strip()


def _existing(owner: str, key: str, body_digest: str, *, code: str) -> Job | None:
    record = IdempotencyRecord.objects.select_related("job").filter(owner=owner, key=key).first()
    if record is None:
        return None
    if record.request_digest != body_digest:
        raise Conflict(
            code,
            "this key was already used for a submit with a different body"
            if code != "job_exists"
            else f"a job with id {record.job.job_id!r} already exists with a different body",
            details={"job_id": record.job.job_id},
            hint="use a new Idempotency-Key (or job_id) for a different job",
        )
    return record.job


def job_submit_idempotent(
    *,
    owner: str,
    header_key: str | None,
    body: dict[str, Any],
    submit: Callable[[Callable[[Job], object] | None], Job],
) -> tuple[Job, bool]:
    """Run ``submit`` at most once per key; returns ``(job, replayed)``.

    ``submit(in_transaction)`` must pass ``in_transaction`` on to ``jobs.services.job_submit``,
    which writes the record in the job's own transaction. The key is the ``Idempotency-Key``
    header (scoped to ``owner``, the caller), else the body's ``job_id`` (global, like job
    ids). Without either, this is a plain submit."""
    if header_key is not None:
        rec_owner, key, code = (
            owner,
            idempotency_key_check(header_key),
            reasons.IDEMPOTENCY_KEY_REUSED,
        )
    elif body.get("job_id"):
        rec_owner, key, code = "", f"job_id:{body['job_id']}", reasons.JOB_EXISTS
    else:
        return submit(None), False
    body_digest = digest(body)

    def record(job: Job) -> None:
        IdempotencyRecord.objects.create(
            owner=rec_owner, key=key, request_digest=body_digest, job=job
        )

    # Optimistic: a first submit (the common case) costs no lookup. A retry finds its key taken
    # (the job id exists, or the record's unique constraint fires and the new job rolls back)
    # and is answered from the record.
    try:
        return submit(record), False
    except (IntegrityError, GaitError) as exc:
        # lost a race with an identical request, or the job id was taken: the record decides
        if isinstance(exc, GaitError) and exc.code != "job_exists":
            raise
        found = _existing(rec_owner, key, body_digest, code=code)
        if found is not None:
            return found, True
        if isinstance(exc, GaitError):
            raise  # a job with this id exists, submitted without a record (CLI, dashboard)
        raise Conflict(reasons.CONFLICT, "a concurrent submit conflicted; retry") from None
