"""External agents' durable calls (``GaitClient.run``) against a real server (live_server):
replay after a restart, the gate on every tool call, approvals waited for, identity scoping and
strict input on the new endpoints."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from approvals.identities import identity_policy_set
from gaitclient import CallFailed, GaitApiError, GaitClient, Stopped, ToolBlocked, ToolRejected
from gaitweb.apikeys import apikey_create
from gaitweb.lib.actors import Actor
from jobs.models import Job, StepRun
from tests.workflow_world import policy_stored


@pytest.fixture
def keys(transactional_db: Any) -> dict[str, str]:
    admin = Actor.system("admin")
    policy_stored("calls")
    identity_policy_set(actor=admin, identity="refund-agent", policy="calls")

    def key(identity: str, scopes: str) -> str:
        return apikey_create(actor=admin, identity=identity, scopes=scopes).key

    return {
        "agent": key("refund-agent", "submit,read,control"),
        "other": key("other-agent", "submit,read,control"),
        "reviewer": key("rita", "approve,read,cross_identity"),
    }


@pytest.fixture
def gw(live_server: Any, keys: dict[str, str]) -> GaitClient:
    return GaitClient(live_server.url, api_key=keys["agent"])


def counter(path: Path, what: str) -> Any:
    def fn(**kwargs: Any) -> str:
        with open(path, "a") as f:
            f.write(what + "\n")
        return f"{what}-done"

    return fn


def seen(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_restarted_agent_replays_its_calls_instead_of_repeating_them(
    gw: GaitClient, tmp_path: Path
) -> None:
    log = tmp_path / "fx"
    gw.submit(job_id="ext-1")
    with pytest.raises(RuntimeError), gw.run("ext-1") as run:
        assert run.step("fetch", counter(log, "fetch")) == "fetch-done"
        assert run.tool("invoices.read", {"id": 42}, run=counter(log, "read")) == "read-done"
        raise RuntimeError("the agent's process dies here")
    with gw.run("ext-1") as run:  # the restarted process
        assert run.step("fetch", counter(log, "fetch")) == "fetch-done"
        assert run.tool("invoices.read", {"id": 42}, run=counter(log, "read")) == "read-done"
        assert run.step("answer", counter(log, "answer")) == "answer-done"
        assert run.idempotency_key == "ext-1/answer/3"
    assert seen(log) == ["fetch", "read", "answer"]
    calls = gw._get("/jobs/ext-1/calls")["calls"]
    assert [(c["position"], c["name"], c["kind"], c["status"]) for c in calls] == [
        (1, "fetch", "step", "succeeded"),
        (2, "invoices.read", "tool", "succeeded"),
        (3, "answer", "step", "succeeded"),
    ]
    # the code changed: another name at a recorded position is refused, not re-run
    with pytest.raises(GaitApiError) as exc, gw.run("ext-1") as run:
        run.step("something-else", counter(log, "x"))
    assert exc.value.code == "workflow_nondeterministic" and exc.value.status == 409
    assert "'fetch'" in exc.value.message and "'something-else'" in exc.value.message


def test_every_tool_call_is_gated_blocked_ones_raise_and_approvals_are_waited_for(
    gw: GaitClient, keys: dict[str, str], live_server: Any, tmp_path: Path
) -> None:
    log = tmp_path / "fx"
    gw.submit(job_id="ext-2")
    reviewer = GaitClient(live_server.url, api_key=keys["reviewer"])
    with gw.run("ext-2") as run:
        with pytest.raises(ToolBlocked) as blocked:
            run.tool("shell.rm", {"path": "/"}, run=counter(log, "rm"))
        assert blocked.value.reasons == ["matched_rule_no_rm"]
        result: dict[str, Any] = {}

        def refund() -> None:
            result["out"] = run.tool("payments.refund", {"amount": 420}, run=counter(log, "refund"))

        t = threading.Thread(target=refund)
        t.start()
        pending = _wait(lambda: reviewer.approvals_pending("ext-2"))
        assert pending[0]["tool_name"] == "payments.refund"
        assert Job.objects.get(job_id="ext-2").status == "decision_needed"
        time.sleep(0.5)
        assert "refund" not in seen(log)  # nothing ran while it waited
        reviewer.approval_decide(pending[0]["request_id"], "approve")
        t.join(timeout=30)
        assert result["out"] == "refund-done"
        # the second refund is rejected: the agent sees the reviewer's reason
        t2 = threading.Thread(
            target=lambda: result.update(
                err=_raises(
                    lambda: run.tool("payments.refund", {"amount": 1}, run=counter(log, "again"))
                )
            )
        )
        t2.start()
        pending = _wait(lambda: reviewer.approvals_pending("ext-2"))
        reviewer.approval_decide(pending[0]["request_id"], "reject", reason="one refund is enough")
        t2.join(timeout=30)
        assert (
            isinstance(result["err"], ToolRejected)
            and result["err"].reason == "one refund is enough"
        )
        assert Job.objects.get(job_id="ext-2").status == "running"
    assert seen(log) == ["refund"]
    gw.stop("ext-2", reason="enough")
    with pytest.raises(Stopped), gw.run("ext-2") as run:
        for name in ("shell.rm", "payments.refund", "payments.refund", "late.call"):
            run.tool(name, {}, run=counter(log, name))


def _wait(fn: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def _raises(fn: Any) -> Exception | None:
    try:
        fn()
    except Exception as exc:
        return exc
    return None


def test_a_failing_step_is_retried_then_raised_the_same_on_replay(gw: GaitClient) -> None:
    gw.submit(job_id="ext-3")
    calls = []

    def flaky() -> str:
        calls.append(1)
        raise ValueError("down")

    with gw.run("ext-3") as run, pytest.raises(CallFailed) as exc:
        run.step("flaky", flaky, retries=1)
    assert exc.value.type == "ValueError" and len(calls) == 2
    with gw.run("ext-3") as run, pytest.raises(CallFailed):
        run.step("flaky", flaky)
    assert len(calls) == 2  # the recorded failure is raised again without running
    assert list(StepRun.objects.filter(job__job_id="ext-3").values_list("attempt", "status")) == [
        (1, "failed"),
        (2, "failed"),
    ]


def test_other_identities_get_404_and_input_is_strict(
    gw: GaitClient, keys: dict[str, str], live_server: Any
) -> None:
    gw.submit(job_id="ext-4")
    other = GaitClient(live_server.url, api_key=keys["other"])
    for method, path, body in [
        ("GET", "/jobs/ext-4/calls", None),
        ("POST", "/jobs/ext-4/calls", {"position": 1, "name": "x", "kind": "step"}),
        ("POST", "/jobs/ext-4/calls/1", {"attempt": 1, "status": "succeeded"}),
    ]:
        with pytest.raises(GaitApiError) as exc:
            other._request(method, path, json=body)
        assert (exc.value.status, exc.value.code) == (404, "job_not_found")
    bad = [
        ({"position": 1, "name": "x", "kind": "step", "sneaky": 1}, "unknown_field"),
        ({"position": 0, "name": "x", "kind": "step"}, "invalid_input"),
        ({"position": 1, "name": "x", "kind": "shell"}, "invalid_input"),
        ({"position": 1, "name": "../x", "kind": "step"}, "invalid_call_name"),
        ({"position": 5, "name": "x", "kind": "step"}, "call_position_gap"),
        ({"position": 1, "name": "x", "kind": "tool", "args": [1]}, "invalid_call_args"),
    ]
    for body, code in bad:
        with pytest.raises(GaitApiError) as exc:
            gw._request("POST", "/jobs/ext-4/calls", json=body)
        assert (exc.value.status, exc.value.code) == (400, code), body
    # a tool result the gate never saw cannot be recorded
    with pytest.raises(GaitApiError) as exc:
        gw._request("POST", "/jobs/ext-4/calls/1", json={"attempt": 1, "status": "succeeded"})
    assert (exc.value.status, exc.value.code) == (409, "call_not_open")
    assert not StepRun.objects.filter(job__job_id="ext-4").exists()
    # a job run by gaitweb's workers records its own calls
    gw.submit(job_id="ext-5", spec={"workflow": "trivial", "input": {"n": 1}})
    with pytest.raises(GaitApiError) as exc:
        gw._request("POST", "/jobs/ext-5/calls", json={"position": 1, "name": "s0", "kind": "step"})
    assert exc.value.code == "calls_not_for_engine_jobs"
