"""Push wake-ups and stops (jobs/wake.py, jobs/broker.py) and the short job's commits.

The broker row of a wake-up is written in the transaction that makes the job runnable, with a
NOTIFY on PostgreSQL; a delivery's row is acknowledged by the claim. Nothing may depend on a
notification: lost ones (not sent, or a listener whose connection died) still make progress
through the polls and the sweep. The real-worker tests run on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_q.models import OrmQ

from gaitweb.lib.actors import Actor
from jobs.broker import ClusterORM, broker_row_to_task
from jobs.engine.runner import _Runner, advance
from jobs.enqueue import ADVANCE_TASK, advance_enqueue
from jobs.models import Job, JobEvent, StepRun
from jobs.services import job_cancel, job_stop, job_submit
from jobs.wake import WAKE_CHANNEL, Listener, job_preempt_notify
from tests.workers import wait_for

SUBMITTER = Actor.system("tester")
OPERATOR = Actor.system("otto")
PG = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL only")


def submit(steps: list[dict[str, Any]], **kwargs: Any) -> Job:
    return job_submit(actor=SUBMITTER, spec={"steps": steps}, **kwargs)


def noop(name: str = "only", **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "python", "with": {"function": "noop"}, **extra}


def wait_file(name: str, path: Path) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "python",
        "with": {"function": "wait_for_file", "args": {"path": str(path)}},
        "idempotent": True,
    }


def job_of(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


def advance_rows() -> list[OrmQ]:
    return [r for r in OrmQ.objects.all() if (r.task or {}).get("func") == ADVANCE_TASK]


def running(path: Path) -> bool:
    return Path(f"{path}.started").exists()


# --- in process ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_wake_up_is_written_in_the_submit_transaction_and_rolls_back_with_it() -> None:
    """One transaction carries the job, its event and its broker row (and, on PostgreSQL, the
    NOTIFY, which PostgreSQL delivers only at commit); a submit that fails leaves no row."""
    in_block: list[tuple[str, bool]] = []

    def spy(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        in_block.append((sql, connection.in_atomic_block))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        job = submit([noop()])
    rows = advance_rows()
    assert [r.task["args"] for r in rows] == [(job.job_id,)]
    broker_sql = [(sql, inside) for sql, inside in in_block if OrmQ._meta.db_table in sql]
    assert broker_sql and all(inside for _, inside in broker_sql)
    notifies = [sql for sql, _ in in_block if "pg_notify" in sql]
    assert len(notifies) == (1 if connection.vendor == "postgresql" else 0)

    with pytest.raises(RuntimeError), transaction.atomic():
        submit([noop()])
        raise RuntimeError("the caller's transaction fails after the submit")
    assert len(advance_rows()) == 1
    assert Job.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_delivery_is_acknowledged_by_the_claim_and_an_unclaimable_one_is_dropped() -> None:
    """The cluster's broker takes the row; the task deletes it in the claim's commit (the
    monitor has nothing left to acknowledge); a duplicate delivery deletes its row too."""
    job = submit([noop("a"), noop("b", idempotent=True)])
    broker = ClusterORM()
    broker._next_check = float("inf")  # no sweep chain in this test
    taken = broker.dequeue()
    assert taken is not None and len(taken) == 1
    row_id = taken[0][0]
    task = {"func": ADVANCE_TASK, "args": (job.job_id,), "kwargs": {}, "ack_id": row_id}
    broker_row_to_task(sender="django_q", task=task)
    assert "ack_id" not in task and task["kwargs"] == {"broker_row": row_id}
    assert advance(*task["args"], **task["kwargs"]) == "completed"
    assert not OrmQ.objects.filter(pk=row_id).exists()
    assert list(StepRun.objects.filter(job=job).values_list("step_name", "attempt", "status")) == [
        ("a", 1, "succeeded"),
        ("b", 1, "succeeded"),
    ]
    # a delivery for a finished job: not claimed, its row still goes
    stale = OrmQ.objects.create(key="gaitweb", payload="x", lock=None)
    assert advance(job.job_id, broker_row=stale.pk) == "not_claimed"
    assert not OrmQ.objects.filter(pk=stale.pk).exists()
    # other tasks keep django-q2's own acknowledgement
    other = {"func": "jobs.tasks.sweep", "args": ("t",), "kwargs": {}, "ack_id": 7}
    broker_row_to_task(sender="django_q", task=other)
    assert other["ack_id"] == 7 and other["kwargs"] == {}


@pytest.mark.django_db(transaction=True)
def test_a_crash_after_a_claim_that_wrote_the_started_record_is_in_doubt() -> None:
    """The first non-idempotent step's ``started`` record rides on the claim: a worker that
    dies right after it leaves the attempt in doubt, never silently repeated."""
    job = submit([noop("charge")])
    runner = _Runner(job_id=job.job_id)
    assert runner.claim()
    started = StepRun.objects.get(job=job)
    assert (started.status, started.attempt) == ("started", 1)
    # the worker is gone: its lease expires
    Job.objects.filter(pk=job.pk).update(lease_expires_at=job_of(job).created_at)
    assert advance(job.job_id) == "not_claimed"
    job = job_of(job)
    assert job.status == "decision_needed"
    assert StepRun.objects.get(job=job).status == "in_doubt"
    assert ("checkpoint_added", "checkpoint_decision_needed") in set(
        JobEvent.objects.filter(job=job).values_list("type", "reason_code")
    )


@pytest.mark.django_db(transaction=True)
def test_stop_and_cancel_announce_themselves_only_on_postgresql() -> None:
    a, b = submit([noop("a")]), submit([noop("b")])
    with CaptureQueriesContext(connection) as ctx:
        job_stop(actor=OPERATOR, job_id=a.job_id, reason="x")
        job_cancel(actor=OPERATOR, job_id=b.job_id, reason="y")
    sent = [q["sql"] for q in ctx.captured_queries if "pg_notify" in q["sql"]]
    if connection.vendor == "postgresql":
        assert len(sent) == 2 and a.job_id in sent[0] and b.job_id in sent[1]
    else:
        assert sent == []


@PG
@pytest.mark.django_db(transaction=True)
def test_a_waiting_pusher_is_woken_by_the_notify_of_a_commit_and_not_by_a_rollback() -> None:
    listener = Listener((WAKE_CHANNEL,))
    try:
        assert listener.wait(0.0) == []
        with pytest.raises(RuntimeError), transaction.atomic():
            submit([noop()])
            raise RuntimeError("rolled back")
        assert listener.wait(0.05) == []
        submit([noop()])
        assert [c for c, _ in listener.wait(5.0)] == [WAKE_CHANNEL]
    finally:
        listener.close()


# --- real workers --------------------------------------------------------------------------------

slow = pytest.mark.slow


@slow
def test_without_notifications_jobs_still_run_and_stops_still_land(
    clusters: Any, tmp_path: Path, settings: Any
) -> None:
    """A lost NOTIFY: this process sends none (as if every one were lost) and, on PostgreSQL,
    the workers' listening connections are killed too. The polls carry the work."""

    settings.GAIT = {**settings.GAIT, "PG_NOTIFY": False}
    clusters(GAIT_Q_WORKERS="1")
    first = submit([noop("a"), noop("b")])
    wait_for(lambda: job_of(first).status == "completed", timeout=30, what="the first job")
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'gaitweb-listen' AND datname = current_database()"
            )
            assert cur.fetchall(), "the workers listen on PostgreSQL"
    second = submit([noop("a")])
    wait_for(lambda: job_of(second).status == "completed", timeout=30, what="the second job")
    never = tmp_path / "never"
    held = submit([wait_file("hold", never)])
    wait_for(lambda: running(never), timeout=30, what="the step")
    job_stop(actor=OPERATOR, job_id=held.job_id, reason="no notify")
    held = wait_for(
        lambda: (j := job_of(held)).lease_token is None and j, timeout=30, what="the stop"
    )
    assert held.status == "emergency_stopped"
    assert StepRun.objects.get(job=held).output == {"released": False, "stopped": True}


