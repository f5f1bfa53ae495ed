"""Every MCP tool × its own identity's objects and another identity's (docs/security.md).

The server is built in-process (``build_server``) and driven through ``MCPServer.call_tool``,
the path a client's ``tools/call`` takes (argument checks included); the tools run on the SDK's
worker threads, so the tests use committed rows (``transactional_db``). An MCP session of
identity B gets exactly the refusal an unknown object gets (``job_not_found``,
``template_not_found``, ``approval_not_found``; the gate's fail-closed block), and A's objects
are unchanged. A new tool without a row in ``CASES`` fails ``test_every_tool_has_cases``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from gaitweb.apikeys import apikey_actor, apikey_create
from gaitweb.lib.actors import Actor
from gaitweb.mcp_server import build_server
from jobs.models import Job
from tests.identity_world import A, B, World, world_build, world_fingerprint
from tests.mcp.test_mcp_stdio import TOOLS


@dataclass(frozen=True)
class Case:
    tool: str
    args: dict[str, Any]
    other_code: str  # what a session of another identity gets: an error code, or "" for ok


def _cases(world: World) -> list[Case]:
    run, queued, decide = World.run, World.queued, World.decide
    return [  # in an order the owner can run them one after another on one world
        Case("job_create", {"template_id": World.template}, "template_not_found"),
        Case("job_create", {"job_id": "fresh"}, ""),
        Case("job_list", {}, ""),
        Case("job_list", {"before_job_id": run}, "job_not_found"),
        Case("job_status", {"job_id": run}, "job_not_found"),
        Case("job_show", {"job_id": run}, "job_not_found"),
        Case("job_result", {"job_id": queued}, "job_not_found"),
        Case("gate_evaluate", {"job_id": run, "tool_name": "tool.read"}, ""),
        Case("approval_wait", {"job_id": decide}, "job_not_found"),
        Case("approval_wait", {"request_id": world.request_id}, "approval_not_found"),
        Case("template_list", {}, ""),
        Case("job_cancel", {"job_id": World.paused}, "job_not_found"),
        Case(
            "job_update", {"job_id": run, "summary": "done", "type": "completed"}, "job_not_found"
        ),
    ]


def call(actor: Actor, tool: str, args: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    server = build_server(actor)

    async def go() -> Any:
        return await server.call_tool(tool, args)

    result = anyio.run(go)
    return bool(result.is_error), dict(result.structured_content or {})


def _shows_a(tool: str, out: dict[str, Any]) -> bool:
    if tool == "job_list":
        return any(j["identity"] == A for j in out["jobs"])
    if tool == "template_list":
        return any(t["identity"] == A for t in out["templates"])
    return False


SESSIONS = {
    # an API key of identity B, and a local session started with --identity agent-b
    "key_b": lambda: _key_actor("read,submit,control", B),
    "local_b": lambda: Actor(
        name=B, scopes=frozenset({"read", "submit", "control"}), identity=B, kind="system"
    ),
}


def _key_actor(scopes: str, identity: str) -> Actor:
    row = apikey_create(actor=Actor.system("test"), identity=identity, scopes=scopes).api_key
    return apikey_actor(row)


@pytest.mark.parametrize("session", sorted(SESSIONS))
def test_another_identitys_session_gets_the_unknown_objects_answer_from_every_tool(
    transactional_db: None, session: str
) -> None:
    world = world_build()
    actor = SESSIONS[session]()
    wrong = []
    for case in _cases(world):
        before = world_fingerprint()
        err, out = call(actor, case.tool, case.args)
        after = world_fingerprint()
        where = f"{session}: {case.tool}({case.args})"
        if case.other_code:
            if not err or out.get("error_code") != case.other_code:
                wrong.append(f"{where}: want {case.other_code}, got {out}")
            if after != before:
                wrong.append(f"{where}: A's objects changed")
            continue
        if err:
            wrong.append(f"{where}: refused {out.get('error_code')}")
        if _shows_a(case.tool, out):
            wrong.append(f"{where}: shows A's objects")
        if case.tool == "gate_evaluate":
            if out.get("reason_codes") != ["emergency_stop_state_unavailable"] or after != before:
                wrong.append(f"{where}: the gate answered for a job it cannot see: {out}")
    assert wrong == [], "\n".join(wrong)


def test_the_owning_identitys_session_gets_its_objects_from_every_tool(
    transactional_db: None,
) -> None:
    world = world_build()
    actor = _key_actor("read,submit,control", A)
    for case in _cases(world):
        err, out = call(actor, case.tool, case.args)
        assert not err, (case, out)
        if case.tool in ("job_list", "template_list") and not case.args:
            assert _shows_a(case.tool, out), out
        if case.tool == "gate_evaluate":
            assert out["verdict"] == "allow", out
    # the writes happened, on A's objects

    assert Job.objects.get(job_id=World.run).status == "completed"
    assert Job.objects.get(job_id=World.paused).status == "cancelled"


def test_a_cross_identity_session_sees_every_identitys_jobs_and_templates(
    transactional_db: None,
) -> None:
    world_build()
    actor = _key_actor("read,submit,control,cross_identity", "svc-ops")
    err, out = call(actor, "job_list", {"limit": 50})
    assert not err and {j["identity"] for j in out["jobs"]} == {A, B}
    err, out = call(actor, "job_status", {"job_id": World.run})
    assert not err and out["status"] == "running"
    err, out = call(actor, "template_list", {})
    assert not err and {t["identity"] for t in out["templates"]} == {A, B}


def test_every_tool_has_cases(transactional_db: None) -> None:
    world = world_build()
    server = build_server(Actor.system("test"))

    async def names() -> set[str]:
        return {t.name for t in await server.list_tools()}

    listed = anyio.run(names)
    assert listed == TOOLS
    assert {c.tool for c in _cases(world)} == TOOLS


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_refuses_an_unknown_argument_and_names_it(
    transactional_db: None, tool: str
) -> None:
    world = world_build()
    case = next(c for c in _cases(world) if c.tool == tool)
    before = world_fingerprint()
    err, out = call(Actor.system(A, identity=A), tool, {**case.args, "polcy": "strict"})
    assert err and out["error_code"] == "unknown_field", out
    assert out["details"]["field"] == "polcy"
    assert world_fingerprint() == before


def test_docs_mcp_md_lists_gate_evaluates_arguments_as_the_tool_declares_them(
    transactional_db: None,
) -> None:
    """An agent author reads docs/mcp.md: the argument table is the tool's input schema."""
    import re
    from pathlib import Path

    server = build_server(Actor.system("test"))

    declared = server._tool_manager.get_tool(
        "gate_evaluate"
    ).parameters  # what tools/list publishes
    doc = (Path(__file__).resolve().parents[2] / "docs" / "mcp.md").read_text()
    section = doc.split("### `gate_evaluate` arguments", 1)[1].split("```", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| (yes|no) \|", section, flags=re.M)
    assert {name for name, _ in rows} == set(declared["properties"])
    assert {name for name, req in rows if req == "yes"} == set(declared.get("required", []))
