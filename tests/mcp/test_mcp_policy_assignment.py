"""MCP's job_create is bound to the identity's admin-assigned policy, and its gate_evaluate
judges the job's identity (docs/security.md), over a real `gait mcp` stdio subprocess."""

from __future__ import annotations

import anyio

from approvals.identities import identity_policy_set
from approvals.policies import policy_save
from gaitweb.lib.actors import Actor
from jobs.models import Job
from tests.mcp.test_mcp_stdio import _call, _session

ADMIN = Actor.system("ada")


def test_mcp_job_create_cannot_choose_a_weaker_policy_and_is_gated_by_the_assigned_one(
    transactional_db: None,
) -> None:
    policy_save(
        actor=ADMIN,
        name="strict",
        source="default_verdict: block\nrules:\n  - {name: reads, effect: allow, match: {tool_names: [fs.read]}}\n",
    )
    policy_save(actor=ADMIN, name="lenient", source="default_verdict: allow\n")
    identity_policy_set(actor=ADMIN, identity="agent-7", policy="strict")

    async def agent() -> None:
        async with _session("--identity", "agent-7") as s:
            err, out = await _call(s, "job_create", job_id="mcp-weak", policy="lenient")
            assert err and out["error_code"] == "policy_not_allowed", out
            err, out = await _call(s, "job_create", job_id="mcp-none", policy="none")
            assert err and out["error_code"] == "policy_none_refused", out
            err, out = await _call(s, "job_create", job_id="mcp-bound")
            assert not err and out["job"]["policy_ref"] == "policy:strict", out
            err, out = await _call(s, "gate_evaluate", job_id="mcp-bound", tool_name="fs.write")
            assert not err and (out["verdict"], out["reason_codes"]) == ("block", ["default_block"])
            err, out = await _call(s, "gate_evaluate", job_id="mcp-bound", tool_name="fs.read")
            assert not err and out["verdict"] == "allow", out

    anyio.run(agent)
    assert list(Job.objects.values_list("job_id", flat=True)) == ["mcp-bound"]
