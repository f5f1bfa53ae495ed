"""The permission matrix: every API operation × every kind of caller, on identity A's objects.

The callers: two integrator keys (identities A and B), single-scope keys, a read-only key, a
reviewer key of identity B, a cross-identity service key, an admin key, and a browser session
for each dashboard role. The operations are the ones the OpenAPI schema publishes: a new
endpoint without a row in ``OPERATIONS`` fails ``test_the_matrix_covers_every_operation``.

Each case asserts the exact status (docs/security.md): a missing scope is 403
``permission_denied`` before anything is looked up; another identity's object is 404, exactly
as if it did not exist; and whenever the answer is not a success, A's objects are unchanged
(status, revision, chain head, templates, approvals, packs). Each case runs in a savepoint that
is rolled back, so every one of them meets the same world.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from gaitweb.lib.roles import ROLE_SCOPES
from tests.identity_world import (
    ELSEWHERE,
    POLICY,
    POLICY_YAML,
    A,
    B,
    World,
    world_build,
    world_fingerprint,
)

pytestmark = pytest.mark.django_db

READ_INTENT = {"tool_name": "tool.read", "args": {}, "targets": [], "context": {}}


@dataclass(frozen=True)
class Op:
    """One operation: the scope it needs, which of A's objects its path names (``None``: it
    names none), the status of a success, and the request's body."""

    scope: str | None
    ok: int
    job: str | None = None
    names_a: bool = True  # the path names an object of A (job, request, pack, template)
    body: Any = None
    content: str = "json"  # json | zip | multipart
    owner_only: bool = False  # templates: only their identity or an admin may change or run them
    approves: bool = False  # separation of duties applies
    lists: str = (
        ""  # a list whose rows must be the caller's own: jobs | approvals | templates | stats
    )


