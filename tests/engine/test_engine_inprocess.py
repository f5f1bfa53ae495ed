"""The engine loop called in-process (no cluster): runs on SQLite and PostgreSQL alike, so the
ORM fallback of the hot path is exercised too. Worker behaviour is in test_workers.py."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from gaitweb.lib.actors import Actor
from jobs.engine.runner import advance
from jobs.journal import chain_verify
from jobs.models import Checkpoint, Job, JobEvent, StepRun
from jobs.services import job_pause, job_submit

pytestmark = pytest.mark.django_db(transaction=True)


def submit(steps: list[dict[str, Any]]) -> Job:
    return job_submit(actor=Actor.system("tester"), spec={"steps": steps})


def test_advance_runs_every_step_and_completes_the_job(allow_commands: Any) -> None:
    allow_commands("echo")
    job = submit(
        [
            {"name": "a", "kind": "python", "with": {"function": "add", "args": {"a": 2, "b": 3}}},
            {
                "name": "b",
                "kind": "python",
                "with": {"function": "sum_outputs"},
                "idempotent": True,
            },
            {"name": "c", "kind": "command", "with": {"argv": ["echo", "ok"]}},
        ]
    )
    assert advance(job.job_id) == "completed"
    job.refresh_from_db()
    assert (job.status, job.cursor, job.lease_token) == ("completed", 3, None)
    assert job.outputs["b"]["sum"] == 5 and job.outputs["c"]["stdout"] == "ok\n"
    assert [e.type for e in JobEvent.objects.filter(job=job)] == [
        "submitted", "started", "step_succeeded", "step_succeeded", "step_succeeded", "completed",
    ]  # fmt: skip
    assert chain_verify(job).ok


def test_a_second_delivery_finds_nothing_to_do() -> None:
    job = submit([{"name": "a", "kind": "python", "with": {"function": "noop"}}])
    assert advance(job.job_id) == "completed"
    revision = Job.objects.get(pk=job.pk).revision
    assert advance(job.job_id) == "not_claimed"
    assert Job.objects.get(pk=job.pk).revision == revision


def test_a_failed_attempt_parks_the_job_until_its_backoff_is_due() -> None:
    retry = {"max_attempts": 2, "initial_interval": "0.3s"}
    job = submit(
        [
            {
                "name": "f",
                "kind": "python",
                "with": {"function": "fail_n_times", "args": {"n": 1}},
                "retry": retry,
            }
        ]
    )
    assert advance(job.job_id) == "retry_scheduled"
    job.refresh_from_db()
    assert job.status == "waiting" and job.wake_at is not None and job.lease_token is None
    assert advance(job.job_id) == "not_claimed"  # not due yet
    time.sleep(0.35)
    assert advance(job.job_id) == "completed"
    assert list(StepRun.objects.filter(job=job).values_list("attempt", "status")) == [
        (1, "failed"),
        (2, "succeeded"),
    ]


def test_a_job_yields_at_the_end_of_its_time_slice(settings: Any) -> None:
    settings.GAIT = {**settings.GAIT, "SLICE_SECONDS": 0.0}
    job = submit(
        [{"name": f"s{i}", "kind": "python", "with": {"function": "noop"}} for i in range(3)]
    )
    assert advance(job.job_id) == "yielded"
    job.refresh_from_db()
    assert (job.status, job.lease_token, job.cursor) == ("running", None, 1)
    settings.GAIT = {**settings.GAIT, "SLICE_SECONDS": 30.0}
    assert advance(job.job_id) == "completed"
    assert [e.type for e in JobEvent.objects.filter(job=job)].count("started") == 1


def test_a_paused_job_is_not_dispatched() -> None:
    job = submit([{"name": "a", "kind": "python", "with": {"function": "noop"}}])
    job_pause(actor=Actor.system("op"), job_id=job.job_id)
    assert advance(job.job_id) == "not_claimed"
    assert not StepRun.objects.filter(job=job).exists()


def test_an_attempt_left_started_by_a_dead_worker_is_not_run_again_silently() -> None:
    job = submit([{"name": "transfer", "kind": "python", "with": {"function": "noop"}}])
    # the state a worker leaves when it dies mid-step: its lease expired, the non-idempotent
    # attempt's ``started`` record committed, no outcome
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        status="running",
        lease_token=uuid.uuid4(),
        lease_owner="dead-host:1",
        lease_expires_at=now - timedelta(seconds=1),
        started_at=now,
    )
    StepRun.objects.create(
        job=job, step_index=0, step_name="transfer", attempt=1, status="started",
        worker="dead-host:1", started_at=now,
    )  # fmt: skip
    assert advance(job.job_id) == "not_claimed"  # recovered, then parked for a human
    job.refresh_from_db()
    assert (job.status, job.status_reason_code, job.lease_token) == (
        "decision_needed",
        "step_in_doubt",
        None,
    )
    run = StepRun.objects.get(job=job)
    assert (run.status, run.error["worker"]) == ("in_doubt", "dead-host:1")
    checkpoint = Checkpoint.objects.get(job=job)
    assert checkpoint.type == "decision-needed" and "transfer may have run" in checkpoint.summary
    assert [e.type for e in JobEvent.objects.filter(job=job)] == [
        "submitted", "recovered", "checkpoint_added",
    ]  # fmt: skip
    assert chain_verify(job).ok
