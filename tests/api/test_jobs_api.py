"""Jobs over HTTP: submit (idempotent), list, detail, events, checkpoints, steps, signals,
every lifecycle action, inspect and verify-chain — success and refusal."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from gaitweb.lib.actors import Actor
from jobs.engine.sweep import SWEEP_BEAT_KEY
from jobs.models import Job, JobEvent, StepRun
from jobs.services import job_submit
from tests.api.conftest import error_code, submit

pytestmark = pytest.mark.django_db

SLEEP_SPEC = {"steps": [{"name": "nap", "kind": "sleep", "with": {"duration": "1s"}}]}
WAIT_SPEC = {"steps": [{"name": "hold", "kind": "wait_event", "with": {"signal": "go"}}]}


def test_submit_without_steps_creates_a_running_job_bound_to_the_keys_identity(
    agent: APIClient,
) -> None:
    r = submit(agent, job_id="j-1", labels={"team": "billing"})
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["job_id"] == "j-1" and body["status"] == "running"
    assert body["identity"] == "agent-7" and body["created_by"] == "agent-7"
    assert body["labels"] == {"team": "billing"} and body["revision"] == 1
    assert r["Location"] == "/api/v1/jobs/j-1"


def test_submit_with_a_spec_queues_the_job(agent: APIClient) -> None:
    r = submit(agent, spec=SLEEP_SPEC)
    assert r.status_code == 201, r.content
    assert r.json()["status"] == "queued" and r.json()["step_count"] == 1
    assert Job.objects.get(job_id=r.json()["job_id"]).status == "queued"


def test_a_bad_spec_is_refused_with_the_path_of_the_field_and_nothing_is_written(
    agent: APIClient,
) -> None:
    r = submit(agent, job_id="j-bad", spec={"steps": [{"name": "x", "kind": "teleport"}]})
    assert r.status_code == 400
    assert error_code(r) == "spec_unknown_kind"
    assert not Job.objects.filter(job_id="j-bad").exists()


def test_an_api_key_cannot_submit_for_another_identity(agent: APIClient) -> None:
    r = submit(agent, job_id="j-spoof", identity="someone-else")
    assert r.status_code == 422 and error_code(r) == "identity_binding_mismatch"
    assert not Job.objects.filter(job_id="j-spoof").exists()


def test_submit_refuses_an_unknown_policy(agent: APIClient) -> None:
    r = submit(agent, job_id="j-pol", policy="no-such-policy")
    assert r.status_code == 404 and error_code(r) == "policy_not_found"


def test_a_retried_submit_with_the_same_idempotency_key_returns_the_same_job(
    agent: APIClient,
) -> None:
    first = agent.post(
        "/api/v1/jobs", {"labels": {"a": "1"}}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    again = agent.post(
        "/api/v1/jobs", {"labels": {"a": "1"}}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Job.objects.count() == 1


def test_a_replayed_submit_shows_the_job_as_it_is_now(agent: APIClient) -> None:
    body = {"labels": {"a": "1"}}
    first = agent.post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="k-now")
    job_id = first.json()["job_id"]
    assert agent.post(f"/api/v1/jobs/{job_id}/cancel", {}, format="json").status_code == 200
    again = agent.post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="k-now")
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    now = agent.get(f"/api/v1/jobs/{job_id}").json()
    assert again.json() == now and now["status"] == "cancelled"
    assert now["revision"] > first.json()["revision"]


def test_the_same_idempotency_key_with_a_different_body_is_a_409(agent: APIClient) -> None:
    agent.post("/api/v1/jobs", {"labels": {"a": "1"}}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    r = agent.post(
        "/api/v1/jobs", {"labels": {"a": "2"}}, format="json", HTTP_IDEMPOTENCY_KEY="k-2"
    )
    assert r.status_code == 409 and error_code(r) == "idempotency_key_reused"
    assert Job.objects.count() == 1


def test_idempotency_keys_are_scoped_to_the_caller(key_client: Any) -> None:
    one, two = key_client(identity="agent-a"), key_client(identity="agent-b")
    a = one.post("/api/v1/jobs", {}, format="json", HTTP_IDEMPOTENCY_KEY="same")
    b = two.post("/api/v1/jobs", {}, format="json", HTTP_IDEMPOTENCY_KEY="same")
    assert a.status_code == b.status_code == 201
    assert a.json()["job_id"] != b.json()["job_id"]


def test_a_retried_submit_with_the_same_client_job_id_returns_the_job_and_a_different_body_is_409(
    agent: APIClient,
) -> None:
    assert submit(agent, job_id="j-same", labels={"x": "1"}).status_code == 201
    again = submit(agent, job_id="j-same", labels={"x": "1"})
    assert again.status_code == 200 and again.json()["job_id"] == "j-same"
    other = submit(agent, job_id="j-same", labels={"x": "2"})
    assert other.status_code == 409 and error_code(other) == "job_exists"
    assert Job.objects.filter(job_id="j-same").count() == 1
    assert JobEvent.objects.filter(job__job_id="j-same").count() == 1


def test_a_job_id_taken_outside_the_api_is_a_409_job_exists(agent: APIClient) -> None:
    job_submit(actor=Actor.system("cli"), job_id="j-cli")
    r = submit(agent, job_id="j-cli")
    assert r.status_code == 409 and error_code(r) == "job_exists"


def test_list_filters_by_status_identity_label_and_created_range(
    agent: APIClient, key_client: Any
) -> None:
    submit(agent, job_id="a1", labels={"team": "billing"})
    submit(agent, job_id="a2", spec=SLEEP_SPEC, labels={"team": "ops"})
    submit(key_client(identity="other"), job_id="b1", labels={"team": "billing"})
    ops = key_client("read,cross_identity", identity="ops-bot")

    def ids(query: str, client: APIClient = ops) -> list[str]:
        r = client.get("/api/v1/jobs" + query)
        assert r.status_code == 200, r.content
        return [j["job_id"] for j in r.json()["results"]]

    assert ids("") == ["b1", "a2", "a1"]  # newest first
    assert ids("?status=queued") == ["a2"]
    assert ids("?status=queued,running") == ["b1", "a2", "a1"]
    assert ids("?identity=other") == ["b1"]
    assert ids("?label=team=billing") == ["b1", "a1"]
    assert ids("?label=team=billing&identity=agent-7") == ["a1"]
    assert ids("?label=team") == ["b1", "a2", "a1"]
    assert ids("?q=a") == ["a2", "a1"]
    a2 = Job.objects.get(job_id="a2").created_at.isoformat().replace("+00:00", "Z")
    assert ids(f"?created_after={a2}") == ["b1", "a2"]
    assert ids(f"?created_before={a2}") == ["a1"]
    # an identity-bound key lists its own identity's jobs only, whatever it filters on
    assert ids("", agent) == ["a2", "a1"]
    assert ids("?identity=other", agent) == []
    assert ids("?label=team=billing", agent) == ["a1"]


def test_list_pages_with_a_cursor_newest_first_without_overlap(agent: APIClient) -> None:
    for i in range(7):
        submit(agent, job_id=f"p{i}")
    seen, url = [], "/api/v1/jobs?page_size=3"
    while url:
        r = agent.get(url)
        assert r.status_code == 200
        seen += [j["job_id"] for j in r.json()["results"]]
        url = r.json()["next"]
    assert seen == [f"p{i}" for i in reversed(range(7))]


def test_pagination_is_stable_while_jobs_are_being_inserted(agent: APIClient) -> None:
    for i in range(10):
        submit(agent, job_id=f"old{i}")
    r = agent.get("/api/v1/jobs?page_size=4")
    seen = [j["job_id"] for j in r.json()["results"]]
    cursor = r.json()["next_cursor"]
    n = 0
    while cursor:
        submit(agent, job_id=f"new{n}")  # inserted between page fetches: newer than every cursor
        n += 1
        r = agent.get(f"/api/v1/jobs?page_size=4&cursor={cursor}")
        seen += [j["job_id"] for j in r.json()["results"]]
        cursor = r.json()["next_cursor"]
    assert seen == [f"old{i}" for i in reversed(range(10))]  # no duplicates, no gaps, no intruders
    assert n == 2


def test_detail_shows_the_job_and_a_missing_job_is_404(agent: APIClient) -> None:
    submit(agent, job_id="d1")
    assert agent.get("/api/v1/jobs/d1").json()["status"] == "running"
    r = agent.get("/api/v1/jobs/d2")
    assert r.status_code == 404 and error_code(r) == "job_not_found"


def test_events_are_paginated_in_journal_order_with_their_hash_chain(agent: APIClient) -> None:
    submit(agent, job_id="e1")
    for i in range(4):
        agent.post(
            "/api/v1/jobs/e1/checkpoints",
            {"type": "progress", "summary": f"step {i}"},
            format="json",
        )
    first = agent.get("/api/v1/jobs/e1/events?page_size=2").json()
    second = agent.get(first["next"]).json()
    events = first["results"] + second["results"] + agent.get(second["next"]).json()["results"]
    assert [e["revision"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["prev_hash"] == "0" * 64
    for prev, cur in zip(events, events[1:], strict=False):
        assert cur["prev_hash"] == prev["hash"]
    assert events[-1]["hash"] == agent.get("/api/v1/jobs/e1").json()["last_event_hash"]


def test_checkpoints_add_list_and_show(agent: APIClient) -> None:
    submit(agent, job_id="c1")
    r = agent.post(
        "/api/v1/jobs/c1/checkpoints",
        {"type": "plan", "summary": "read, then write"},
        format="json",
    )
    assert r.status_code == 201, r.content
    assert (
        r.json()["checkpoint"]["checkpoint_id"] == "cp_0001"
        and r.json()["job"]["checkpoint_count"] == 1
    )
    r = agent.post(
        "/api/v1/jobs/c1/checkpoints",
        {"type": "decision-needed", "summary": "refund?", "required_action": "approve the refund"},
        format="json",
    )
    assert r.json()["job"]["status"] == "decision_needed"
    listed = agent.get("/api/v1/jobs/c1/checkpoints").json()["results"]
    assert [c["checkpoint_id"] for c in listed] == ["cp_0001", "cp_0002"]
    shown = agent.get("/api/v1/jobs/c1/checkpoints/cp_0002").json()
    assert shown["required_action"] == "approve the refund" and shown["actor"] == "agent-7"
    r = agent.get("/api/v1/jobs/c1/checkpoints/cp_0009")
    assert r.status_code == 404 and error_code(r) == "checkpoint_not_found"


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"type": "nap", "summary": "x"}, 400, "invalid_checkpoint_type"),
        ({"type": "plan", "summary": ""}, 400, "missing_summary"),
        ({"type": "plan", "summary": "x" * 513}, 400, "summary_too_long"),
        (
            {"type": "plan", "summary": "x", "required_action": "y"},
            400,
            "required_action_not_allowed",
        ),
        ({"summary": "x"}, 400, "invalid_input"),
    ],
)
def test_bad_checkpoints_are_refused_with_the_services_codes(
    agent: APIClient, body: dict, status: int, code: str
) -> None:
    submit(agent, job_id="c2")
    r = agent.post("/api/v1/jobs/c2/checkpoints", body, format="json")
    assert r.status_code == status and error_code(r) == code
    assert Job.objects.get(job_id="c2").revision == 1


def test_a_checkpoint_from_the_wrong_status_is_a_409_invalid_transition(agent: APIClient) -> None:
    submit(agent, job_id="c3")
    agent.post(
        "/api/v1/jobs/c3/checkpoints", {"type": "completed", "summary": "done"}, format="json"
    )
    r = agent.post(
        "/api/v1/jobs/c3/checkpoints", {"type": "completed", "summary": "again"}, format="json"
    )
    assert r.status_code == 409 and error_code(r) == "invalid_transition"


def test_steps_list_runs_with_outputs_errors_and_log_tails(
    agent: APIClient, allow_commands: Any
) -> None:
    from django.utils import timezone

    allow_commands("true")
    submit(
        agent,
        job_id="s1",
        spec={"steps": [{"name": "sh", "kind": "command", "with": {"argv": ["true"]}}]},
    )
    job = Job.objects.get(job_id="s1")
    now = timezone.now()
    StepRun.objects.create(
        job=job,
        step_index=0,
        step_name="sh",
        attempt=1,
        status="failed",
        error={"type": "exit", "message": "1"},
        stderr="boom\n",
        started_at=now,
        finished_at=now,
    )
    StepRun.objects.create(
        job=job,
        step_index=0,
        step_name="sh",
        attempt=2,
        status="succeeded",
        output={"n": 1},
        stdout="ok\n",
        started_at=now,
        finished_at=now,
    )
    runs = agent.get("/api/v1/jobs/s1/steps").json()["results"]
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "failed"), (2, "succeeded")]
    assert runs[0]["stderr_tail"] == "boom\n" and runs[0]["error"]["type"] == "exit"
    assert (
        runs[1]["output"] == {"n": 1}
        and runs[1]["stdout_tail"] == "ok\n"
        and runs[1]["duration_ms"] == 0
    )


def test_signals_are_journaled_for_jobs_with_steps_and_refused_for_agent_jobs(
    agent: APIClient,
) -> None:
    submit(agent, job_id="w1", spec=WAIT_SPEC)
    r = agent.post("/api/v1/jobs/w1/signals/go", {"payload": {"ok": True}}, format="json")
    assert r.status_code == 202, r.content
    event = JobEvent.objects.filter(job__job_id="w1").order_by("-revision").first()
    assert event.type == "signal_received" and event.payload == {
        "name": "go",
        "payload": {"ok": True},
    }
    submit(agent, job_id="w2")
    r = agent.post("/api/v1/jobs/w2/signals/go", {"payload": 1}, format="json")
    assert r.status_code == 409 and error_code(r) == "invalid_transition"
    r = agent.post("/api/v1/jobs/w1/signals/bad%20name", {}, format="json")
    assert r.status_code == 400 and error_code(r) == "invalid_signal_name"


def test_pause_resume_stop_approve_resume_and_cancel_through_the_api(
    agent: APIClient, reviewer_key: APIClient
) -> None:
    submit(agent, job_id="l1")
    assert (
        agent.post("/api/v1/jobs/l1/pause", {"reason": "lunch"}, format="json").json()["status"]
        == "paused"
    )
    assert agent.post("/api/v1/jobs/l1/resume", {}, format="json").json()["status"] == "running"
    assert (
        agent.post("/api/v1/jobs/l1/stop", {"reason": "smoke"}, format="json").json()["status"]
        == "emergency_stopped"
    )
    r = agent.post("/api/v1/jobs/l1/resume", {}, format="json")
    assert r.status_code == 422 and error_code(r) == "approval_required"
    r = reviewer_key.post("/api/v1/jobs/l1/approve", {"reason": "looked fine"}, format="json")
    assert r.status_code == 200, r.content
    assert agent.post("/api/v1/jobs/l1/resume", {}, format="json").json()["status"] == "running"
    r = agent.post("/api/v1/jobs/l1/cancel", {"reason": "done"}, format="json")
    assert r.json()["status"] == "cancelled"
    r = agent.post("/api/v1/jobs/l1/pause", {}, format="json")
    assert r.status_code == 409 and error_code(r) == "invalid_transition"
    types = list(
        JobEvent.objects.filter(job__job_id="l1")
        .order_by("revision")
        .values_list("type", flat=True)
    )
    assert types == [
        "submitted",
        "paused",
        "resumed",
        "emergency_stop_acknowledged",
        "approved",
        "resumed",
        "cancelled",
    ]


def test_reject_blocks_the_job_and_needs_a_reason(
    agent: APIClient, reviewer_key: APIClient
) -> None:
    submit(agent, job_id="r1")
    agent.post(
        "/api/v1/jobs/r1/checkpoints", {"type": "decision-needed", "summary": "ok?"}, format="json"
    )
    r = reviewer_key.post("/api/v1/jobs/r1/reject", {}, format="json")
    assert r.status_code == 400 and error_code(r) == "missing_reason"
    r = reviewer_key.post("/api/v1/jobs/r1/reject", {"reason": "too risky"}, format="json")
    assert r.json()["status"] == "blocked"


def test_the_submitting_agent_cannot_approve_its_own_job(key_client: Any) -> None:
    agent = key_client("submit,read,control,approve", identity="agent-self")
    submit(agent, job_id="sa1")
    agent.post(
        "/api/v1/jobs/sa1/checkpoints", {"type": "decision-needed", "summary": "ok?"}, format="json"
    )
    r = agent.post("/api/v1/jobs/sa1/approve", {}, format="json")
    assert r.status_code == 422 and error_code(r) == "self_approval_forbidden"


def test_resume_asserts_the_keys_identity_and_refuses_another_agents_job(
    agent: APIClient, key_client: Any
) -> None:
    submit(agent, job_id="id1")
    agent.post("/api/v1/jobs/id1/pause", {}, format="json")
    intruder = key_client("control,read", identity="agent-9")
    r = intruder.post("/api/v1/jobs/id1/resume", {}, format="json")
    assert r.status_code == 404 and error_code(r) == "job_not_found"  # not even its to see
    ops = key_client("control,read,cross_identity", identity="ops-bot")
    r = ops.post("/api/v1/jobs/id1/resume", {"identity": "agent-7"}, format="json")
    assert r.status_code == 422 and error_code(r) == "identity_binding_mismatch"
    r = ops.post("/api/v1/jobs/id1/resume", {"identity": "ops-bot"}, format="json")
    assert r.status_code == 422 and error_code(r) == "identity_binding_mismatch"
    assert Job.objects.get(job_id="id1").status == "paused"
    # asserting none, a cross-identity key resumes like an operator
    r = ops.post("/api/v1/jobs/id1/resume", {}, format="json")
    assert r.status_code == 200 and r.json()["status"] == "running"


def test_resume_refuses_a_revoked_identity(agent: APIClient, admin_key: APIClient) -> None:
    submit(agent, job_id="rv1")
    agent.post("/api/v1/jobs/rv1/pause", {}, format="json")
    assert (
        admin_key.post(
            "/api/v1/identities/revocations",
            {"identity": "agent-7", "reason": "leaked"},
            format="json",
        ).status_code
        == 201
    )
    r = agent.post("/api/v1/jobs/rv1/resume", {}, format="json")
    assert r.status_code == 422 and error_code(r) == "identity_revoked"


def test_resume_re_evaluates_a_changed_policy(agent: APIClient, admin_key: APIClient) -> None:
    from tests.api.conftest import POLICY_YAML

    admin_key.post("/api/v1/policies", {"name": "payments", "source": POLICY_YAML}, format="json")
    r = submit(agent, job_id="pt1", policy="payments")
    first_digest = r.json()["policy_digest"]
    assert r.json()["policy_ref"] == "policy:payments"
    agent.post("/api/v1/jobs/pt1/pause", {}, format="json")
    admin_key.post(
        "/api/v1/policies",
        {
            "name": "payments",
            "source": POLICY_YAML.replace("default_verdict: allow", "default_verdict: block"),
        },
        format="json",
    )
    r = agent.post("/api/v1/jobs/pt1/resume", {}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["status_reason_code"] == "resumed_policy_transition"
    assert r.json()["policy_digest"] != first_digest


def test_resume_refuses_a_changed_environment_unless_allowed(agent: APIClient) -> None:
    submit(agent, job_id="env1")
    agent.post("/api/v1/jobs/env1/pause", {}, format="json")
    r = agent.post(
        "/api/v1/jobs/env1/resume", {"environment_fingerprint": "env_elsewhere"}, format="json"
    )
    assert r.status_code == 422 and error_code(r) == "environment_fingerprint_mismatch"
    r = agent.post(
        "/api/v1/jobs/env1/resume",
        {"environment_fingerprint": "env_elsewhere", "allow_env_mismatch": True},
        format="json",
    )
    assert r.status_code == 200 and r.json()["status_reason_code"] == "resumed_with_env_override"


def test_retry_requeues_a_blocked_job_with_steps_and_refuses_an_agent_job(
    agent: APIClient, reviewer_key: APIClient
) -> None:
    submit(agent, job_id="rt1")
    r = agent.post("/api/v1/jobs/rt1/retry", {}, format="json")
    assert r.status_code == 409 and error_code(r) == "invalid_transition"
    submit(agent, job_id="rt2", spec=SLEEP_SPEC)
    agent.post("/api/v1/jobs/rt2/cancel", {}, format="json")
    r = agent.post("/api/v1/jobs/rt2/retry", {"reason": "try again"}, format="json")
    assert r.status_code == 200 and r.json()["status"] == "queued"


def test_inspect_and_verify_chain(agent: APIClient) -> None:
    submit(agent, job_id="i1")
    agent.post("/api/v1/jobs/i1/checkpoints", {"type": "plan", "summary": "p"}, format="json")
    report = agent.get("/api/v1/jobs/i1/inspect").json()
    assert report["job"]["job_id"] == "i1" and len(report["checkpoints"]) == 1
    assert report["chain"]["ok"] is True and len(report["events"]) == 2
    chain = agent.get("/api/v1/jobs/i1/verify-chain").json()
    assert chain["ok"] is True and chain["chain"]["events_checked"] == 2


def test_verify_chain_reports_a_tampered_journal(agent: APIClient) -> None:
    submit(agent, job_id="t1")
    agent.post("/api/v1/jobs/t1/checkpoints", {"type": "plan", "summary": "p"}, format="json")
    JobEvent.objects.filter(job__job_id="t1", revision=1).update(actor="mallory")
    chain = agent.get("/api/v1/jobs/t1/verify-chain").json()
    assert chain["ok"] is False and chain["chain"]["first_bad_revision"] == 1


def test_stats_and_health(agent: APIClient) -> None:
    submit(agent, job_id="st1")
    stats = agent.get("/api/v1/stats").json()
    assert stats["created"] == 1 and stats["running"] == 1
    r = APIClient().get("/api/v1/health")  # no credentials needed
    assert r.status_code == 200
    body = r.json()
    assert body["database"]["ok"] is True and body["status"] in ("ok", "degraded")
    assert body["worker"]["seen_recently"] is (body["status"] == "ok")


def test_health_sees_a_worker_from_the_engines_sweep_beat() -> None:
    import time

    from django.core.cache import cache

    cache.set(SWEEP_BEAT_KEY, time.time() - 1, None)
    body = APIClient().get("/api/v1/health").json()
    assert body["status"] == "ok" and body["worker"]["seen_recently"] is True
    cache.set(SWEEP_BEAT_KEY, time.time() - 3600, None)
    body = APIClient().get("/api/v1/health").json()
    assert body["worker"]["last_beat_age_seconds"] >= 3599


@pytest.mark.django_db(transaction=True)
def test_identical_submits_racing_each_other_create_one_job(db: None, make_key: Any) -> None:
    import threading

    from django.db import connection

    raw = make_key("submit,read", identity="racer")
    barrier = threading.Barrier(4)
    answers: list[tuple[int, str]] = []

    def submit_once() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        barrier.wait()
        r = client.post(
            "/api/v1/jobs", {"labels": {"n": "1"}}, format="json", HTTP_IDEMPOTENCY_KEY="race-1"
        )
        answers.append((r.status_code, r.json().get("job_id", r.json())))
        connection.close()

    threads = [threading.Thread(target=submit_once) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(code for code, _ in answers) == [200, 200, 200, 201], answers
    assert len({job_id for _, job_id in answers}) == 1
    assert Job.objects.filter(identity="racer").count() == 1


def test_repeated_api_reads_run_as_prepared_statements_on_postgresql(
    postgres_only: None, agent: APIClient
) -> None:
    """settings.py turns on server-side binding with a prepare threshold: the hot statements
    are planned once per connection (bench/api_bench.py measures what that saves)."""
    from django.db import connection

    assert submit(agent, job_id="j-prep").status_code == 201
    for _ in range(6):
        assert agent.get("/api/v1/jobs/j-prep").status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any('FROM "gaitweb_apikey"' in s for s in prepared), prepared
    assert any('FROM "jobs_job"' in s and "$1" in s for s in prepared), prepared
