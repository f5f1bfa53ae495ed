"""The templates API: create, list, detail with next fire and past runs, run now, enable and
disable, through API keys with chosen scopes."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from gaitweb.apikeys import apikey_create
from gaitweb.lib.actors import Actor
from jobs.models import Job, JobTemplate


@pytest.fixture(autouse=True)
def _no_throttle(settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            "apikey": "100000/min",
            "user": "100000/min",
            "anon": "100000/min",
        },
    }


def _client(scopes: str, identity: str = "brief-bot") -> APIClient:
    key = apikey_create(actor=Actor.system("test"), identity=identity, scopes=scopes).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def _code(response: Any) -> str:
    return response.json()["error"]["code"]


BODY = {
    "name": "Daily brief",
    "cron": "0 7 * * 1-5",
    "timezone": "Europe/Berlin",
    "continuity": "resume",
    "spec": {"steps": [{"name": "n", "kind": "python", "with": {"function": "noop"}}]},
}


@pytest.mark.django_db
def test_an_operator_key_creates_a_recurring_template_and_sees_its_next_fire() -> None:
    client = _client("read,submit,control")
    r = client.post("/api/v1/templates", BODY, format="json")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["template_id"] == "daily-brief" and body["identity"] == "brief-bot"
    assert body["next_fire_at"] and body["next_fire_at"].endswith(":00:00.000000Z")
    r = client.get("/api/v1/templates")
    assert [t["template_id"] for t in r.json()["results"]] == ["daily-brief"]


@pytest.mark.django_db
def test_create_refuses_a_bad_cron_with_the_error_envelope_and_writes_nothing() -> None:
    client = _client("read,submit,control")
    r = client.post("/api/v1/templates", {**BODY, "cron": "every morning"}, format="json")
    assert r.status_code == 400 and _code(r) == "invalid_cron"
    r = client.post("/api/v1/templates", {**BODY, "overlap": "maybe"}, format="json")
    assert r.status_code == 400 and _code(r) == "invalid_overlap"
    assert not JobTemplate.objects.exists()


@pytest.mark.django_db
def test_a_key_cannot_bind_a_template_to_another_identity() -> None:
    r = _client("read,submit,control").post(
        "/api/v1/templates", {**BODY, "identity": "someone-else"}, format="json"
    )
    assert r.status_code == 422 and _code(r) == "identity_binding_mismatch"


@pytest.mark.django_db
def test_a_read_only_key_can_list_but_not_create_or_run() -> None:
    _client("read,submit,control").post("/api/v1/templates", BODY, format="json")
    reader = _client("read")  # the template's identity, read scope only
    assert reader.get("/api/v1/templates/daily-brief").status_code == 200
    stranger = _client("read", identity="reader")
    assert stranger.get("/api/v1/templates/daily-brief").status_code == 404
    r = reader.post("/api/v1/templates", {**BODY, "name": "Other"}, format="json")
    assert r.status_code == 403
    r = reader.post("/api/v1/templates/daily-brief/run", {}, format="json")
    assert r.status_code == 403
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_run_now_creates_a_linked_job_and_the_detail_lists_it() -> None:
    client = _client("read,submit,control")
    client.post("/api/v1/templates", BODY, format="json")
    r = client.post("/api/v1/templates/daily-brief/run", {"job_id": "brief-now"}, format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["job"]["job_id"] == "brief-now"
    assert r.json()["fire"]["trigger"] == "manual"
    r = client.post("/api/v1/templates/daily-brief/run", {}, format="json")
    assert r.status_code == 409 and _code(r) == "template_run_active"
    detail = client.get("/api/v1/templates/daily-brief").json()
    assert detail["last_job_id"] == "brief-now" and detail["run_count"] == 1
    assert [f["job_id"] for f in detail["fires"]] == ["brief-now"]
    fires = client.get("/api/v1/templates/daily-brief/fires").json()
    assert [f["job_id"] for f in fires["results"]] == ["brief-now"]


@pytest.mark.django_db
def test_disable_clears_the_next_fire_and_enable_restores_it() -> None:
    client = _client("read,submit,control")
    client.post("/api/v1/templates", BODY, format="json")
    r = client.post("/api/v1/templates/daily-brief/disable")
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert r.json()["next_fire_at"] is None
    r = client.post("/api/v1/templates/daily-brief/enable")
    assert r.json()["enabled"] is True and r.json()["next_fire_at"] is not None
    r = client.patch("/api/v1/templates/daily-brief", {"cron": ""}, format="json")
    assert r.status_code == 200 and r.json()["next_fire_at"] is None
    assert client.get("/api/v1/templates/nope").status_code == 404
