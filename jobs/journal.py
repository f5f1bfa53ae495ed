"""The append-only, hash-chained event journal.

``event_append`` is the only writer of ``JobEvent`` rows. It must run inside the transaction that
changes the job, with the job row locked (or guarded by compare-and-set), so a state change and
its event commit together or not at all. ``chain_verify`` recomputes every hash.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import rfc8785
from django.utils import timezone

from gaitweb.lib import reasons
from gaitweb.lib.canonical import ZERO_HASH, digest
from gaitweb.lib.errors import InvalidInput
from jobs.models import Job, JobEvent


def event_hash(record: dict[str, Any]) -> str:
    """sha256 hex of the JCS of an event record (all hashed fields, ``hash`` excluded)."""
    return digest(record)


def event_build(
    job: Job,
    *,
    type: str,
    actor: str = "",
    reason_code: str = "",
    payload: dict[str, Any] | None = None,
) -> JobEvent:
    """The next event of ``job`` (not saved), with the job's revision and chain head advanced in
    memory. The caller saves both in the same transaction; ``event_append`` does it for you."""
    event = JobEvent(
        job=job,
        revision=job.revision + 1,
        type=type,
        actor=actor[:256],
        reason_code=reason_code,
        payload=payload or {},
        created_at=timezone.now(),
        prev_hash=job.last_event_hash or ZERO_HASH,
    )
    try:
        event.hash = event_hash(event.record(job.job_id))
    except rfc8785.CanonicalizationError as exc:
        # integers beyond ±2**53, NaN, lone surrogates: JSON that cannot be hashed canonically
        raise InvalidInput(
            reasons.INVALID_JSON_VALUE,
            f"the event payload holds a value canonical JSON cannot represent: {exc}",
            details={"event_type": type},
        ) from None
    job.revision = event.revision
    job.last_event_hash = event.hash
    return event


def event_append(
    job: Job,
    *,
    type: str,
    actor: str = "",
    reason_code: str = "",
    payload: dict[str, Any] | None = None,
    update_fields: Iterable[str] = (),
) -> JobEvent:
    """Write one event and save the job's changed fields (``update_fields`` plus the chain head)."""
    event = event_build(job, type=type, actor=actor, reason_code=reason_code, payload=payload)
    event.save(force_insert=True)
    fields = {"revision", "last_event_hash", "updated_at", *update_fields}
    job.save(update_fields=sorted(fields))
    return event


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    events_checked: int
    head_hash: str
    first_bad_revision: int | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "head_hash": self.head_hash,
            "first_bad_revision": self.first_bad_revision,
            "reason": self.reason,
        }


def chain_check(
    job_id: str,
    records: Iterable[dict[str, Any]],
    *,
    expected_head: str | None = None,
    prev_hash: str = ZERO_HASH,
    first_revision: int = 1,
) -> ChainReport:
    """Check a sequence of event records (each with ``hash``) in revision order.

    Detects edited (hash mismatch), deleted or reordered (revision gap / prev_hash mismatch)
    events and names the first bad revision. Used for the database journal and for packs.
    ``prev_hash``/``first_revision`` continue from an already verified head (the dashboard
    checks only what was appended since its last look).
    """
    prev = prev_hash
    expected_rev = first_revision
    count = 0
    for rec in records:
        count += 1
        rev = rec.get("revision")
        if rev != expected_rev:
            return ChainReport(
                False,
                count,
                prev,
                expected_rev,
                f"revision gap: expected {expected_rev}, found {rev}",
            )
        if rec.get("job_id", job_id) != job_id:
            return ChainReport(False, count, prev, expected_rev, "event belongs to another job")
        if rec.get("prev_hash") != prev:
            return ChainReport(
                False, count, prev, expected_rev, "prev_hash does not match the previous event"
            )
        body = {k: v for k, v in rec.items() if k != "hash"}
        if event_hash(body) != rec.get("hash"):
            return ChainReport(
                False, count, prev, expected_rev, "hash does not match the event's content"
            )
        prev = rec["hash"]
        expected_rev += 1
    if expected_head is not None and expected_head != prev:
        if not (prev == ZERO_HASH and expected_head == ""):
            return ChainReport(
                False,
                count,
                prev,
                expected_rev,
                "journal head does not match the job's last_event_hash (events missing at the end)",
            )
    return ChainReport(True, count, prev)


def event_records(job: Job, *, after_revision: int = 0) -> Iterable[dict[str, Any]]:
    """The events of ``job`` (after ``after_revision``) as records with ``hash``, in revision
    order, streamed."""
    events = JobEvent.objects.filter(job=job, revision__gt=after_revision).order_by("revision")
    for ev in events.iterator(chunk_size=2000):
        rec = ev.record(job.job_id)
        rec["hash"] = ev.hash
        yield rec


def chain_verify(job: Job) -> ChainReport:
    return chain_check(job.job_id, event_records(job), expected_head=job.last_event_hash)