OPERATIONS: dict[tuple[str, str], Op] = {
    ("get", "/api/v1/health"): Op(None, 200, names_a=False),
    ("get", "/api/v1/stats"): Op("read", 200, names_a=False, lists="stats"),
    ("get", "/api/v1/jobs"): Op("read", 200, names_a=False, lists="jobs"),
    ("post", "/api/v1/jobs"): Op("submit", 201, names_a=False, body={"job_id": "new-job"}),
    ("get", "/api/v1/jobs/{job_id}"): Op("read", 200, job=World.run),
    ("get", "/api/v1/jobs/{job_id}/events"): Op("read", 200, job=World.run),
    ("get", "/api/v1/jobs/{job_id}/checkpoints"): Op("read", 200, job=World.run),
    ("post", "/api/v1/jobs/{job_id}/checkpoints"): Op(
        "submit", 201, job=World.run, body={"type": "completed", "summary": "done"}
    ),
    ("get", "/api/v1/jobs/{job_id}/checkpoints/{checkpoint_id}"): Op("read", 200, job=World.run),
    ("get", "/api/v1/jobs/{job_id}/steps"): Op("read", 200, job=World.queued),
    ("get", "/api/v1/jobs/{job_id}/calls"): Op("read", 200, job=World.run),
    ("post", "/api/v1/jobs/{job_id}/calls"): Op(
        "submit", 200, job=World.run, body={"position": 1, "name": "fetch", "kind": "step"}
    ),
    # the caller who may gets past permission and identity to the call's state: nothing was
    # begun at position 1 of A's job (call_not_open)
    ("post", "/api/v1/jobs/{job_id}/calls/{position}"): Op(
        "submit", 409, job=World.run, body={"attempt": 1, "status": "succeeded", "output": 1}
    ),
    ("post", "/api/v1/jobs/{job_id}/signals/{name}"): Op(
        "submit", 202, job=World.queued, body={"payload": {"go": True}}
    ),
    ("post", "/api/v1/jobs/{job_id}/pause"): Op("control", 200, job=World.run, body={}),
    ("post", "/api/v1/jobs/{job_id}/stop"): Op(
        "control", 200, job=World.run, body={"reason": "halt"}
    ),
    ("post", "/api/v1/jobs/{job_id}/cancel"): Op("control", 200, job=World.run, body={}),
    ("post", "/api/v1/jobs/{job_id}/retry"): Op("control", 200, job=World.cancelled, body={}),
    ("post", "/api/v1/jobs/{job_id}/resume"): Op("control", 200, job=World.paused, body={}),
    ("post", "/api/v1/jobs/{job_id}/approve"): Op(
        "approve", 200, job=World.decide, body={"reason": "ok"}, approves=True
    ),
    ("post", "/api/v1/jobs/{job_id}/reject"): Op(
        "approve", 200, job=World.decide, body={"reason": "no"}, approves=True
    ),
    ("get", "/api/v1/jobs/{job_id}/inspect"): Op("read", 200, job=World.run),
    ("get", "/api/v1/jobs/{job_id}/verify-chain"): Op("read", 200, job=World.run),
    ("post", "/api/v1/jobs/{job_id}/gate/dispatch"): Op(
        "submit", 200, job=World.run, body={"intent": READ_INTENT}
    ),
    ("get", "/api/v1/jobs/{job_id}/packs"): Op("read", 200, job=World.run),
    ("post", "/api/v1/jobs/{job_id}/packs"): Op("control", 200, job=World.run),
    ("post", "/api/v1/gate/evaluate"): Op(
        "read", 200, names_a=False, body={"intent": READ_INTENT, "policy": POLICY}
    ),
    ("get", "/api/v1/approvals"): Op("read", 200, names_a=False, lists="approvals"),
    ("post", "/api/v1/approvals/expire-due"): Op("admin", 200, names_a=False),
    ("post", "/api/v1/approvals/{request_id}/decide"): Op(
        "approve", 200, body={"decision": "approve"}, approves=True
    ),
    ("get", "/api/v1/policies"): Op("read", 200, names_a=False),
    ("post", "/api/v1/policies"): Op(
        "admin", 201, names_a=False, body={"name": "p2", "source": POLICY_YAML}
    ),
    ("post", "/api/v1/policies/digest"): Op(
        "read", 200, names_a=False, body={"source": POLICY_YAML}
    ),
    ("get", "/api/v1/policies/{ref}"): Op("read", 200, names_a=False),
    ("post", "/api/v1/identities/revocations"): Op(
        "admin", 201, names_a=False, body={"identity": "someone-else"}
    ),
    ("get", "/api/v1/identities/policies"): Op("admin", 200, names_a=False),
    ("post", "/api/v1/identities/policies"): Op(
        "admin", 200, names_a=False, body={"identity": "someone-else", "policy": POLICY}
    ),
    ("get", "/api/v1/identities/policies/{identity}"): Op("admin", 200, names_a=False),
    ("delete", "/api/v1/identities/policies/{identity}"): Op("admin", 204, names_a=False),
    ("post", "/api/v1/packs/verify"): Op("read", 200, names_a=False, content="zip"),
    ("post", "/api/v1/packs/inspect"): Op("read", 200, names_a=False, content="zip"),
    ("post", "/api/v1/packs/diff"): Op("read", 200, names_a=False, content="multipart"),
    ("get", "/api/v1/packs/{pack_id}"): Op("read", 200),
    ("get", "/api/v1/packs/{pack_id}/download"): Op("read", 200),
    ("get", "/api/v1/templates"): Op("read", 200, names_a=False, lists="templates"),
    ("post", "/api/v1/templates"): Op("control", 201, names_a=False, body={"name": "New one"}),
    ("get", "/api/v1/templates/{template_id}"): Op("read", 200),
    ("patch", "/api/v1/templates/{template_id}"): Op(
        "control", 200, body={"description": "changed", "spec": {}}, owner_only=True
    ),
    ("post", "/api/v1/templates/{template_id}/run"): Op("submit", 201, body={}, owner_only=True),
    ("post", "/api/v1/templates/{template_id}/enable"): Op("control", 200, owner_only=True),
    ("post", "/api/v1/templates/{template_id}/disable"): Op("control", 200, owner_only=True),
    ("get", "/api/v1/templates/{template_id}/fires"): Op("read", 200),
}


