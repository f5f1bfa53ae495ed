"""The MCP server as an agent sees it: `manage.py gait mcp` started as a real subprocess and
driven with the SDK's own stdio client."""

from __future__ import annotations

import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from approvals.services import approval_decide, approval_request_create
from gaitweb.apikeys import apikey_create
from gaitweb.lib.actors import Actor
from jobs.models import Job, JobEvent
from jobs.recurring import template_create
from jobs.services import job_stop
from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {
    "job_create",
    "job_list",
    "job_status",
    "job_show",
    "job_update",
    "job_result",
    "job_cancel",
    "gate_evaluate",
    "approval_wait",
    "template_list",
}


@asynccontextmanager
async def _session(*args: str, **env: str) -> Any:
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(ROOT / "manage.py"), "gait", "mcp", *args],
        env=subprocess_env(**env),
        cwd=str(ROOT),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def _call(session: Any, tool: str, **arguments: Any) -> tuple[bool, dict[str, Any]]:
    result = await session.call_tool(tool, arguments)
    return bool(result.is_error), dict(result.structured_content or {})


def test_an_agent_lists_tools_creates_a_job_checkpoints_it_and_is_blocked_after_a_stop(
    transactional_db: None,
) -> None:
    async def agent() -> None:
        async with _session("--identity", "agent-7") as s:
            tools = await s.list_tools()
            assert TOOLS <= {t.name for t in tools.tools}

            err, out = await _call(s, "job_create", job_id="mcp-job-1")
            assert not err, out
            assert out["job"]["status"] == "running" and out["job"]["identity"] == "agent-7"

            err, out = await _call(
                s, "job_update", job_id="mcp-job-1", summary="read the inbox", type="progress"
            )
            assert not err, out
            assert out["checkpoint"]["checkpoint_id"] == "cp_0001"

            err, out = await _call(s, "gate_evaluate", job_id="mcp-job-1", tool_name="fs.write")
            assert not err and out["verdict"] == "allow", out

            await anyio.to_thread.run_sync(
                lambda: job_stop(actor=Actor.system("otto"), job_id="mcp-job-1", reason="halt")
            )

            err, out = await _call(
                s, "gate_evaluate", job_id="mcp-job-1", tool_name="fs.write", args={"p": "/x"}
            )
            assert not err
            assert out["verdict"] == "block" and out["allowed"] is False
            assert out["reason_codes"] == ["emergency_stop_preempted"]

            # refusals are error results with the services' reason codes, never a crash
            err, out = await _call(s, "job_update", job_id="mcp-job-1", summary="more")
            assert err and out["error_code"] == "invalid_transition"
            err, out = await _call(
                s, "job_create", job_id="mcp-bad", spec={"steps": [{"name": "x", "kind": "nope"}]}
            )
            assert err and out["error_code"].startswith("spec_"), out
            err, out = await _call(s, "job_list", limit=10_000)
            assert err and out["error_code"] == "page_size_too_large"
            assert out["details"]["limit"] == "LIST_MAX_PAGE_SIZE"
            err, out = await _call(s, "job_status", job_id="no-such-job")
            assert err and out["error_code"] == "job_not_found"

            err, out = await _call(s, "job_show", job_id="mcp-job-1")
            assert not err and [c["summary"] for c in out["checkpoints"]] == ["read the inbox"]
            err, out = await _call(s, "job_list", limit=5)
            assert not err and [j["job_id"] for j in out["jobs"]] == ["mcp-job-1"]

    anyio.run(agent)
    blocked = JobEvent.objects.filter(job__job_id="mcp-job-1", type="dispatch_blocked").get()
    assert blocked.reason_code == "emergency_stop_preempted"
    assert blocked.payload["path"] == "mcp" and blocked.actor == "agent-7"
    assert JobEvent.objects.filter(job__job_id="mcp-job-1", type="dispatch_allowed").count() == 1
    assert not Job.objects.filter(job_id="mcp-bad").exists()


def test_an_api_key_limits_the_agent_to_its_scopes_and_templates_create_linked_jobs(
    transactional_db: None,
) -> None:
    admin = Actor.system("ada")
    # a read-only key of the template's identity (another identity's would see no template)
    reader = apikey_create(actor=admin, identity="brief-bot", scopes="read").key
    writer = apikey_create(actor=admin, identity="brief-bot", scopes="read,submit,control").key
    template_create(actor=admin, name="Daily brief", identity="brief-bot")

    async def agents() -> None:
        async with _session(GAIT_MCP_API_KEY=reader) as s:
            err, out = await _call(s, "job_create", job_id="reader-job")
            assert err and out["error_code"] == "permission_denied", out
            err, out = await _call(s, "template_list")
            assert not err and [t["template_id"] for t in out["templates"]] == ["daily-brief"]
        async with _session("--api-key", writer) as s:
            err, out = await _call(s, "job_create", template_id="daily-brief", job_id="brief-1")
            assert not err, out
            assert out["job"]["labels"]["gait.template"] == "daily-brief"
            err, out = await _call(s, "job_create", template_id="daily-brief")
            assert err and out["error_code"] == "template_run_active"
            err, out = await _call(s, "job_show", job_id="brief-1")
            assert out["template"]["template_id"] == "daily-brief"
            # a decision point: the agent asks, a reviewer approves while the agent waits
            err, out = await _call(
                s, "job_update", job_id="brief-1", type="decision-needed",
                summary="send the brief?", required_action="approve sending",
            )  # fmt: skip
            assert not err and out["job"]["status"] == "decision_needed", out
            request_id = await anyio.to_thread.run_sync(_open_request)
            err, out = await _call(s, "approval_wait", job_id="brief-1")
            assert not err and out["pending"] is True
            assert out["requests"][0]["request_id"] == request_id
            async with anyio.create_task_group() as tg:

                async def approve_later() -> None:
                    await anyio.sleep(0.5)
                    await anyio.to_thread.run_sync(_approve, request_id)

                tg.start_soon(approve_later)
                started = anyio.current_time()
                err, out = await _call(
                    s, "approval_wait", request_id=request_id, timeout_seconds=10
                )
                assert anyio.current_time() - started < 8
            assert not err and out["pending"] is False
            assert out["requests"][0]["status"] == "approved"
            err, out = await _call(
                s, "job_update", job_id="brief-1", summary="done", type="completed"
            )
            assert not err, out
            err, out = await _call(s, "job_result", job_id="brief-1")
            assert out["finished"] is True and out["final_checkpoint"]["summary"] == "done"
            err, out = await _call(s, "approval_wait", job_id="brief-1")
            assert not err and out["pending"] is False

    anyio.run(agents)
    assert not Job.objects.filter(job_id="reader-job").exists()


def _open_request() -> str:
    return approval_request_create(
        actor=Actor.system("gaitweb-engine"), job="brief-1", summary="send the brief?"
    ).request_id


def _approve(request_id: str) -> None:
    approval_decide(actor=Actor.system("rita"), request_id=request_id, decision="approve")


def test_the_server_refuses_to_start_with_a_bad_api_key(transactional_db: None) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "gait", "mcp", "--api-key", "gw_nope_nope"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 6
    assert proc.stdout == ""
    assert '"error_code": "invalid_api_key"' in proc.stderr
