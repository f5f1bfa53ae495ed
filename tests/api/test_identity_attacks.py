"""The cross-identity attacks, each as it was made: a key of identity B against identity A's
objects. Every one of these requests used to succeed; now each is refused exactly as if A's
object did not exist (docs/security.md), and A's objects are unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job, JobTemplate
from tests.api.conftest import error_code
from tests.identity_world import POLICY, A, B, World, world_build, world_fingerprint

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db: None) -> World:
    return world_build()


@pytest.fixture
def intruder(key_client: Callable[..., APIClient]) -> APIClient:
    """Identity B's integrator key: read, submit, control."""
    return key_client("read,submit,control", identity=B)


def _not_found_like_a_missing_job(r: Any, job_id: str, intruder: APIClient, path: str) -> None:
    """A 404 whose body is the one a job that does not exist gets: no existence oracle."""
    assert r.status_code == 404 and error_code(r) == "job_not_found", r.content
    ghost = intruder.get(path.replace(job_id, "no-such-job"))
    ghost_body = ghost.json()["error"]
    body = r.json()["error"]
    assert body["message"].replace(job_id, "?") == ghost_body["message"].replace("no-such-job", "?")
    assert set(body["details"]) == set(ghost_body["details"])


@pytest.mark.parametrize(
    ("action", "job_id"),
    [
        ("pause", World.run),
        ("stop", World.run),
        ("cancel", World.run),
        ("retry", World.cancelled),
        ("resume", World.paused),
    ],
)
def test_another_identity_cannot_pause_stop_cancel_retry_or_resume_a_job(
    world: World, intruder: APIClient, action: str, job_id: str
) -> None:
    before = world_fingerprint()
    r = intruder.post(f"/api/v1/jobs/{job_id}/{action}", {"reason": "mine now"}, format="json")
    assert r.status_code == 404 and error_code(r) == "job_not_found"
    assert world_fingerprint() == before


def test_another_identity_cannot_complete_a_job_with_a_checkpoint(
    world: World, intruder: APIClient
) -> None:
    before = world_fingerprint()
    r = intruder.post(
        f"/api/v1/jobs/{World.run}/checkpoints",
        {"type": "completed", "summary": "done (not really)"},
        format="json",
    )
    assert r.status_code == 404 and error_code(r) == "job_not_found"
    assert Job.objects.get(job_id=World.run).status == "running"
    assert world_fingerprint() == before


def test_another_identity_cannot_signal_or_dispatch_on_a_job(
    world: World, intruder: APIClient
) -> None:
    before = world_fingerprint()
    r = intruder.post(f"/api/v1/jobs/{World.queued}/signals/go", {"payload": 1}, format="json")
    assert r.status_code == 404 and error_code(r) == "job_not_found"
    r = intruder.post(
        f"/api/v1/jobs/{World.run}/gate/dispatch",
        {"intent": {"tool_name": "tool.read", "args": {}, "targets": [], "context": {}}},
        format="json",
    )
    # the gate fails closed on a job it cannot see, exactly as on an unknown one
    assert r.status_code == 200 and r.json()["verdict"] == "block"
    assert r.json()["reason_codes"] == ["emergency_stop_state_unavailable"]
    assert world_fingerprint() == before


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/jobs/{World.queued}/steps",
        f"/api/v1/jobs/{World.run}",
        f"/api/v1/jobs/{World.run}/events",
        f"/api/v1/jobs/{World.run}/checkpoints",
        f"/api/v1/jobs/{World.run}/checkpoints/cp_0001",
        f"/api/v1/jobs/{World.run}/inspect",
        f"/api/v1/jobs/{World.run}/verify-chain",
        f"/api/v1/jobs/{World.run}/packs",
    ],
)
def test_another_identity_cannot_read_a_jobs_steps_outputs_events_or_packs(
    world: World, intruder: APIClient, path: str
) -> None:
    r = intruder.get(path)
    job_id = path.split("/")[4]
    _not_found_like_a_missing_job(r, job_id, intruder, path)
    assert b"only agent-a may read this" not in r.content


def test_another_identity_cannot_read_download_or_rebuild_a_pack(
    world: World, intruder: APIClient
) -> None:
    for path in (f"/api/v1/packs/{world.pack_id}", f"/api/v1/packs/{world.pack_id}/download"):
        r = intruder.get(path)
        assert r.status_code == 404 and error_code(r) == "pack_not_found"
        ghost = intruder.get(path.replace(world.pack_id, "0" * 64)).json()["error"]
        assert r.json()["error"]["message"].replace(world.pack_id, "?") == ghost["message"].replace(
            "0" * 64, "?"
        )
    before = world_fingerprint()
    r = intruder.post(f"/api/v1/jobs/{World.run}/packs")
    assert r.status_code == 404 and error_code(r) == "job_not_found"
    assert world_fingerprint() == before


