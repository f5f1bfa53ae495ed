"""Durable workflows on real `qcluster` processes (PostgreSQL and SQLite): kill -9, parking
without a worker, nondeterminism, the gate, stop. Side effects are counted in files the
workflows append to (tests/workflows.py), never in the database."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from approvals.models import ApprovalRequest, PolicyVersion
from approvals.services import approval_decide
from gaitweb.lib.actors import Actor
from jobs.journal import chain_verify
from jobs.models import Checkpoint, Job, JobEvent, StepRun
from jobs.services import job_approve, job_resume, job_retry, job_signal, job_stop
from tests.engine.conftest import LEASE_SECONDS
from tests.workers import wait_for
from tests.workflow_world import policy_stored, workflow_submit

pytestmark = pytest.mark.slow

SUBMITTER = Actor.system("tester")
OPERATOR = Actor.system("otto")
REVIEWER = Actor.system("rita")


def submit(workflow: str, policy: PolicyVersion | None = None, **input: Any) -> Job:
    return workflow_submit(workflow, actor=SUBMITTER, policy=policy, **input)


def job_of(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


def settled(
    job: Job, statuses: tuple[str, ...] = ("completed", "failed"), timeout: float = 30
) -> Job:
    return wait_for(
        lambda: (j := job_of(job)).status in statuses and j.lease_token is None and j,
        timeout=timeout,
        what=f"{job.job_id} to reach {statuses}",
    )


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def policy() -> PolicyVersion:
    return policy_stored()


def test_a_workflow_of_50_calls_completes_each_call_run_once(clusters: Any, tmp_path: Path) -> None:
    log = tmp_path / "fx"
    clusters()
    job = settled(submit("calls", path=str(log), n=50))
    assert job.status == "completed", job.status_reason_code
    assert job.outputs["calls"] == {"total": sum(range(50)), "calls": 50}
    ran = Counter(line[1] for line in lines(log))
    assert ran == Counter({f"c{i}": 1 for i in range(50)})
    runs = StepRun.objects.filter(job=job)
    assert runs.filter(status="succeeded").count() == 51  # 50 calls and the workflow's result
    keys = set(runs.filter(step_index=2).values_list("idempotency_key", flat=True))
    assert keys == {f"{job.job_id}/records.write/2"}
    assert chain_verify(job).ok


def test_kill_9_at_random_points_runs_every_completed_call_exactly_once(
    clusters: Any, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("GAIT_TEST_SEED", time.time())))
    log = tmp_path / "fx"
    job = submit("calls", path=str(log), n=50, seconds=0.04)
    kills = 0
    for _ in range(4):
        cluster = clusters()
        seen = {line[3] for line in lines(log)}
        wait_for(
            lambda s=seen: (
                {line[3] for line in lines(log)} - s
                or job_of(job).status in ("decision_needed", "completed")
            ),
            # a delivery lost with a killed cluster waits for the sweep (60 s)
            timeout=LEASE_SECONDS + 90,
            what="a new worker to run calls",
        )
        current = job_of(job)
        if current.status == "decision_needed":  # a call cut by the previous kill: a person decides
            job_approve(actor=REVIEWER, job_id=job.job_id, reason="checked: re-run it")
            job_resume(actor=OPERATOR, job_id=job.job_id)
            cluster.kill()
            continue
        if current.status == "completed":
            break
        time.sleep(rng.uniform(0.05, 0.5))
        cluster.kill()
        kills += 1
    assert kills >= 2, "the job finished before the kills: make it longer"
    clusters()
    for _ in range(kills + 1):
        job = settled(job, ("completed", "decision_needed"), timeout=LEASE_SECONDS + 90)
        if job.status == "completed":
            break
        job_approve(actor=REVIEWER, job_id=job.job_id, reason="checked: re-run it")
        job_resume(actor=OPERATOR, job_id=job.job_id)
    assert job.status == "completed", job.status_reason_code
    ran = Counter(line[1] for line in lines(log))
    in_doubt = set(
        StepRun.objects.filter(job=job, status="in_doubt").values_list("step_name", "step_index")
    )
    doubted = {name if name.startswith("c") else f"c{index - 1}" for name, index in in_doubt}
    assert set(ran) == {f"c{i}" for i in range(50)}
    # every call ran once; only a call cut by a kill and re-run after a person's decision may
    # have run twice (these calls are not idempotent: nothing is repeated silently)
    for name, n in ran.items():
        assert n == 1 or (name in doubted and n == 2), (name, n, doubted)
    assert StepRun.objects.filter(job=job, status="succeeded").count() == 51
    assert [e for e in JobEvent.objects.filter(job=job).values_list("type", flat=True)].count(
        "recovered"
    ) >= kills - len(in_doubt)
    assert chain_verify(job).ok


def test_an_approval_parks_without_a_worker_and_earlier_calls_are_not_repeated(
    clusters: Any, tmp_path: Path, policy: PolicyVersion
) -> None:
    log = tmp_path / "fx"
    cluster = clusters()
    job = settled(
        submit("refund", policy, path=str(log), invoice="42", amount=420), ("decision_needed",)
    )
    assert job.lease_token is None  # no worker holds it
    cluster.kill()  # nobody runs at all while it waits
    time.sleep(1.0)
    request = ApprovalRequest.objects.get(job=job)
    assert request.intent["args"] == {"invoice": "42", "amount": 420}
    assert request.tool_name == "payments.refund"
    clusters()
    approval_decide(actor=REVIEWER, request_id=request.request_id, decision="approve")
    job = settled(job)
    assert job.outputs["refund"] == {"receipt": "r-42-420"}
    assert [line[1] for line in lines(log)] == ["lookup", "refund"]
    assert Checkpoint.objects.filter(job=job, type="plan").count() == 1


def test_nondeterminism_is_detected_and_both_names_are_given(clusters: Any, tmp_path: Path) -> None:
    log = tmp_path / "fx"
    clusters()
    job = submit("changes", path=str(log))
    settled(job, ("waiting",))
    # the second call runs under its own name, then the job is retried after "the code" changes
    Path(str(log) + ".name").write_text("second\n")
    job_signal(actor=SUBMITTER, job_id=job.job_id, name="go")
    job = settled(job)
    assert job.status == "completed"
    Path(str(log) + ".name").write_text("renamed\n")
    # make the recorded run look unfinished (as if it crashed before its result was stored)
    StepRun.objects.filter(job=job, step_index=0).delete()
    Job.objects.filter(pk=job.pk).update(status="failed", cursor=0)

    job_retry(actor=OPERATOR, job_id=job.job_id)
    job = settled(job)
    assert (job.status, job.status_reason_code) == ("failed", "workflow_nondeterministic")
    failed = JobEvent.objects.filter(job=job, type="failed").last()
    assert (failed.payload["recorded"], failed.payload["called"]) == ("second", "renamed")
    assert failed.payload["position"] == 3
    assert [line[1] for line in lines(log)] == ["first", "second"]  # nothing re-ran


def test_a_blocked_tool_raises_into_the_workflow(
    clusters: Any, tmp_path: Path, policy: PolicyVersion
) -> None:
    log = tmp_path / "fx"
    clusters()
    caught = submit("blocked-tool", policy, path=str(log))
    uncaught = submit("blocked-tool", policy, path=str(tmp_path / "fy"), catch=False)
    caught = settled(caught)
    assert caught.outputs["blocked-tool"] == {"blocked": ["matched_rule_no_rm"]}
    assert [line[1] for line in lines(log)] == ["fallback"]
    uncaught = settled(uncaught, ("blocked",))
    assert uncaught.status_reason_code == "policy_blocked"
    assert "matched_rule_no_rm" in Checkpoint.objects.filter(job=uncaught).last().summary
    assert not (tmp_path / "fy").exists()


def test_stop_preempts_between_calls_and_later_calls_are_dispatch_blocked(
    clusters: Any, tmp_path: Path
) -> None:
    log = tmp_path / "fx"
    clusters()
    job = submit("calls", path=str(log), n=40, seconds=0.1, idempotent=True)
    wait_for(lambda: len(lines(log)) >= 3, timeout=15, what="some calls to run")
    job_stop(actor=OPERATOR, job_id=job.job_id, reason="enough")
    job = settled(job, ("emergency_stopped",), timeout=10)
    time.sleep(1.0)
    ran = len(lines(log))
    assert ran < 40
    time.sleep(1.0)
    assert len(lines(log)) == ran  # nothing dispatched after the stop
    types = list(
        JobEvent.objects.filter(job=job).order_by("revision").values_list("type", flat=True)
    )
    after = types[types.index("emergency_stop_acknowledged") + 1 :]
    # calls that ran before the stop may be journaled after it (their records waited for a
    # group commit); then the next dispatch is refused
    assert after[-1] in ("dispatch_blocked", "step_cancelled"), after
    assert set(after[:-1]) <= {"step_succeeded"}, after
    stop_at = JobEvent.objects.get(job=job, type="emergency_stop_acknowledged").created_at
    started_after = StepRun.objects.filter(job=job, step_index__gte=1, started_at__gt=stop_at)
    assert not started_after.exists()  # no call began after the stop


def test_kill_9_with_group_commit_of_idempotent_calls_keeps_every_record_and_the_chain(
    clusters: Any, tmp_path: Path
) -> None:
    """A workflow opted into group commit: idempotent calls' records wait up to
    GAIT_WORKFLOW_FLUSH_SECONDS for one statement, so a kill may run the unwritten ones again
    (at least once, by design), never record one twice."""
    log = tmp_path / "fx"
    n = 200
    job = submit("calls-group-commit", path=str(log), n=n, seconds=0.01, idempotent=True)
    kills = _kill_while_calls_run(clusters, job, log, rounds=2, GAIT_WORKFLOW_FLUSH_SECONDS="0.1")
    job = settled(job, timeout=LEASE_SECONDS + 60)
    assert job.status == "completed", job.status_reason_code
    ran = Counter(line[1] for line in lines(log))
    assert set(ran) == {f"c{i}" for i in range(n)}
    succeeded = StepRun.objects.filter(job=job, step_index__gte=1, status="succeeded")
    assert succeeded.count() == n
    assert len(set(succeeded.values_list("step_index", flat=True))) == n
    assert chain_verify(job).ok
    assert kills >= 1


def test_kill_9_of_idempotent_calls_repeats_at_most_the_call_in_flight(
    clusters: Any, tmp_path: Path
) -> None:
    """The default writes every call before the next one starts: a kill re-runs at most the
    idempotent call that was running, never one that completed."""
    log = tmp_path / "fx"
    n = 100
    job = submit("calls", path=str(log), n=n, seconds=0.02, idempotent=True)
    kills = _kill_while_calls_run(clusters, job, log, rounds=3)
    job = settled(job, timeout=LEASE_SECONDS + 60)
    assert job.status == "completed", job.status_reason_code
    ran = Counter(line[1] for line in lines(log))
    assert set(ran) == {f"c{i}" for i in range(n)}
    repeated = [name for name, times in ran.items() if times > 1]
    assert all(ran[name] == 2 for name in repeated), ran
    assert len(repeated) <= kills, (repeated, kills)
    assert kills >= 1
    assert chain_verify(job).ok


def _kill_while_calls_run(clusters: Any, job: Job, log: Path, *, rounds: int, **env: str) -> int:
    """Start a cluster, let it run calls for a random moment, kill -9 it; ``rounds`` times or
    until the job completes. A last cluster is left running. Returns the number of kills."""
    rng = random.Random(int(os.environ.get("GAIT_TEST_SEED", time.time())))
    kills = 0
    for _ in range(rounds):
        cluster = clusters(**env)
        seen = {line[3] for line in lines(log)}
        wait_for(
            lambda s=seen: (
                {line[3] for line in lines(log)} - s or job_of(job).status == "completed"
            ),
            timeout=LEASE_SECONDS + 15,
            what="a new worker to run calls",
        )
        time.sleep(rng.uniform(0.1, 0.6))
        if job_of(job).status == "completed":
            break
        cluster.kill()
        kills += 1
    clusters(**env)
    return kills
