"""One contract for both implementations of claim and checkpoint write (jobs/engine/backend.py):
the PostgreSQL CTEs (jobs/engine/pg.py) and the ORM's locked transactions (jobs/engine/orm.py).
On PostgreSQL both run the same scenarios against the same database; on SQLite the ORM one does.
The scenarios call the backend directly, the way the runner does, and look at what the database
holds afterwards."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ

from gaitweb.lib.actors import Actor
from jobs.engine.backend import ClaimWrite
from jobs.engine.lease import ENGINE_ACTOR
from jobs.engine.orm import OrmBackend
from jobs.engine.pg import PostgresBackend
from jobs.engine.runner import _Runner
from jobs.journal import chain_verify, event_build
from jobs.models import Job, JobEvent, StepRun
from jobs.services import job_pause, job_stop, job_submit
from jobs.steps import StepResult

pytestmark = pytest.mark.django_db(transaction=True)
SUBMITTER = Actor.system("tester")
OPERATOR = Actor.system("otto")


@pytest.fixture(params=["postgres", "orm"])
def backend(request: pytest.FixtureRequest) -> ClaimWrite:
    if request.param == "postgres":
        if connection.vendor != "postgresql":
            pytest.skip("the CTE backend needs PostgreSQL")
        return PostgresBackend()
    return OrmBackend()


def submit(*steps: dict[str, Any]) -> Job:
    return job_submit(actor=SUBMITTER, spec={"steps": list(steps)})


def step(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "python",
        "with": {"function": "noop"},
        "idempotent": True,
        **extra,
    }


def runner(backend: ClaimWrite, job: Job, owner: str = "worker-a") -> _Runner:
    return _Runner(job_id=job.job_id, owner=owner, backend=backend)


def fresh(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


def events(job: Job) -> list[tuple[str, str]]:
    return list(
        JobEvent.objects.filter(job=job).order_by("revision").values_list("type", "reason_code")
    )


def write(r: _Runner, *, prev_rev: int | None = None, output: Any = 42) -> str | None:
    """Checkpoint the step at the cursor as succeeded, as the runner builds it."""
    job = r.job
    assert job is not None
    spec_step = job.steps[job.cursor]
    rev = job.revision if prev_rev is None else prev_rev
    event = event_build(
        job,
        type="step_succeeded",
        actor=ENGINE_ACTOR,
        reason_code="step_succeeded",
        payload={"step": spec_step["name"], "step_index": job.cursor, "attempt": 1},
    )
    done = None
    if job.cursor + 1 == job.step_count and r.backend.completes_in_write:
        done = event_build(
            job, type="completed", actor=ENGINE_ACTOR, reason_code="job_succeeded", payload={}
        )
    now = timezone.now()
    result = StepResult("succeeded", output=output)
    status = r.backend.write_success(r, rev, event, done, spec_step, 1, result, now, now, None)
    if status is not None:
        job.cursor += 1
        job.revision, job.last_event_hash = (done or event).revision, (done or event).hash
    return status


def test_a_queued_job_is_claimed_with_its_lease_and_a_started_event(backend: ClaimWrite) -> None:
    job = submit(step("a"))
    r = runner(backend, job)
    assert r.claim()
    job = fresh(job)
    assert (job.status, job.lease_token, job.lease_owner) == ("running", r.token, "worker-a")
    assert job.lease_expires_at is not None and job.lease_expires_at > timezone.now()
    assert job.started_at is not None
    assert events(job)[-1] == ("started", "job_started")
    assert r.job is not None and r.job.cursor == 0 and r.runs == [] and r.outputs == {}
    assert chain_verify(job).ok


def test_a_job_held_by_a_live_worker_is_not_claimed_and_nothing_is_written(
    backend: ClaimWrite,
) -> None:
    job = submit(step("a"))
    first = runner(backend, job)
    assert first.claim()
    before = fresh(job)
    assert not runner(backend, job, owner="worker-b").claim()
    after = fresh(job)
    assert (after.revision, after.lease_token, after.lease_owner) == (
        before.revision,
        first.token,
        "worker-a",
    )


def test_a_job_whose_lease_expired_is_recovered_by_another_worker(backend: ClaimWrite) -> None:
    job = submit(step("a"))
    assert runner(backend, job).claim()
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    second = runner(backend, job, owner="worker-b")
    assert second.claim()
    job = fresh(job)
    assert (job.lease_token, job.lease_owner) == (second.token, "worker-b")
    assert events(job)[-1] == ("recovered", "job_recovered_after_restart")
    payload = JobEvent.objects.filter(job=job).order_by("-revision").first().payload  # type: ignore[union-attr]
    assert payload["previous_worker"] == "worker-a"
    assert chain_verify(job).ok


def test_a_waiting_job_is_claimed_only_once_its_wake_up_is_due(backend: ClaimWrite) -> None:
    job = submit(step("a"))
    Job.objects.filter(pk=job.pk).update(
        status="waiting", wake_at=timezone.now() + timedelta(hours=1)
    )
    assert not runner(backend, job).claim()
    Job.objects.filter(pk=job.pk).update(wake_at=timezone.now() - timedelta(seconds=1))
    assert runner(backend, job).claim()
    job = fresh(job)
    assert (job.status, job.wake_at) == ("running", None)


def test_a_paused_job_is_not_claimed(backend: ClaimWrite) -> None:
    job = submit(step("a"))
    job_pause(actor=OPERATOR, job_id=job.job_id)
    revision = fresh(job).revision
    assert not runner(backend, job).claim()
    assert (fresh(job).status, fresh(job).revision) == ("paused", revision)


def test_the_claim_acknowledges_the_broker_row_that_delivered_it(backend: ClaimWrite) -> None:
    job = submit(step("a"))
    row = OrmQ.objects.create(key="test", payload="x", lock=timezone.now())
    r = runner(backend, job)
    r.broker_row = row.pk
    assert r.claim()
    assert r.broker_row is None
    assert not OrmQ.objects.filter(pk=row.pk).exists()


def test_a_non_idempotent_steps_started_record_rides_on_the_claim(backend: ClaimWrite) -> None:
    job = submit(step("charge", idempotent=False))
    r = runner(backend, job)
    assert r.claim()
    run = StepRun.objects.get(job=job)
    assert (run.status, run.attempt, run.step_index, run.worker) == ("started", 1, 0, "worker-a")
    assert r.prestarted is not None and r.prestarted[:2] == (0, run.pk)


def test_a_checkpoint_records_the_step_and_moves_the_cursor(backend: ClaimWrite) -> None:
    job = submit(step("a"), step("b"))
    r = runner(backend, job)
    assert r.claim()
    assert write(r, output={"n": 1}) == "running"
    job = fresh(job)
    assert job.cursor == 1 and job.lease_token == r.token
    run = StepRun.objects.get(job=job)
    assert (run.step_name, run.status, run.output) == ("a", "succeeded", {"n": 1})
    assert events(job)[-1] == ("step_succeeded", "step_succeeded")
    assert chain_verify(job).ok
    assert write(r) is not None  # the next step chains from the head the write left
    assert fresh(job).cursor == 2 and chain_verify(fresh(job)).ok


def test_the_last_checkpoint_completes_the_job_when_the_backend_says_so(
    backend: ClaimWrite,
) -> None:
    job = submit(step("only"))
    r = runner(backend, job)
    assert r.claim()
    status = write(r)
    job = fresh(job)
    if backend.completes_in_write:
        assert status == job.status == "completed"
        assert job.lease_token is None and job.outputs == {"only": 42}
        assert events(job)[-2:] == [
            ("step_succeeded", "step_succeeded"),
            ("completed", "job_succeeded"),
        ]
    else:  # the runner's loop completes it
        assert status == job.status == "running"
    assert job.cursor == 1 and chain_verify(job).ok


def test_a_write_after_an_operator_journaled_is_refused_until_rebuilt(backend: ClaimWrite) -> None:
    """A stop (or any lifecycle event) moves the revision: the write chained from the old head
    writes nothing; rebuilt on the new head it records the step and reports the stop."""
    job = submit(step("a"), step("b"))
    r = runner(backend, job)
    assert r.claim()
    stale = r.job.revision  # type: ignore[union-attr]
    job_stop(actor=OPERATOR, job_id=job.job_id)
    assert write(r, prev_rev=stale) is None
    assert not StepRun.objects.filter(job=job).exists() and fresh(job).cursor == 0
    current = fresh(job)
    r.job.revision, r.job.last_event_hash = current.revision, current.last_event_hash  # type: ignore[union-attr]
    assert write(r) == "emergency_stopped"
    assert fresh(job).cursor == 1 and chain_verify(fresh(job)).ok


def test_the_last_write_of_a_paused_job_does_not_complete_it(backend: ClaimWrite) -> None:
    job = submit(step("only"))
    r = runner(backend, job)
    assert r.claim()
    job_pause(actor=OPERATOR, job_id=job.job_id)
    current = fresh(job)
    r.job.revision, r.job.last_event_hash = current.revision, current.last_event_hash  # type: ignore[union-attr]
    assert write(r) == "paused"
    job = fresh(job)
    assert (job.status, job.cursor) == ("paused", 1)
    assert ("completed", "job_succeeded") not in events(job)
    assert chain_verify(job).ok


def test_a_worker_that_lost_its_lease_cannot_write(backend: ClaimWrite) -> None:
    job = submit(step("a"), step("b"))
    first = runner(backend, job)
    assert first.claim()
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    second = runner(backend, job, owner="worker-b")
    assert second.claim()
    first.job.revision, first.job.last_event_hash = fresh(job).revision, fresh(job).last_event_hash  # type: ignore[union-attr]
    assert write(first) is None
    assert not StepRun.objects.filter(job=job, status="succeeded").exists()
    assert fresh(job).cursor == 0 and fresh(job).lease_token == second.token


def test_the_claim_loads_every_field_of_the_job_as_the_orm_reads_it(backend: ClaimWrite) -> None:
    """The PostgreSQL claim maps its own SELECT onto the model (jobs/engine/pg.py): every
    concrete field must come back as ``Job.objects.get`` gives it (json parsed, datetimes aware,
    foreign keys as ids), for a job that sets the optional ones too. The fields the claim itself
    writes are compared after its write."""
    parent = submit(step("p"))
    spec = {"steps": [step("a"), step("b")], "deadline": "10m", "description": "x"}
    job = job_submit(
        actor=SUBMITTER,
        spec=spec,
        labels={"team": "ops", "ünï": "cödé"},
        parent_id=parent.job_id,
        identity="agent-7",
    )
    r = runner(backend, job)
    assert r.claim()
    assert r.job is not None
    loaded, stored = r.job, fresh(job)
    for f in Job._meta.concrete_fields:
        got, want = getattr(loaded, f.attname), getattr(stored, f.attname)
        if f.attname == "updated_at":  # the claim's own write moved it
            continue
        assert got == want and isinstance(got, type(want)), f.attname
    assert loaded.spec["steps"][1]["name"] == "b" and loaded.labels["ünï"] == "cödé"
    assert loaded.parent_id == parent.pk and loaded.deadline is not None
    assert loaded.deadline.utcoffset() is not None