# --- callers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who calls: an API key (scopes, identity) or a session of a dashboard role."""

    scopes: frozenset[str]
    identity: str
    key: bool
    sees_all: bool  # cross-identity: admin, the cross_identity scope, the dashboard's staff roles
    role: str = ""

    def can(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    @property
    def sees_a(self) -> bool:
        return self.sees_all or self.identity == A


def _key(scopes: str, identity: str) -> Caller:
    granted = frozenset(scopes.split(","))
    return Caller(granted, identity, key=True, sees_all=bool(granted & {"admin", "cross_identity"}))


def _role(role: str, username: str) -> Caller:
    scopes = ROLE_SCOPES.get(role, frozenset())
    return Caller(
        frozenset(scopes),
        username,
        key=False,
        sees_all=bool(scopes & {"admin", "cross_identity"}),
        role=role,
    )


CALLERS: dict[str, Caller] = {
    "key_a": _key("read,submit,control", A),
    "key_b": _key("read,submit,control", B),
    "key_b_reviewer": _key("read,approve", B),
    "key_read_a": _key("read", A),
    "key_submit_a": _key("submit", A),
    "key_control_a": _key("control", A),
    "key_approve_a": _key("approve", A),
    "key_cross": _key("read,submit,control,approve,cross_identity", "svc-ops"),
    "key_admin": _key("admin", "root"),
    "viewer": _role("viewer", "vera_viewer"),
    "reviewer": _role("reviewer", "rita_reviewer"),
    "operator": _role("operator", "otto_operator"),
    "integrator": _role("integrator", "ivan_integrator"),
    "admin": _role("admin", "ada_admin"),
    "outsider": _role("outsider", "oscar_outsider"),
}


def expected(caller: Caller, key: tuple[str, str], op: Op) -> int:
    """The one right answer for ``caller`` doing ``op`` on A's objects (docs/security.md)."""
    if op.scope is None:
        return op.ok
    if not caller.can(op.scope):
        return 403
    if op.names_a and not caller.sees_a:
        # the gate fails closed on a job it cannot see, exactly as on an unknown job: a block
        # verdict, nothing journaled (no existence oracle either way)
        return 200 if key[1].endswith("/gate/dispatch") else 404
    if op.owner_only and not (caller.identity == A or caller.can("admin")):
        return 403
    if op.approves and caller.identity == A:
        return 422  # separation of duties: A cannot approve its own job
    if key == ("post", "/api/v1/jobs/{job_id}/packs"):
        return 200  # the job is unchanged since its pack: the stored one is returned
    return op.ok


# --- running a case ----------------------------------------------------------------------------


def _client(name: str, caller: Caller, cast: Any, make_key: Callable[..., str]) -> APIClient:
    client = APIClient()  # CSRF has its own tests; this one is about who may do what
    if caller.key:
        client.credentials(
            HTTP_AUTHORIZATION=f"Bearer {make_key(','.join(sorted(caller.scopes)), caller.identity)}"
        )
    else:
        user = getattr(cast, caller.role)
        assert user.username == caller.identity
        client.force_login(user)
    return client


def _path(template: str, op: Op, world: World) -> str:
    return (
        template.replace("{job_id}", op.job or World.run)
        .replace("{checkpoint_id}", "cp_0001")
        .replace("{name}", "go")
        .replace("{position}", "1")
        .replace("{request_id}", world.request_id)
        .replace("{pack_id}", world.pack_id)
        .replace("{template_id}", World.template)
        .replace("{ref}", POLICY)
        .replace("{identity}", ELSEWHERE)
    )


def call(client: APIClient, key: tuple[str, str], op: Op, world: World) -> Any:
    method, template = key
    path = _path(template, op, world)
    if method == "get":
        return client.get(path)
    if op.content == "zip":
        return client.generic("POST", path, world.pack_bytes, content_type="application/zip")
    if op.content == "multipart":
        from django.core.files.uploadedfile import SimpleUploadedFile

        files = {
            side: SimpleUploadedFile(f"{side}.zip", world.pack_bytes, "application/zip")
            for side in ("left", "right")
        }
        return client.post(path, files, format="multipart")
    send = getattr(client, method)
    return send(path, op.body, format="json") if op.body is not None else send(path)


def _listed_a(op: Op, body: Any) -> bool | None:
    """Whether a list answer shows any of A's objects (None: not a list)."""
    if op.lists == "jobs":
        return any(j["identity"] == A for j in body["results"])
    if op.lists == "approvals":
        return any(r["job_id"] == World.decide for r in body["results"])
    if op.lists == "templates":
        return any(t["identity"] == A for t in body["results"])
    if op.lists == "stats":
        return body["created"] > 1  # A has five jobs, B one
    return None


def check(name: str, caller: Caller, client: APIClient, world: World) -> list[str]:
    """Every operation as ``caller``; the list of wrong answers (empty when all are right)."""
    wrong = []
    for key, op in OPERATIONS.items():
        want = expected(caller, key, op)
        before = world_fingerprint()
        with transaction.atomic():
            r = call(client, key, op, world)
            after = world_fingerprint()
            transaction.set_rollback(True)
        where = f"{name}: {key[0].upper()} {key[1]}"
        if r.status_code != want:
            wrong.append(f"{where}: want {want}, got {r.status_code} {r.content[:160]!r}")
            continue
        if want == 403 and r.json()["error"]["code"] not in (
            "permission_denied",
            "template_not_owner",
        ):
            wrong.append(f"{where}: 403 with code {r.json()['error']['code']}")
        if want >= 400 and after != before:
            wrong.append(f"{where}: refused ({want}) but A's objects changed")
        if key[1].endswith("/gate/dispatch") and want == 200 and not caller.sees_a:
            if r.json()["reason_codes"] != ["emergency_stop_state_unavailable"] or after != before:
                wrong.append(f"{where}: the gate answered for a job the caller cannot see")
        listed = _listed_a(op, r.json()) if want == 200 and op.lists else None
        if listed is not None and listed != caller.sees_a:
            wrong.append(f"{where}: lists A's objects: {listed}, should: {caller.sees_a}")
    return wrong


@pytest.fixture
def world(db: None) -> World:
    return world_build()


CASES = len(CALLERS) * len(OPERATIONS)


@pytest.mark.parametrize("name", sorted(CALLERS))
def test_each_caller_gets_exactly_the_right_answer_from_every_operation(
    name: str, world: World, cast: Any, make_key: Callable[..., str]
) -> None:
    caller = CALLERS[name]
    wrong = check(name, caller, _client(name, caller, cast, make_key), world)
    assert wrong == [], f"{len(wrong)} of {len(OPERATIONS)} wrong:\n" + "\n".join(wrong)


def test_every_operation_refuses_anonymous_callers_with_401_except_health_and_the_schema(
    world: World,
) -> None:
    client = APIClient()
    for key, op in OPERATIONS.items():
        r = call(client, key, op, world)
        assert r.status_code == (op.ok if op.scope is None else 401), (key, r.status_code)
    assert client.get("/api/v1/schema/").status_code == 200


def test_the_matrix_covers_every_operation_in_the_schema(agent: APIClient) -> None:
    import yaml

    schema = yaml.safe_load(agent.get("/api/v1/schema/").content)
    documented = {
        (method, path)
        for path, ops in schema["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert documented - set(OPERATIONS) == set(), "operations without a row in the matrix"
    assert set(OPERATIONS) - documented == set(), "matrix rows for operations that are gone"


def test_the_callers_cover_every_dashboard_role() -> None:
    assert {c.role for c in CALLERS.values() if c.role} == {*ROLE_SCOPES, "outsider"}
