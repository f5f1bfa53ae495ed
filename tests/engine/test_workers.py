"""The engine end to end: real `qcluster` processes on PostgreSQL, real kill -9, real commands.

Every test submits through the lifecycle services (jobs.services) and watches the database the
workers write, exactly as an operator would.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from approvals.models import ApprovalRequest
from approvals.policies import PolicyBinding, policy_save
from approvals.services import approval_decide
from gaitweb.lib.actors import Actor
from jobs.enqueue import advance_enqueue
from jobs.journal import chain_verify
from jobs.management.commands.gait import main
from jobs.models import Checkpoint, Job, JobEvent, StepRun
from jobs.services import (
    job_approve,
    job_cancel,
    job_pause,
    job_resume,
    job_retry,
    job_signal,
    job_stop,
    job_submit,
)
from tests.engine.conftest import LEASE_SECONDS
from tests.workers import wait_for

pytestmark = pytest.mark.slow

SUBMITTER = Actor.system("tester")
OPERATOR = Actor.system("otto")
REVIEWER = Actor.system("rita")


def submit(steps: list[dict[str, Any]], **spec: Any) -> Job:
    return job_submit(actor=SUBMITTER, spec={"steps": steps, **spec})


def job_of(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


def settled(
    job: Job, statuses: tuple[str, ...] = ("completed", "failed", "cancelled"), timeout: float = 30
) -> Job:
    return wait_for(
        lambda: (j := job_of(job)).status in statuses and j.lease_token is None and j,
        timeout=timeout,
        what=f"{job.job_id} to reach {statuses}",
    )


def events(job: Job) -> list[tuple[str, str]]:
    return list(
        JobEvent.objects.filter(job=job).order_by("revision").values_list("type", "reason_code")
    )


def record(name: str, path: Path, seconds: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "python",
        "with": {"function": "record", "args": {"path": str(path), "seconds": seconds}},
        **extra,
    }


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_a_multi_step_job_completes_and_later_steps_read_earlier_outputs(
    clusters: Any, allow_commands: Any
) -> None:
    allow_commands("sh")
    clusters()
    job = submit(
        [
            {
                "name": "one",
                "kind": "python",
                "with": {"function": "add", "args": {"a": 1, "b": 2}},
            },
            {
                "name": "two",
                "kind": "python",
                "with": {"function": "add", "args": {"a": 10, "b": 20}},
                "idempotent": True,
            },
            {"name": "total", "kind": "python", "with": {"function": "sum_outputs"}},
            {"name": "shell", "kind": "command", "with": {"argv": ["sh", "-c", "echo done"]}},
        ]
    )
    job = settled(job)
    assert (job.status, job.status_reason_code, job.cursor) == ("completed", "job_succeeded", 4)
    assert job.outputs["total"] == {"sum": 33, "steps_seen": ["one", "two"]}
    assert job.outputs["shell"]["stdout"] == "done\n"
    assert events(job) == [
        ("submitted", "job_queued"),
        ("started", "job_started"),
        *[("step_succeeded", "step_succeeded")] * 4,
        ("completed", "job_succeeded"),
    ]
    assert chain_verify(job).ok
    assert list(StepRun.objects.filter(job=job).values_list("step_name", "attempt", "status")) == [
        ("one", 1, "succeeded"),
        ("two", 1, "succeeded"),
        ("total", 1, "succeeded"),
        ("shell", 1, "succeeded"),
    ]


def test_a_flaky_step_succeeds_on_attempt_3_with_the_backoff_respected(clusters: Any) -> None:
    clusters()
    retry = {"max_attempts": 3, "initial_interval": "0.5s", "backoff": 2.0, "max_interval": "10s"}
    job = submit(
        [
            {
                "name": "flaky",
                "kind": "python",
                "with": {"function": "fail_n_times", "args": {"n": 2}},
                "retry": retry,
            }
        ]
    )
    job = settled(job)
    assert job.status == "completed" and job.outputs["flaky"] == {"attempt": 3}
    runs = list(StepRun.objects.filter(job=job).order_by("attempt"))
    assert [(r.attempt, r.status) for r in runs] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    gaps = [
        (b.started_at - a.finished_at).total_seconds() for a, b in zip(runs, runs[1:], strict=False)
    ]
    # 0.5 s then 1.0 s, delivered by the delayed broker within its poll precision
    assert 0.5 <= gaps[0] < 1.5 and 1.0 <= gaps[1] < 2.0, gaps  # due time + at most ~1 s
    assert [t for t, _ in events(job)].count("step_retry_scheduled") == 2


def test_a_non_retryable_failure_fails_the_job_at_once(clusters: Any, tmp_path: Path) -> None:
    clusters()
    retry = {"max_attempts": 5, "initial_interval": "0.1s", "non_retryable": ["PaymentDeclined"]}
    job = submit(
        [
            {
                "name": "charge",
                "kind": "python",
                "with": {"function": "fail_n_times", "args": {"n": 9, "error": "PaymentDeclined"}},
                "retry": retry,
            },
            record("after", tmp_path / "after.log"),
        ]
    )
    job = settled(job)
    assert (job.status, job.status_reason_code, job.cursor) == ("failed", "step_non_retryable", 0)
    assert StepRun.objects.filter(job=job).count() == 1
    assert not (tmp_path / "after.log").exists()
    assert events(job)[-1] == ("failed", "step_non_retryable")
    # the journal says what the engine decided: the listed error is not retryable
    failed = JobEvent.objects.get(job=job, type="failed")
    assert failed.payload["error"]["type"] == "PaymentDeclined"
    assert failed.payload["error"]["retryable"] is False
    assert StepRun.objects.get(job=job).error["retryable"] is False


def test_a_command_that_keeps_failing_fails_the_job_with_job_non_zero_exit(
    clusters: Any, allow_commands: Any
) -> None:
    allow_commands("sh")
    clusters()
    job = submit(
        [
            {
                "name": "bad",
                "kind": "command",
                "with": {"argv": ["sh", "-c", "echo nope >&2; exit 7"]},
                "retry": {"max_attempts": 2, "initial_interval": "0.1s"},
            }
        ]
    )
    job = settled(job)
    assert (job.status, job.status_reason_code) == ("failed", "job_non_zero_exit")
    last = StepRun.objects.filter(job=job).order_by("-attempt").first()
    assert last.attempt == 2 and last.error["exit_code"] == 7 and last.stderr == "nope\n"


def test_operator_retry_resumes_at_the_failed_step_keeping_completed_outputs(
    clusters: Any, tmp_path: Path
) -> None:
    clusters()
    log = tmp_path / "side-effects.log"
    job = submit(
        [
            record("first", log),
            {
                "name": "flaky",
                "kind": "python",
                "with": {"function": "fail_n_times", "args": {"n": 1}},
            },
            record("last", log),
        ]
    )
    job = settled(job)
    assert (job.status, job.status_reason_code, job.cursor) == ("failed", "job_runtime_error", 1)
    job_retry(actor=OPERATOR, job_id=job.job_id)
    job = settled(job)
    assert job.status == "completed" and job.outputs["flaky"] == {"attempt": 2}
    assert [line[1] for line in lines(log)] == ["first", "last"]  # "first" was not run again


def test_kill_9_at_random_points_still_completes_every_step_exactly_once(
    clusters: Any, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("GAIT_TEST_SEED", time.time())))
    log = tmp_path / "side-effects.log"
    steps = [record(f"s{i:02d}", log, seconds=0.05, idempotent=True) for i in range(60)]
    job = submit(steps)
    kills = 0
    for _ in range(3):
        cluster = clusters()
        seen_pids = {line[3] for line in lines(log)}
        # wait until this cluster runs steps (after a kill: once the lease expired and it
        # recovered the job), then kill it at a random point
        wait_for(
            lambda s=seen_pids: {line[3] for line in lines(log)} - s,
            timeout=15,
            what="a new worker to run steps",
        )
        time.sleep(rng.uniform(0.05, 0.4))
        if job_of(job).status == "completed":
            break
        cluster.kill()
        kills += 1
    assert kills >= 2, "the job finished before the kills: make it longer"
    clusters()
    job = settled(job, timeout=60)
    assert job.status == "completed"
    ran = Counter(line[1] for line in lines(log))
    assert set(ran) == {s["name"] for s in steps}
    # A step whose checkpoint committed is never run again; only the step in flight at each
    # kill may have run twice (idempotent steps are retried, by design).
    repeated = {name: n for name, n in ran.items() if n > 1}
    assert len(repeated) <= kills and all(n == 2 for n in repeated.values()), repeated
    assert StepRun.objects.filter(job=job, status="succeeded").count() == 60
    assert [t for t, _ in events(job)].count("recovered") == kills
    assert chain_verify(job).ok


def test_a_non_idempotent_step_cut_by_kill_9_goes_to_decision_needed(
    clusters: Any, tmp_path: Path
) -> None:
    log = tmp_path / "side-effects.log"
    # "transfer" follows a quick step, so its started record rides on that step's checkpoint
    transfer = record("transfer", log, seconds=30)
    transfer["with"]["args"]["slow_attempts"] = 1  # the re-run after the decision is quick
    job = submit([record("prepare", log), transfer, record("notify", log)])
    cluster = clusters()
    wait_for(lambda: len(lines(log)) == 2, timeout=15, what="the transfer step to start")
    killed_at = time.monotonic()
    cluster.kill()
    clusters()
    job = settled(job, ("decision_needed",), timeout=LEASE_SECONDS + 10)
    assert time.monotonic() - killed_at < LEASE_SECONDS + 5
    run = StepRun.objects.get(job=job, step_name="transfer")
    assert run.status == "in_doubt" and run.error["type"] == "in_doubt"
    checkpoint = Checkpoint.objects.get(job=job)
    assert checkpoint.type == "decision-needed" and "transfer may have run" in checkpoint.summary
    assert ("recovered", "job_recovered_after_restart") in events(job)
    assert len(lines(log)) == 2  # nothing was repeated silently

    # the operator checks, approves and resumes: the step runs again as a new attempt
    job_approve(actor=REVIEWER, job_id=job.job_id, reason="checked the ledger: not applied")
    job_resume(actor=OPERATOR, job_id=job.job_id)
    job = settled(job)
    assert job.status == "completed"
    assert [
        (r.attempt, r.status) for r in StepRun.objects.filter(job=job, step_name="transfer")
    ] == [(1, "in_doubt"), (2, "succeeded")]


def test_stop_kills_a_running_sleep_60_command_and_its_group_in_under_a_second(
    clusters: Any, tmp_path: Path, allow_commands: Any
) -> None:
    allow_commands(shell=True)
    clusters()
    pidfile = tmp_path / "pids"
    job = submit(
        [
            {
                "name": "long",
                "kind": "command",
                "with": {"shell": True, "command": f"sleep 60 & echo $! > {pidfile}; sleep 60"},
            },
            record("never", tmp_path / "never.log"),
        ]
    )
    wait_for(
        lambda: pidfile.exists() and pidfile.read_text().strip(),
        timeout=15,
        what="the command to start",
    )
    child = int(pidfile.read_text())
    job_stop(actor=OPERATOR, job_id=job.job_id, reason="runaway")
    # long before the command's own 60 s: the stop killed it (how fast is bench/'s figure)
    wait_for(lambda: not _alive(child), timeout=5, interval=0.01, what="the process group to die")
    job = settled(job, ("emergency_stopped",), timeout=5)
    run = StepRun.objects.get(job=job, step_name="long")
    assert run.status == "cancelled"
    assert ("step_cancelled", "emergency_stop_preempted") in events(job)
    time.sleep(0.5)
    assert not (tmp_path / "never.log").exists()
    assert job_of(job).status == "emergency_stopped"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie whose parent has not reaped it yet is dead for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_sleep_and_wait_event_park_the_job_and_a_signal_wakes_it(clusters: Any) -> None:
    clusters(GAIT_Q_WORKERS="1")
    job = submit(
        [
            {"name": "nap", "kind": "sleep", "with": {"duration": "1s"}},
            {
                "name": "approval-mail",
                "kind": "wait_event",
                "with": {"signal": "mail-received", "timeout": "1h"},
            },
            {"name": "after", "kind": "python", "with": {"function": "echo", "args": {"ok": True}}},
        ]
    )
    waiting = settled(job, ("waiting",), timeout=10)
    assert waiting.wake_at is not None and waiting.cursor == 0
    job = wait_for(
        lambda: (j := job_of(job)).cursor == 1 and j.status == "waiting" and j,
        timeout=10,
        what="the signal wait",
    )
    nap = StepRun.objects.get(job=job, step_name="nap")
    slept = (nap.finished_at - nap.started_at).total_seconds()
    assert 1.0 <= slept < 2.0, slept  # fired within a second of its due time, no worker held
    assert job.wake_at is not None  # the wait's timeout
    time.sleep(0.5)
    assert job_of(job).status == "waiting"
    job_signal(actor=SUBMITTER, job_id=job.job_id, name="mail-received", payload={"from": "bank"})
    job = settled(job)
    assert job.status == "completed"
    assert job.outputs["approval-mail"]["payload"] == {"from": "bank"}
    assert ("signal_received", "signal_received") in events(job)


def test_a_signal_sent_before_the_wait_is_buffered(clusters: Any) -> None:
    job = submit(
        [
            {"name": "nap", "kind": "sleep", "with": {"duration": "0.5s"}},
            {"name": "wait", "kind": "wait_event", "with": {"signal": "go"}},
        ]
    )
    job_signal(actor=SUBMITTER, job_id=job.job_id, name="go", payload=1)
    clusters()
    job = settled(job)
    assert job.status == "completed" and job.outputs["wait"]["payload"] == 1


def test_two_clusters_never_run_one_job_at_the_same_time(clusters: Any, tmp_path: Path) -> None:
    clusters()
    clusters()
    log = tmp_path / "side-effects.log"
    jobs = [submit([record(f"s{i}", log, seconds=0.02) for i in range(8)]) for _ in range(6)]
    for job in jobs:  # duplicate deliveries land on both clusters
        for _ in range(4):
            advance_enqueue(job.job_id)
    for job in jobs:
        assert settled(job).status == "completed"
    by_job: dict[str, list[tuple[str, float, str]]] = {}
    for job_id, step, _attempt, pid, at in lines(log):
        by_job.setdefault(job_id, []).append((step, float(at), pid))
    for job in jobs:
        seen = sorted(by_job[job.job_id], key=lambda x: x[1])
        assert [s for s, _, _ in seen] == [f"s{i}" for i in range(8)]  # each once, in order
        starts = [t for _, t, _ in seen]
        assert all(
            b - a >= 0.02 for a, b in zip(starts, starts[1:], strict=False)
        )  # never overlapping
    assert JobEvent.objects.filter(type="started").count() == len(jobs)


def test_pause_takes_effect_at_the_next_step_boundary(clusters: Any, tmp_path: Path) -> None:
    clusters()
    log = tmp_path / "side-effects.log"
    job = submit([record("a", log, seconds=1.0), record("b", log), record("c", log)])
    wait_for(lambda: lines(log), timeout=15, what="step a to start")
    job_pause(actor=OPERATOR, job_id=job.job_id)
    job = settled(job, ("paused",), timeout=5)
    assert job.cursor == 1 and StepRun.objects.get(job=job, step_name="a").status == "succeeded"
    time.sleep(0.5)
    assert [line[1] for line in lines(log)] == ["a"]
    job_resume(actor=OPERATOR, job_id=job.job_id)
    assert settled(job).status == "completed"
    assert [line[1] for line in lines(log)] == ["a", "b", "c"]
    # nothing was left "started" (in doubt) by the pause between two non-idempotent steps
    assert list(StepRun.objects.filter(job=job).values_list("step_name", "attempt", "status")) == [
        ("a", 1, "succeeded"),
        ("b", 1, "succeeded"),
        ("c", 1, "succeeded"),
    ]


def test_an_approval_step_parks_until_approved_and_a_rejection_blocks(
    clusters: Any, cast: Any
) -> None:
    clusters()
    step = {"name": "review", "kind": "approval", "with": {"summary": "Refund 420 EUR?"}}
    after = {
        "name": "refund",
        "kind": "python",
        "with": {"function": "echo", "args": {"refunded": 420}},
    }
    approved, rejected = submit([step, after]), submit([step, after])
    for job in (approved, rejected):
        settled(job, ("decision_needed",), timeout=10)
    request = ApprovalRequest.objects.get(job=approved)
    assert request.status == "pending" and request.summary == "Refund 420 EUR?"
    approval_decide(
        actor=cast.actor("reviewer"), request_id=request.request_id, decision="approve", reason="ok"
    )
    job = settled(approved)
    assert job.status == "completed" and job.outputs["refund"] == {"refunded": 420}
    approval_decide(
        actor=cast.actor("reviewer"),
        request_id=ApprovalRequest.objects.get(job=rejected).request_id,
        decision="reject",
        reason="no",
    )
    job = job_of(rejected)
    assert job.status == "blocked" and job.cursor == 0


def test_an_expired_approval_is_rejected_by_the_sweep_without_anyone_acting(clusters: Any) -> None:
    clusters()
    step = {
        "name": "review",
        "kind": "approval",
        "with": {"summary": "Refund 420 EUR?", "expires_in": "1s", "on_expiry": "reject"},
    }
    job = settled(submit([step]), ("decision_needed",), timeout=10)
    job = settled(job, ("blocked",), timeout=15)
    request = ApprovalRequest.objects.get(job=job)
    assert request.status == "expired" and request.resolved_at is not None
    assert ("rejected", "approval_rejected") in events(job)
    assert chain_verify(job).ok


def test_a_step_longer_than_the_lease_keeps_its_worker_thanks_to_the_heartbeat(
    clusters: Any, tmp_path: Path
) -> None:
    clusters()
    clusters()
    log = tmp_path / "side-effects.log"
    job = submit([record("long", log, seconds=LEASE_SECONDS * 2.5)])
    job = settled(job, timeout=30)
    assert job.status == "completed"
    assert len(lines(log)) == 1
    assert "recovered" not in [t for t, _ in events(job)]


def test_a_job_past_its_deadline_fails_with_job_timeout_even_while_sleeping(clusters: Any) -> None:
    clusters()
    settled(
        submit([{"name": "warm-up", "kind": "python", "with": {"function": "noop"}}]), timeout=20
    )
    job = submit([{"name": "nap", "kind": "sleep", "with": {"duration": "1h"}}], deadline="2s")
    waiting = settled(job, ("waiting",), timeout=5)
    assert waiting.wake_at == waiting.deadline  # woken for the deadline, not in an hour
    job = settled(job, timeout=10)
    assert (job.status, job.status_reason_code) == ("failed", "job_timeout")
    assert 2 <= (job.finished_at - job.created_at).total_seconds() < 4


POLICY = """\
schema_id: gait.gate.policy
schema_version: 1.0.0
default_verdict: allow
rules:
  - name: no-shell
    priority: 10
    effect: block
    match:
      tool_names: [command:sh]
    reason_codes: [shell_forbidden]
  - name: payments-need-a-human
    priority: 20
    effect: require_approval
    match:
      tool_names: [python:record]
    reason_codes: [payment_needs_approval]
