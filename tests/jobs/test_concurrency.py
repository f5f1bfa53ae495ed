"""Concurrent transitions on one job: one winner, one clear error, no gaps (real threads, PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import GaitError
from jobs import services
from jobs.journal import chain_verify
from jobs.models import Job, JobEvent, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)
AGENT = Actor.system("worker_1", identity="worker_1")


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; return each result or the GaitError raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int, fn: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results[i] = fn()
        except GaitError as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def assert_chain_gapless(job_id: str) -> None:
    job = Job.objects.get(job_id=job_id)
    revs = list(
        JobEvent.objects.filter(job=job).order_by("revision").values_list("revision", flat=True)
    )
    assert revs == list(range(1, job.revision + 1))
    assert chain_verify(job).ok


@pytest.mark.parametrize("round_", range(5))
def test_two_reviewers_approving_at_once_give_one_winner(db: None, round_: int) -> None:
    job_id = f"job_race_{round_}"
    services.job_submit(actor=AGENT, job_id=job_id, identity="worker_1")
    services.job_checkpoint_add(actor=AGENT, job_id=job_id, type="decision-needed", summary="ok?")
    r = race(
        lambda: services.job_approve(actor=Actor.system("reviewer_1"), job_id=job_id),
        lambda: services.job_approve(actor=Actor.system("reviewer_2"), job_id=job_id),
    )
    errors = [x for x in r if isinstance(x, GaitError)]
    assert len(errors) == 1 and errors[0].code == "already_approved"
    assert JobEvent.objects.filter(job__job_id=job_id, type="approved").count() == 1
    assert_chain_gapless(job_id)


@pytest.mark.parametrize("round_", range(5))
def test_stop_racing_resume_gives_one_winner(db: None, round_: int) -> None:
    job_id = f"job_sr_{round_}"
    services.job_submit(actor=AGENT, job_id=job_id, identity="worker_1")
    services.job_pause(actor=Actor.system("ops"), job_id=job_id)
    r = race(
        lambda: services.job_stop(actor=Actor.system("secops"), job_id=job_id),
        lambda: services.job_resume(actor=AGENT, job_id=job_id, identity="worker_1"),
    )
    job = Job.objects.get(job_id=job_id)
    errors = [x for x in r if isinstance(x, GaitError)]
    if len(errors) == 0:
        # resume won first, then stop applied to the running job: both are legal in that order
        assert job.status == JobStatus.EMERGENCY_STOPPED
        assert [
            t for (t,) in JobEvent.objects.filter(job=job).order_by("revision").values_list("type")
        ][-2:] == [
            "resumed",
            "emergency_stop_acknowledged",
        ]
    else:
        # stop won: the resume saw an emergency-stopped job without a new approval
        assert len(errors) == 1 and errors[0].code == "approval_required"
        assert job.status == JobStatus.EMERGENCY_STOPPED
    assert_chain_gapless(job_id)


def test_many_writers_on_one_job_keep_the_revisions_gapless(db: None) -> None:
    services.job_submit(actor=AGENT, job_id="job_many", identity="worker_1")
    calls = [
        (
            lambda i=i: services.job_checkpoint_add(
                actor=AGENT, job_id="job_many", type="progress", summary=f"n{i}"
            )
        )
        for i in range(8)
    ]
    r = race(*calls)
    assert not [x for x in r if isinstance(x, GaitError)]
    job = Job.objects.get(job_id="job_many")
    assert job.revision == 9 and job.checkpoint_count == 8
    ids = sorted(job.checkpoints.values_list("checkpoint_id", flat=True))
    assert ids == [f"cp_{i:04d}" for i in range(1, 9)]
    assert_chain_gapless("job_many")


def test_two_cancels_give_one_winner(db: None) -> None:
    services.job_submit(actor=AGENT, job_id="job_cc", identity="worker_1")
    r = race(
        lambda: services.job_cancel(actor=Actor.system("a"), job_id="job_cc"),
        lambda: services.job_cancel(actor=Actor.system("b"), job_id="job_cc"),
    )
    errors = [x for x in r if isinstance(x, GaitError)]
    assert len(errors) == 1 and errors[0].code == "invalid_transition"
    assert JobEvent.objects.filter(job__job_id="job_cc", type="cancelled").count() == 1
    assert_chain_gapless("job_cc")
