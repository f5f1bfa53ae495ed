"""`POST /jobs/{id}/approve` on a job waiting on an approval request decides that request
(docs/lifecycle.md, "One way to approve"), and API refusals name the API's own way out."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from approvals.models import Decision
from jobs.models import Job
from tests.api.conftest import error_code
from tests.approvals.test_one_way_to_approve import waiting_job

pytestmark = pytest.mark.django_db


def test_post_jobs_approve_decides_the_pending_request(
    key_client: Any, reviewer_key: APIClient
) -> None:
    req = waiting_job(required=2)
    r = reviewer_key.post("/api/v1/jobs/job_w1/approve", {"reason": "checked"}, format="json")
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["job_id"] == "job_w1" and body["status"] == "decision_needed"
    assert body["decided"]["approval_request"]["request_id"] == req.request_id
    assert body["decided"]["approval_request"]["approvals"] == 1
    assert Decision.objects.get().reason == "checked"
    second = key_client("approve,read,cross_identity", identity="rob").post(
        "/api/v1/jobs/job_w1/approve", {}, format="json"
    )
    assert second.json()["status"] == "running"
    assert second.json()["decided"]["approval_request"]["completed"] is True


def test_the_api_names_its_own_field_for_an_environment_mismatch(
    key_client: Any, reviewer_key: APIClient
) -> None:
    agent = key_client("submit,read,control", identity="agent.env")
    agent.post("/api/v1/jobs", {"job_id": "job_e1"}, format="json")
    Job.objects.filter(job_id="job_e1").update(environment_fingerprint="env_elsewhere")
    agent.post("/api/v1/jobs/job_e1/pause", {}, format="json")
    r = agent.post("/api/v1/jobs/job_e1/resume", {}, format="json")
    assert r.status_code == 422 and error_code(r) == "environment_fingerprint_mismatch"
    hint = r.json()["error"]["hint"]
    assert "allow_env_mismatch" in hint and "--allow-env-mismatch" not in hint
    r = agent.post("/api/v1/jobs/job_e1/resume", {"allow_env_mismatch": True}, format="json")
    assert r.status_code == 200 and r.json()["status_reason_code"] == "resumed_with_env_override"
