"""Every input is bounded (docs/security.md): nesting, YAML aliases and body size over the API.
Each case used to be a 500 or cost seconds and hundreds of megabytes; now it is a 4xx with a
reason code, and nothing is written."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from approvals.models import Policy
from jobs.models import Job
from tests.api.conftest import error_code
from tests.hostile import REFUSAL_PEAK_BYTES, cheaply, deep_json, policy_alias_bomb

pytestmark = pytest.mark.django_db


def test_json_nested_20000_deep_is_a_400_json_too_deep_on_every_json_endpoint(
    agent: APIClient, admin_key: APIClient
) -> None:
    body = '{"job_id": "deep-1", "spec": ' + deep_json() + "}"
    for client, path in (
        (agent, "/api/v1/jobs"),
        (agent, "/api/v1/gate/evaluate"),
        (admin_key, "/api/v1/policies"),
        (agent, "/api/v1/jobs/deep-1/checkpoints"),
    ):
        response = client.post(path, body, content_type="application/json")
        assert response.status_code == 400, (path, response.content[:300])
        assert error_code(response) == "json_too_deep"
        assert response.json()["error"]["details"]["max_depth"] == 64
    assert not Job.objects.exists() and not Policy.objects.exists()


def test_json_within_the_depth_limit_still_reaches_the_services_own_checks(
    agent: APIClient,
) -> None:
    # 40 levels parse; the service then refuses the shape, as before
    response = agent.post(
        "/api/v1/jobs", '{"job_id": "ok-1", "labels": ' + deep_json(40) + "}",
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 400 and error_code(response) != "json_too_deep"


def test_a_deeply_nested_cursor_is_an_invalid_cursor_not_a_500(agent: APIClient) -> None:
    cursor = base64.urlsafe_b64encode(deep_json(3000).encode()).decode().rstrip("=")
    response = agent.get("/api/v1/jobs", {"cursor": cursor})
    assert response.status_code == 400 and error_code(response) == "invalid_cursor"


def test_the_policy_alias_bomb_is_refused_over_the_api_quickly_and_stores_nothing(
    admin_key: APIClient, agent: APIClient
) -> None:
    source = policy_alias_bomb()

    stored, _, peak = cheaply(
        lambda: admin_key.post(
            "/api/v1/policies", {"name": "bomb", "source": source}, format="json"
        )
    )
    evaluated = agent.post(
        "/api/v1/gate/evaluate",
        {"intent": {"tool_name": "x"}, "policy_source": source},
        format="json",
    )
    digest = agent.post("/api/v1/policies/digest", {"source": source}, format="json")

    for response in (stored, evaluated, digest):
        assert response.status_code == 400, response.content
        assert error_code(response) == "yaml_alias_refused"
        assert response.json()["error"]["details"]["line"] == 4
    assert peak < REFUSAL_PEAK_BYTES
    assert not Policy.objects.exists()


def test_a_body_over_the_limit_is_413_by_content_length_before_it_is_read(
    agent: APIClient, settings: Any
) -> None:
    settings.GAIT = {**settings.GAIT, "REQUEST_MAX_BYTES": 1024}
    small = agent.post("/api/v1/jobs", {"job_id": "fits"}, format="json")
    assert small.status_code == 201
    big = agent.post(
        "/api/v1/jobs",
        {"job_id": "too-big", "labels": {"pad": "x" * 2000}},
        format="json",
    )
    assert big.status_code == 413 and error_code(big) == "request_too_large"
    details = big.json()["error"]["details"]
    assert details["max_bytes"] == 1024 and details["content_length"] > 2000
    assert not Job.objects.filter(job_id="too-big").exists()


def test_pack_uploads_have_their_own_larger_limit(agent: APIClient, settings: Any) -> None:
    settings.GAIT = {**settings.GAIT, "REQUEST_MAX_BYTES": 1024, "UPLOAD_MAX_BYTES": 4096}
    medium = (
        b"PK" + b"\0" * 3000
    )  # over the JSON limit, under the upload limit: read, refused as a zip
    r = agent.post("/api/v1/packs/verify", medium, content_type="application/zip")
    assert r.status_code == 400 and error_code(r) == "pack_not_a_zip"
    big = agent.post("/api/v1/packs/verify", b"\0" * 5000, content_type="application/zip")
    assert big.status_code == 413 and error_code(big) == "upload_too_large"
    # diff takes two packs: twice the limit
    r = agent.post(
        "/api/v1/packs/diff",
        {
            "left": SimpleUploadedFile("l.zip", b"\0" * 3000),
            "right": SimpleUploadedFile("r.zip", b"\0" * 3000),
        },
        format="multipart",
    )
    assert r.status_code == 400 and error_code(r) == "pack_not_a_zip"