@slow
def test_notifications_for_a_job_another_worker_holds_change_nothing(
    clusters: Any, tmp_path: Path
) -> None:
    """A wake-up for a job whose lease another worker holds is delivered and dropped; a stop of
    one job leaves the job running next to it alone."""

    # three workers: whichever holds what, one is free for the duplicate (a pusher hands what it
    # takes to its own cluster's workers)
    clusters(GAIT_Q_WORKERS="3")
    go_a, go_b = tmp_path / "go-a", tmp_path / "go-b"
    a = submit([wait_file("hold", go_a), noop("after")])
    b = submit([wait_file("hold", go_b), noop("after")])
    wait_for(lambda: running(go_a) and running(go_b), timeout=30, what="both jobs to run")
    owner = job_of(a).lease_owner
    with transaction.atomic():
        advance_enqueue(a.job_id)  # a duplicate delivery, announced
        job_preempt_notify(a.job_id)  # a stop announcement for a job nobody stopped
    wait_for(lambda: not advance_rows(), timeout=30, what="the duplicate to be consumed")
    assert (job_of(a).status, job_of(a).lease_owner) == ("running", owner)
    job_stop(actor=OPERATOR, job_id=b.job_id, reason="only b")
    wait_for(lambda: job_of(b).lease_token is None, timeout=30, what="b to stop")
    assert job_of(b).status == "emergency_stopped"
    assert job_of(a).status == "running"
    go_a.touch()
    wait_for(lambda: job_of(a).status == "completed", timeout=30, what="a to complete")
    assert list(
        StepRun.objects.filter(job=a).order_by("step_index").values_list("step_name", "attempt")
    ) == [("hold", 1), ("after", 1)]
    assert not JobEvent.objects.filter(job=a, type="recovered").exists()
    assert not StepRun.objects.filter(job=b, step_name="after").exists()