"""


def test_the_gate_is_asked_before_each_step_of_a_policy_bound_job(
    clusters: Any, cast: Any, tmp_path: Path, allow_commands: Any
) -> None:
    allow_commands("sh", "python3")

    version = policy_save(actor=SUBMITTER, name="engine-test", source=POLICY)
    binding = PolicyBinding.of(version)
    log = tmp_path / "side-effects.log"

    def submit_bound(steps: list[dict[str, Any]]) -> Job:
        return job_submit(actor=SUBMITTER, policy=binding, spec={"steps": steps})

    def appends(word: str, **extra: Any) -> dict[str, Any]:
        code = f"open({str(log)!r}, 'a').write('job {word} 1\\n')"
        return {"name": word, "kind": "command", "with": {"argv": ["python3", "-c", code]}, **extra}

    clusters()
    # the shell step calls itself tool.read: the gate matches what it runs (command:sh)
    blocked = submit_bound(
        [
            {"name": "read", "kind": "python", "with": {"function": "echo"}},
            {
                **appends("rm"),
                "with": {"argv": ["sh", "-c", f"echo job rm 1 >> {log}"]},
                "tool": "tool.read",
            },
        ]
    )
    charged = submit_bound(
        [{**record("charge", log), "tool": "payments.charge"}, appends("receipt")]
    )

    job = settled(blocked, ("blocked",), timeout=15)
    assert job.cursor == 1 and Checkpoint.objects.get(job=job).type == "blocked"
    summary = Checkpoint.objects.get(job=job).summary
    assert "shell_forbidden" in summary and "command:sh, labelled tool.read" in summary

    job = settled(charged, ("decision_needed",), timeout=15)
    request = ApprovalRequest.objects.get(job=job)
    assert (request.tool_name, request.step_name) == ("python:record", "charge")
    assert lines(log) == []  # neither rm nor charge ran
    approval_decide(
        actor=cast.actor("reviewer"), request_id=request.request_id, decision="approve", reason="ok"
    )
    job = settled(charged)
    assert job.status == "completed"
    assert sorted(line[1] for line in lines(log)) == ["charge", "receipt"]


def test_a_python_step_sees_stopped_and_the_next_dispatch_is_journaled_as_blocked(
    clusters: Any, tmp_path: Path
) -> None:
    clusters()
    log = tmp_path / "side-effects.log"
    job = submit(
        [
            record("begin", log),
            {
                "name": "agent-loop",
                "kind": "python",
                "with": {"function": "wait_until_stopped", "args": {"seconds": 60}},
            },
            record("never", log),
        ]
    )
    wait_for(
        lambda: (j := job_of(job)).cursor == 1 and j.lease_token,
        timeout=15,
        what="the python step to run",
    )
    time.sleep(0.3)
    started = time.monotonic()
    job_stop(actor=OPERATOR, job_id=job.job_id, reason="enough")
    job = wait_for(
        lambda: (j := job_of(job)).lease_token is None and j,
        timeout=5,
        interval=0.01,
        what="the lease release",
    )
    assert time.monotonic() - started < 1.0
    assert job.status == "emergency_stopped"
    assert StepRun.objects.get(job=job, step_name="agent-loop").output == {"stopped": True}
    assert events(job)[-1] == ("dispatch_blocked", "emergency_stop_preempted")
    assert [line[1] for line in lines(log)] == ["begin"]


def test_an_http_step_retries_5xx_with_the_same_idempotency_key_until_it_succeeds(
    clusters: Any, allow_http_host: Any
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str | None] = []

    class Flaky(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("Idempotency-Key"))
            status, body = (503, b"busy") if len(seen) < 3 else (201, b'{"charged": 42}')
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    allow_http_host("127.0.0.1", server.server_address[1])  # an internal service
    try:
        clusters()
        url = f"http://127.0.0.1:{server.server_address[1]}/charges"
        retry = {"max_attempts": 4, "initial_interval": "0.2s"}
        job = submit(
            [
                {
                    "name": "charge",
                    "kind": "http",
                    "with": {"method": "POST", "url": url, "json": {"amount": 42}},
                    "retry": retry,
                }
            ]
        )
        job = settled(job, timeout=20)
    finally:
        server.shutdown()
    assert job.status == "completed" and job.outputs["charge"] == {
        "status_code": 201,
        "json": {"charged": 42},
    }
    assert seen == [f"{job.job_id}/charge"] * 3
    assert [r.error["type"] if r.error else "ok" for r in StepRun.objects.filter(job=job)] == [
        "http_503",
        "http_503",
        "ok",
    ]


def test_cancel_kills_a_running_command_and_finishes_the_job(
    clusters: Any, tmp_path: Path, allow_commands: Any
) -> None:
    allow_commands(shell=True)
    clusters()
    pidfile = tmp_path / "pid"
    job = submit(
        [
            {
                "name": "long",
                "kind": "command",
                "with": {"shell": True, "command": f"echo $$ > {pidfile}; exec sleep 60"},
            }
        ]
    )
    wait_for(
        lambda: pidfile.exists() and pidfile.read_text().strip(),
        timeout=15,
        what="the command to start",
    )
    pid = int(pidfile.read_text())
    started = time.monotonic()
    job_cancel(actor=OPERATOR, job_id=job.job_id, reason="not needed")
    wait_for(lambda: not _alive(pid), timeout=5, interval=0.01, what="the command to die")
    assert time.monotonic() - started < 1.0
    job = settled(job, ("cancelled",), timeout=5)
    assert job.status_reason_code == "job_cancelled_during_run"
    assert StepRun.objects.get(job=job).status == "cancelled"
    assert ("step_cancelled", "job_cancelled_during_run") in events(job)


def test_kill_9_of_the_worker_kills_its_command_and_everything_the_command_started(
    clusters: Any, tmp_path: Path, allow_commands: Any
) -> None:
    """The command runs in its own session, out of reach of a kill of the worker's group: it
    still dies with its worker (the kernel's parent-death signal, then the group watchdog)."""
    allow_commands(shell=True)
    cluster = clusters()
    pidfile = tmp_path / "pids"
    submit(
        [
            {
                "name": "long",
                "kind": "command",
                "with": {"shell": True, "command": f"sleep 120 & echo $$ $! > {pidfile}; wait"},
            }
        ]
    )
    wait_for(
        lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2,
        timeout=15,
        what="the command and its background child to start",
    )
    leader, child = (int(p) for p in pidfile.read_text().split())
    assert _alive(leader) and _alive(child)
    cluster.kill()  # kill -9 of the qcluster's whole process group
    wait_for(lambda: not _alive(leader), timeout=5, interval=0.05, what="the command to die")
    wait_for(lambda: not _alive(child), timeout=5, interval=0.05, what="its background child")


def test_a_recovered_attempt_of_an_idempotent_command_is_numbered_after_the_lost_one(
    clusters: Any, tmp_path: Path, allow_commands: Any
) -> None:
    allow_commands(shell=True)
    seen = tmp_path / "attempts"
    job = submit(
        [
            {
                "name": "sync",
                "kind": "command",
                "idempotent": True,
                "retry": {"max_attempts": 3},
                # the first attempt hangs (its worker is killed), the next one finishes
                "with": {
                    "shell": True,
                    "command": f'echo "$GAIT_ATTEMPT" >> {seen}; '
                    f'[ "$GAIT_ATTEMPT" = 1 ] && sleep 60; exit 0',
                },
            }
        ]
    )
    cluster = clusters()
    wait_for(lambda: seen.exists() and seen.read_text(), timeout=15, what="attempt 1 to start")
    cluster.kill()
    clusters()
    job = settled(job, timeout=LEASE_SECONDS + 15)
    assert job.status == "completed"
    assert seen.read_text().split() == ["1", "2"]
    runs = list(StepRun.objects.filter(job=job).order_by("attempt"))
    assert [(r.attempt, r.status) for r in runs] == [(1, "failed"), (2, "succeeded")]
    assert runs[0].error["type"] == "worker_lost" and runs[0].error["retryable"] is True
    assert ("recovered", "job_recovered_after_restart") in events(job)


def test_jobs_stats_counts_step_attempts_retries_and_failures(clusters: Any, capsys: Any) -> None:
    """`gait jobs stats` after a flaky step (two retries) and a step that gives up."""
    import json as _json

    clusters()
    retry = {"max_attempts": 3, "initial_interval": "0.1s", "backoff": 1.0}
    flaky = submit(
        [
            {
                "name": "flaky",
                "kind": "python",
                "with": {"function": "fail_n_times", "args": {"n": 2}},
                "retry": retry,
            }
        ]
    )
    broken = submit(
        [
            {
                "name": "broken",
                "kind": "python",
                "with": {"function": "fail_n_times", "args": {"n": 9}},
                "retry": {"max_attempts": 2, "initial_interval": "0.1s"},
            }
        ]
    )
    assert settled(flaky).status == "completed" and settled(broken).status == "failed"
    capsys.readouterr()
    assert main(["jobs", "stats", "--json"]) == 0
    steps = _json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stats"]["steps"]
    assert steps == {
        "started": 5,
        "running": 0,
        "succeeded": 1,
        "failed": 4,
        "timed_out": 0,
        "cancelled": 0,
        "in_doubt": 0,
        "retried": 3,
    }
