"""The permission matrix: every endpoint against every scope (API keys) and every role
(browser sessions). A request the scope allows may still fail later (404, 400 …) but never
with 403; a request it does not allow is 403 ``permission_denied`` with nothing written."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from gaitweb.roles import ROLE_SCOPES
from jobs.models import JobEvent

pytestmark = pytest.mark.django_db

GHOST = "ghost-job"
ZEROS = "0" * 64

# (method, path, body, scope needed)
ENDPOINTS: list[tuple[str, str, Any, str]] = [
    ("get", "/api/v1/jobs", None, "read"),
    ("post", "/api/v1/jobs", {"job_id": "bad id!"}, "submit"),
    ("get", f"/api/v1/jobs/{GHOST}", None, "read"),
    ("get", f"/api/v1/jobs/{GHOST}/events", None, "read"),
    ("get", f"/api/v1/jobs/{GHOST}/checkpoints", None, "read"),
    ("post", f"/api/v1/jobs/{GHOST}/checkpoints", {"type": "plan", "summary": "s"}, "submit"),
    ("get", f"/api/v1/jobs/{GHOST}/checkpoints/cp_0001", None, "read"),
    ("get", f"/api/v1/jobs/{GHOST}/steps", None, "read"),
    ("post", f"/api/v1/jobs/{GHOST}/signals/go", {}, "submit"),
    ("post", f"/api/v1/jobs/{GHOST}/pause", {}, "control"),
    ("post", f"/api/v1/jobs/{GHOST}/stop", {}, "control"),
    ("post", f"/api/v1/jobs/{GHOST}/approve", {}, "approve"),
    ("post", f"/api/v1/jobs/{GHOST}/reject", {"reason": "r"}, "approve"),
    ("post", f"/api/v1/jobs/{GHOST}/resume", {}, "control"),
    ("post", f"/api/v1/jobs/{GHOST}/cancel", {}, "control"),
    ("post", f"/api/v1/jobs/{GHOST}/retry", {}, "control"),
    ("get", f"/api/v1/jobs/{GHOST}/inspect", None, "read"),
    ("get", f"/api/v1/jobs/{GHOST}/verify-chain", None, "read"),
    ("post", f"/api/v1/jobs/{GHOST}/gate/dispatch", {}, "submit"),
    ("get", f"/api/v1/jobs/{GHOST}/packs", None, "read"),
    ("post", f"/api/v1/jobs/{GHOST}/packs", None, "read"),
    ("post", "/api/v1/gate/evaluate", {}, "read"),
    ("get", "/api/v1/approvals", None, "read"),
    ("post", "/api/v1/approvals/apr_x/decide", {}, "approve"),
    ("post", "/api/v1/approvals/expire-due", None, "admin"),
    ("get", "/api/v1/policies", None, "read"),
    ("post", "/api/v1/policies", {}, "admin"),
    ("get", "/api/v1/policies/nope", None, "read"),
    ("post", "/api/v1/policies/digest", {}, "read"),
    ("post", "/api/v1/identities/revocations", {}, "admin"),
    ("get", "/api/v1/identities/policies", None, "admin"),
    ("post", "/api/v1/identities/policies", {}, "admin"),
    ("get", "/api/v1/identities/policies/ghost-identity", None, "admin"),
    ("get", f"/api/v1/packs/{ZEROS}", None, "read"),
    ("get", f"/api/v1/packs/{ZEROS}/download", None, "read"),
    ("post", "/api/v1/packs/verify", None, "read"),
    ("post", "/api/v1/packs/inspect", None, "read"),
    ("post", "/api/v1/packs/diff", None, "read"),
    ("get", "/api/v1/stats", None, "read"),
    # job templates (jobs/api_templates.py)
    ("get", "/api/v1/templates", None, "read"),
    ("post", "/api/v1/templates", {}, "control"),
    ("get", "/api/v1/templates/ghost-template", None, "read"),
    ("post", "/api/v1/templates/ghost-template/run", {}, "submit"),
    ("post", "/api/v1/templates/ghost-template/enable", None, "control"),
    ("post", "/api/v1/templates/ghost-template/disable", None, "control"),
    ("get", "/api/v1/templates/ghost-template/fires", None, "read"),
]


def _call(client: APIClient, method: str, path: str, body: Any) -> Any:
    if method == "get":
        return client.get(path)
    return client.post(path, body, format="json") if body is not None else client.post(path)


def _check(client: APIClient, granted: frozenset[str], who: str) -> None:
    before = JobEvent.objects.count()
    wrong = []
    for method, path, body, scope in ENDPOINTS:
        r = _call(client, method, path, body)
        allowed = scope in granted or "admin" in granted
        if allowed and r.status_code in (401, 403):
            wrong.append(f"{who}: {method} {path} should be allowed, got {r.status_code}")
        elif not allowed and (
            r.status_code != 403 or r.json()["error"]["code"] != "permission_denied"
        ):
            wrong.append(f"{who}: {method} {path} should be 403, got {r.status_code}")
        assert r.status_code < 500, (method, path, r.content)
    assert wrong == []
    assert JobEvent.objects.count() == before


@pytest.mark.parametrize("scope", ["submit", "control", "approve", "read", "admin"])
def test_each_api_key_scope_opens_exactly_its_endpoints(key_client: Any, scope: str) -> None:
    _check(key_client(scope, identity=f"key-{scope}"), frozenset({scope}), f"key[{scope}]")


@pytest.mark.parametrize("role", [*sorted(ROLE_SCOPES), "outsider"])
def test_each_role_opens_exactly_its_endpoints_over_a_session(cast: Any, role: str) -> None:
    user = {
        "viewer": cast.viewer,
        "reviewer": cast.reviewer,
        "operator": cast.operator,
        "integrator": cast.integrator,
        "admin": cast.admin,
        "outsider": cast.outsider,
    }[role]
    client = APIClient()  # CSRF has its own tests; this one is about scopes
    client.force_login(user)
    _check(client, ROLE_SCOPES.get(role, frozenset()), f"role[{role}]")


def test_every_endpoint_refuses_anonymous_callers_with_401_except_health_and_the_schema() -> None:
    client = APIClient()
    for method, path, body, _ in ENDPOINTS:
        r = _call(client, method, path, body)
        assert r.status_code == 401, (method, path, r.status_code)
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/schema/").status_code == 200


def test_the_matrix_covers_every_operation_in_the_schema(agent: APIClient) -> None:
    import yaml

    schema = yaml.safe_load(agent.get("/api/v1/schema/").content)
    documented = {(m, p) for p, ops in schema["paths"].items() for m in ops if m in ("get", "post")}
    covered = set()
    for method, path, _, _ in ENDPOINTS:
        for doc_method, doc_path in documented:
            parts, mine = doc_path.split("/"), path.split("/")
            if (
                doc_method == method
                and len(parts) == len(mine)
                and all(a == b or a.startswith("{") for a, b in zip(parts, mine, strict=True))
            ):
                covered.add((doc_method, doc_path))
    assert documented - covered == {("get", "/api/v1/health")}
