"""Unknown fields are errors (docs/security.md): every operation that takes a body, or query
parameters, refuses a field it does not know with 400 ``unknown_field`` naming it, before
anything is written. The operations and their valid bodies come from the permission matrix,
which is itself checked against the OpenAPI schema, so a new endpoint cannot skip this."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from jobs.models import Job
from tests.api.conftest import error_code
from tests.api.test_permission_matrix import OPERATIONS, Op, _path
from tests.identity_world import World, world_build, world_fingerprint

pytestmark = pytest.mark.django_db

TYPO = "polcy"


def _schema(client: APIClient) -> dict[str, Any]:
    return yaml.safe_load(client.get("/api/v1/schema/").content)


def _takes_query(schema: dict[str, Any], method: str, path: str) -> bool:
    params = schema["paths"][path][method].get("parameters", [])
    return any(p["in"] == "query" for p in params)


def _with_typo(client: APIClient, key: tuple[str, str], op: Op, world: World) -> Any:
    method, template = key
    path = _path(template, op, world)
    if method == "get":
        return client.get(path, {TYPO: "strict"})
    if op.content in ("zip", "multipart"):
        sides = ("file",) if op.content == "zip" else ("left", "right")
        form: dict[str, Any] = {
            side: SimpleUploadedFile(f"{side}.zip", world.pack_bytes, "application/zip")
            for side in sides
        }
        form[TYPO] = "strict"
        return client.post(path, form, format="multipart")
    body = {**(op.body or {}), TYPO: "strict"}
    return getattr(client, method)(path, body, format="json")


def test_every_operation_with_a_body_or_a_query_refuses_an_unknown_field(
    key_client: Callable[..., APIClient],
) -> None:
    world = world_build()
    admin = key_client("admin", identity="root")
    schema = _schema(admin)
    probed, wrong = 0, []
    for key, op in OPERATIONS.items():
        method, path = key
        if method == "get" and not _takes_query(schema, method, path):
            continue  # takes no parameters at all
        probed += 1
        before = world_fingerprint()
        r = _with_typo(admin, key, op, world)
        body = r.json() if r["Content-Type"].startswith("application/json") else {}
        details = body.get("error", {}).get("details", {})
        if r.status_code != 400 or error_code(r) != "unknown_field":
            wrong.append(f"{method.upper()} {path}: {r.status_code} {r.content[:200]!r}")
        elif details.get("field") != TYPO:
            wrong.append(f"{method.upper()} {path}: does not name the field: {details}")
        elif world_fingerprint() != before:
            wrong.append(f"{method.upper()} {path}: refused but wrote")
    assert wrong == [], "\n".join(wrong)
    assert probed >= 30


def test_a_misspelt_policy_is_an_error_not_an_ungated_job(agent: APIClient) -> None:
    """The attack: ``{"polcy": "strict"}`` used to give 201 and a job bound to no policy."""

    r = agent.post("/api/v1/jobs", {"job_id": "typo", "polcy": "strict"}, format="json")
    assert r.status_code == 400 and error_code(r) == "unknown_field"
    details = r.json()["error"]["details"]
    assert (details["field"], details["fields"]) == (TYPO, [TYPO])
    assert "policy" in details["allowed"]
    assert TYPO in r.json()["error"]["message"]
    assert not Job.objects.filter(job_id="typo").exists()


def test_every_unknown_field_is_named(agent: APIClient) -> None:
    r = agent.post("/api/v1/jobs", {"polcy": "strict", "labls": {}}, format="json")
    assert error_code(r) == "unknown_field"
    assert r.json()["error"]["details"]["fields"] == ["labls", "polcy"]


def test_an_unknown_list_filter_is_an_error_not_every_job(agent: APIClient) -> None:
    """A misspelt filter would otherwise widen the list to everything the caller may see."""
    r = agent.get("/api/v1/jobs", {"stauts": "running"})
    assert r.status_code == 400 and error_code(r) == "unknown_field"
    assert r.json()["error"]["details"]["field"] == "stauts"
