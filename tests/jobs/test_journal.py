"""The hash-chained journal: every state change writes one event; tampering is detected."""

from __future__ import annotations

import pytest

from gaitweb.lib.actors import Actor
from gaitweb.lib.canonical import ZERO_HASH, digest
from gaitweb.lib.errors import Conflict, InvalidInput
from jobs import services
from jobs.journal import chain_verify, event_append
from jobs.models import Job, JobEvent

pytestmark = pytest.mark.django_db
AGENT = Actor.system("worker_1", identity="worker_1")
OPS = Actor.system("secops")


@pytest.fixture
def job() -> Job:
    services.job_submit(actor=AGENT, job_id="job_1", identity="worker_1")
    for i in range(4):
        services.job_checkpoint_add(
            actor=AGENT, job_id="job_1", type="progress", summary=f"step {i}"
        )
    services.job_pause(actor=OPS, job_id="job_1")
    return Job.objects.get(job_id="job_1")


def test_each_event_hashes_its_canonical_record_and_links_to_the_previous(job: Job) -> None:
    evs = list(JobEvent.objects.filter(job=job).order_by("revision"))
    assert [e.revision for e in evs] == [1, 2, 3, 4, 5, 6]
    prev = ZERO_HASH
    for e in evs:
        assert e.prev_hash == prev
        assert e.hash == digest(e.record("job_1"))
        prev = e.hash
    assert job.last_event_hash == prev and job.revision == 6
    report = chain_verify(job)
    assert report.ok and report.events_checked == 6 and report.first_bad_revision is None


def test_an_edited_event_is_detected_at_its_revision(job: Job) -> None:
    JobEvent.objects.filter(job=job, revision=3).update(payload={"summary": "forged"})
    report = services.job_verify_chain(actor=None, job_id="job_1")
    assert not report.ok and report.first_bad_revision == 3
    assert "hash" in report.reason


def test_an_edited_actor_or_reason_code_is_detected(job: Job) -> None:
    JobEvent.objects.filter(job=job, revision=2).update(actor="someone_else")
    assert services.job_verify_chain(actor=None, job_id="job_1").first_bad_revision == 2


def test_a_deleted_event_is_detected_at_the_gap(job: Job) -> None:
    JobEvent.objects.filter(job=job, revision=4).delete()
    report = services.job_verify_chain(actor=None, job_id="job_1")
    assert not report.ok and report.first_bad_revision == 4


def test_a_deleted_last_event_is_detected_by_the_head_hash(job: Job) -> None:
    JobEvent.objects.filter(job=job, revision=6).delete()
    report = services.job_verify_chain(actor=None, job_id="job_1")
    assert not report.ok and report.first_bad_revision == 6


def test_reordered_events_are_detected(job: Job) -> None:
    # swap the contents of revisions 2 and 3, keeping the revision numbers in place
    e2, e3 = (JobEvent.objects.get(job=job, revision=r) for r in (2, 3))
    fields = ["type", "actor", "reason_code", "payload", "created_at", "prev_hash", "hash"]
    for f in fields:
        a, b = getattr(e2, f), getattr(e3, f)
        setattr(e2, f, b)
        setattr(e3, f, a)
    JobEvent.objects.filter(pk=e2.pk).update(**{f: getattr(e2, f) for f in fields})
    JobEvent.objects.filter(pk=e3.pk).update(**{f: getattr(e3, f) for f in fields})
    report = services.job_verify_chain(actor=None, job_id="job_1")
    assert not report.ok and report.first_bad_revision == 2


def test_a_rehashed_forgery_still_breaks_the_link_to_the_next_event(job: Job) -> None:
    ev = JobEvent.objects.get(job=job, revision=3)
    ev.payload = {"summary": "forged"}
    ev.hash = digest(ev.record("job_1"))
    JobEvent.objects.filter(pk=ev.pk).update(payload=ev.payload, hash=ev.hash)
    report = services.job_verify_chain(actor=None, job_id="job_1")
    assert not report.ok and report.first_bad_revision == 4


def test_a_refused_action_writes_no_event(job: Job) -> None:
    with pytest.raises(Conflict):
        services.job_pause(actor=OPS, job_id="job_1")
    assert JobEvent.objects.filter(job=job).count() == 6
    assert chain_verify(job).ok


def test_event_revisions_are_unique_per_job_in_the_database(job: Job) -> None:
    from django.db import IntegrityError, transaction

    ev = JobEvent.objects.get(job=job, revision=6)
    ev.pk = None
    with pytest.raises(IntegrityError), transaction.atomic():
        ev.save(force_insert=True)


def test_a_payload_canonical_json_cannot_represent_is_refused_and_writes_nothing(job: Job) -> None:
    with pytest.raises(InvalidInput) as info:
        event_append(job, type="note", payload={"n": 2**60})
    assert info.value.code == "invalid_json_value"
    assert JobEvent.objects.filter(job=job).count() == 6
