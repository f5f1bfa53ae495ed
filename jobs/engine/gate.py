"""The policy gate before each step of a job bound to a policy: ``allow`` (and ``dry_run``)
dispatch it, ``require_approval`` opens an approval request (jobs/engine/parking.py; once
approved for this step, the step runs), ``block`` parks the job ``blocked`` with a blocked
checkpoint (the runner's loop acts on the verdict). The gate sees only what the server knows about the step (``intent``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.db import transaction

from approvals.gate import gate_evaluate
from approvals.models import PolicyVersion
from gaitweb.lib.errors import InvalidInput
from jobs.models import CheckpointType, Job, JobStatus
from jobs.spec import step_gate_tool

if TYPE_CHECKING:
    from jobs.engine.runner import _Runner


def verdict(runner: _Runner, step: dict[str, Any]) -> dict[str, Any]:
    """The gate's verdict on dispatching ``step`` (an unreadable policy blocks)."""
    job = runner.job
    assert job is not None
    try:
        if runner.policy is None or runner.policy.pk != job.policy_id:
            runner.policy = PolicyVersion.objects.get(pk=job.policy_id)  # type: ignore[misc]
        return gate_evaluate(intent=intent(job, step), policy=runner.policy).as_dict()
    except InvalidInput as exc:
        return {"verdict": "block", "reason_codes": [exc.code], "violations": [exc.message]}
    except PolicyVersion.DoesNotExist:
        return {"verdict": "block", "reason_codes": ["policy_unavailable"], "violations": []}


def block(runner: _Runner, step: dict[str, Any], result: dict[str, Any]) -> None:
    """Park the job ``blocked`` with a blocked checkpoint naming the gate's reasons."""
    reasons = list(result.get("reason_codes") or ["policy_blocked"])
    with transaction.atomic():
        job = runner._locked()
        runner._park_with_checkpoint(
            job,
            type=CheckpointType.BLOCKED,
            summary=f"The policy blocked step {step['name']} ({step_tools(step)}): {', '.join(reasons)}"[
                :512
            ],
            reason_code="policy_blocked",
            new_status=JobStatus.BLOCKED,
            payload={
                "step": step["name"],
                "step_index": job.cursor,
                "tool": step_gate_tool(step),
                "label": step["tool"],
                "gate": result,
            },
        )


def step_tools(step: dict[str, Any]) -> str:
    """The gate's tool name for a step, with the caller's label when it says something else."""
    gate_tool = step_gate_tool(step)
    label = step.get("tool") or ""
    return gate_tool if label in ("", step["kind"], gate_tool) else f"{gate_tool}, labelled {label}"


def intent(job: Job, step: dict[str, Any]) -> dict[str, Any]:
    """The intent the gate sees for a step, built only from what the server knows: the tool name
    derived from the step (``step_gate_tool``, never the caller's ``tool`` label), its
    arguments and targets, and the job's identity."""
    w = step["with"]
    targets: list[dict[str, str]] = []
    if step["kind"] == "http":
        targets = [
            {"kind": "url", "value": w["url"], "operation": w["method"].lower()},
            {"kind": "host", "value": urlsplit(w["url"]).hostname or ""},
        ]
    elif step["kind"] == "command":
        exe = "sh" if w.get("shell") else w["argv"][0]
        targets = [
            {"kind": "other", "value": exe, "operation": "exec", "endpoint_class": "proc.exec"}
        ]
    return {
        "tool_name": step_gate_tool(step),
        "args": {k: v for k, v in w.items() if k != "env"},
        "targets": [t for t in targets if t["value"]],
        "context": {"identity": job.identity, "job_id": job.job_id},
    }