@slow
def test_a_stop_arriving_between_two_steps_dispatches_nothing_more(
    clusters: Any, tmp_path: Path, allow_commands: Any
) -> None:
    allow_commands(shell=True)
    clusters(GAIT_Q_WORKERS="1")
    marker = tmp_path / "ran"
    job = submit(
        [
            {"name": "stopper", "kind": "python", "with": {"function": "stop_own_job"}},
            {
                "name": "next",
                "kind": "command",
                "with": {"shell": True, "command": f"touch {marker}"},
            },
        ]
    )
    job = wait_for(
        lambda: (j := job_of(job)).status == "emergency_stopped" and j.lease_token is None and j,
        timeout=30,
        what="the stop to settle",
    )
    assert list(StepRun.objects.filter(job=job).values_list("step_name", "status")) == [
        ("stopper", "succeeded")
    ]
    kinds = list(
        JobEvent.objects.filter(job=job).order_by("revision").values_list("type", flat=True)
    )
    assert kinds[-3:] == ["emergency_stop_acknowledged", "step_succeeded", "dispatch_blocked"]
    assert job.cursor == 1
    assert not marker.exists()


def test_due_times_that_passed_are_dropped_so_the_pusher_never_spins() -> None:
    """A pusher waits until the due time of a delayed row it heard about; once that passed (it
    looked for the row right before), the hint is gone and the wait is the poll again."""

    listener = Listener(("unused",))
    listener.dues = [100.0, 100.5, 103.0]
    assert listener.next_due_in(100.5) == 2.5
    assert listener.dues == [103.0]
    assert listener.next_due_in(103.0) is None
    assert listener.dues == []
