"""What the workflow tests share: the policy they gate with and how they submit a workflow
(the workflows themselves are in tests/workflows.py, a step module the workers load)."""

from __future__ import annotations

from typing import Any

from approvals.models import PolicyVersion
from approvals.policies import PolicyBinding, policy_save
from gaitweb.lib.actors import Actor
from jobs.models import Job
from jobs.services import job_submit

# refunds wait for a person, shell.rm is blocked, everything else is allowed
POLICY = """
schema_id: gait.gate.policy
schema_version: 1.0.0
default_verdict: allow
rules:
  - {name: refunds-need-a-person, effect: require_approval, match: {tool_names: [payments.refund]}}
  - {name: no-rm, effect: block, match: {tool_names: [shell.rm]}}
"""


def policy_stored(name: str = "wf") -> PolicyVersion:
    return policy_save(actor=Actor.system("admin"), name=name, source=POLICY)


def workflow_submit(
    workflow: str, *, actor: Actor, policy: PolicyVersion | None = None, **input: Any
) -> Job:
    binding = PolicyBinding.of(policy) if policy is not None else None
    return job_submit(actor=actor, spec={"workflow": workflow, "input": input}, policy=binding)