def test_another_identity_cannot_see_or_decide_an_approval(
    world: World, key_client: Callable[..., APIClient]
) -> None:
    reviewer_b = key_client("read,approve", identity=B)
    assert reviewer_b.get("/api/v1/approvals").json()["results"] == []
    listed = reviewer_b.get(f"/api/v1/approvals?job_id={World.decide}").json()["results"]
    assert listed == []
    before = world_fingerprint()
    for decision in ("approve", "reject"):
        r = reviewer_b.post(
            f"/api/v1/approvals/{world.request_id}/decide",
            {"decision": decision, "reason": "mine"},
            format="json",
        )
        assert r.status_code == 404 and error_code(r) == "approval_not_found"
        r = reviewer_b.post(
            f"/api/v1/jobs/{World.decide}/{decision}", {"reason": "x"}, format="json"
        )
        assert r.status_code == 404 and error_code(r) == "job_not_found"
    assert world_fingerprint() == before


def test_template_hijack_another_identity_cannot_drop_its_policy_swap_its_spec_or_run_it(
    world: World, intruder: APIClient
) -> None:
    """The attack: B edits A's template (no policy, a spec of B's choosing) and runs it, so
    a job runs as A, ungated."""
    before = world_fingerprint()
    evil = {"steps": [{"name": "x", "kind": "python", "with": {"function": "echo"}}]}
    r = intruder.patch(
        f"/api/v1/templates/{World.template}", {"policy": "", "spec": evil}, format="json"
    )
    assert r.status_code == 404 and error_code(r) == "template_not_found"
    for action in ("run", "disable", "enable"):
        r = intruder.post(f"/api/v1/templates/{World.template}/{action}", {}, format="json")
        assert r.status_code == 404 and error_code(r) == "template_not_found"
    assert intruder.get(f"/api/v1/templates/{World.template}").status_code == 404
    assert all(t["identity"] == B for t in intruder.get("/api/v1/templates").json()["results"])
    template = JobTemplate.objects.get(template_id=World.template)
    assert template.policy is not None and template.policy.name == POLICY and template.spec == {}
    assert not Job.objects.filter(identity=A, labels__has_key="gait.template").exists()
    assert world_fingerprint() == before


def test_a_cross_identity_key_sees_a_template_but_cannot_change_or_run_it(
    world: World, key_client: Callable[..., APIClient]
) -> None:
    ops = key_client("read,submit,control,cross_identity", identity="svc-ops")
    assert ops.get(f"/api/v1/templates/{World.template}").status_code == 200
    before = world_fingerprint()
    r = ops.patch(f"/api/v1/templates/{World.template}", {"policy": ""}, format="json")
    assert r.status_code == 403 and error_code(r) == "template_not_owner"
    r = ops.post(f"/api/v1/templates/{World.template}/run", {}, format="json")
    assert r.status_code == 403 and error_code(r) == "template_not_owner"
    assert world_fingerprint() == before


def test_the_owner_runs_its_template_as_itself_and_an_admin_may_too(
    world: World, key_client: Callable[..., APIClient]
) -> None:
    owner = key_client("read,submit,control", identity=A)
    r = owner.post(f"/api/v1/templates/{World.template}/run", {"job_id": "mine"}, format="json")
    assert r.status_code == 201 and r.json()["job"]["identity"] == A
    assert r.json()["job"]["policy_ref"] == f"policy:{POLICY}"
    Job.objects.filter(job_id="mine").update(status="completed")
    admin = key_client("admin", identity="root")
    r = admin.post(f"/api/v1/templates/{World.template}/run", {"job_id": "ops"}, format="json")
    assert r.status_code == 201 and r.json()["job"]["identity"] == A


def test_a_parent_job_of_another_identity_is_not_found_like_a_missing_one(
    world: World, intruder: APIClient
) -> None:
    r = intruder.post("/api/v1/jobs", {"job_id": "child", "parent_id": World.run}, format="json")
    assert r.status_code == 404 and error_code(r) == "job_not_found"
    assert not Job.objects.filter(job_id="child").exists()


def test_list_filters_and_counts_never_show_another_identitys_jobs(
    world: World, intruder: APIClient
) -> None:
    for query in ("", f"?identity={A}", "?q=a-", "?status=running,queued,paused"):
        rows = intruder.get("/api/v1/jobs" + query).json()["results"]
        assert all(j["identity"] == B for j in rows), (query, rows)
    stats = intruder.get("/api/v1/stats").json()
    assert stats["created"] == 1 and stats["by_status"]["decision_needed"] == 0
    assert set(stats["recent_reason_codes"]) == {"submitted"}


def test_a_key_submits_only_as_its_own_identity(world: World, intruder: APIClient) -> None:
    r = intruder.post("/api/v1/jobs", {"job_id": "as-a", "identity": A}, format="json")
    assert r.status_code == 422 and error_code(r) == "identity_binding_mismatch"
    r = intruder.post("/api/v1/templates", {"name": "As A", "identity": A}, format="json")
    assert r.status_code == 422 and error_code(r) == "identity_binding_mismatch"
    assert not Job.objects.filter(job_id="as-a").exists()
