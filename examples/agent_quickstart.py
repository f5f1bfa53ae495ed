#!/usr/bin/env python3
"""An agent driving a gaitweb job over the REST API: checkpoints, a gated tool call, an
approval wait and completion.

    # once: keys for the agent (and, to approve from this script, a reviewer)
    python manage.py gait apikey create --identity refund-agent --scopes submit,read,control
    python manage.py gait apikey create --identity rita --scopes approve,read,cross_identity
    python manage.py gait apikey create --identity root --scopes admin   # optional: assigns the policy

    GAIT_URL=http://127.0.0.1:8000 GAIT_API_KEY=gw_… [GAIT_REVIEWER_KEY=gw_…] [GAIT_ADMIN_KEY=gw_…] \\
        python examples/agent_quickstart.py

Without GAIT_REVIEWER_KEY the script waits for a person to approve (dashboard, or
``gait job approve --id JOB --actor NAME``). Prints one JSON line per step; exit 0 on completion.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from gaitclient import GaitApiError, GaitClient  # noqa: E402

POLICY = """\
schema_id: gait.gate.policy
schema_version: 1.0.0
default_verdict: allow
rules:
  - name: refunds-need-a-human
    priority: 10
    effect: require_approval
    match:
      tool_names: [payments.refund]
    reason_codes: [refund_requires_approval]
"""


def say(step: str, **data: object) -> None:
    print(json.dumps({"step": step, **data}, sort_keys=True), flush=True)


def wait_for_approval_and_resume(agent: GaitClient, job_id: str, timeout: float) -> dict:
    """Resume refuses with ``approval_required`` until a reviewer approves: poll it."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            return agent.resume(job_id, "approval received")
        except GaitApiError as exc:
            if exc.code != "approval_required" or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 1.5, 3.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("GAIT_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--job-id", default=f"refund-{uuid.uuid4().hex[:8]}")
    parser.add_argument(
        "--policy",
        default="quickstart-payments",
        help="stored policy an admin assigns to the agent's identity (with GAIT_ADMIN_KEY)",
    )
    parser.add_argument("--identity", default="refund-agent", help="the identity of GAIT_API_KEY")
    parser.add_argument("--approval-timeout", type=float, default=600)
    args = parser.parse_args(argv)

    agent = GaitClient(args.url, os.environ["GAIT_API_KEY"])
    reviewer_key = os.environ.get("GAIT_REVIEWER_KEY")
    admin_key = os.environ.get("GAIT_ADMIN_KEY")

    # The policy is the admin's choice, not the agent's: the admin stores it and binds it to the
    # agent's identity, and every job of that identity is bound to it (docs/security.md).
    if admin_key:
        with GaitClient(args.url, admin_key) as admin:
            saved = admin.policy_save(args.policy, POLICY, description="agent quickstart")
            say(
                "policy_saved", name=saved["name"], version=saved["version"], digest=saved["digest"]
            )
            bound = admin.identity_policy_set(args.identity, args.policy)
            say("policy_assigned", identity=bound["identity"], policy=bound["policy"])

    job = agent.submit(job_id=args.job_id, labels={"example": "quickstart"})
    say("submitted", job_id=job["job_id"], status=job["status"], policy=job["policy_ref"] or None)

    agent.checkpoint_add(job["job_id"], "plan", "look up invoice 42, then refund 420 EUR")
    say("checkpoint", type="plan")

    # 1. a harmless tool call: the gate allows it
    verdict = agent.gate_dispatch(
        job["job_id"], {"tool_name": "invoices.read", "args": {"invoice": 42}}
    )
    say("gate", tool="invoices.read", verdict=verdict["verdict"])
    if not verdict["allowed"]:
        agent.checkpoint_add(
            job["job_id"], "blocked", f"invoices.read refused: {verdict['reason_codes']}"
        )
        return 3
    agent.checkpoint_add(job["job_id"], "progress", "invoice 42 read: 420 EUR, paid")

    # 2. the risky one: ask the gate first
    refund = {
        "tool_name": "payments.refund",
        "args": {"invoice": 42, "amount": 420, "currency": "EUR"},
    }
    verdict = agent.gate_dispatch(job["job_id"], refund)
    say(
        "gate",
        tool="payments.refund",
        verdict=verdict["verdict"],
        reason_codes=verdict["reason_codes"],
    )
    if verdict["verdict"] == "block":
        agent.checkpoint_add(job["job_id"], "blocked", "the policy blocks refunds")
        return 3
    if verdict["verdict"] == "require_approval":
        cp = agent.checkpoint_add(
            job["job_id"],
            "decision-needed",
            "Refund 420 EUR for invoice 42?",
            required_action="approve the refund",
        )
        say(
            "waiting_for_approval",
            checkpoint=cp["checkpoint"]["checkpoint_id"],
            job_status=cp["job"]["status"],
        )
        if reviewer_key:  # stand-in for the person who would click Approve in the dashboard
            with GaitClient(args.url, reviewer_key) as reviewer:
                reviewer.approve(job["job_id"], "invoice checked, refund ok")
                say("approved", by="reviewer key")
        job = wait_for_approval_and_resume(agent, job["job_id"], args.approval_timeout)
        say("resumed", status=job["status"], reason_code=job["status_reason_code"])

    # 3. run the tool (here: pretend), report, complete
    receipt = {"refund_id": f"rf_{uuid.uuid4().hex[:10]}", "amount": 420}
    agent.checkpoint_add(job["job_id"], "progress", f"refund issued: {receipt['refund_id']}")
    done = agent.checkpoint_add(job["job_id"], "completed", "invoice 42 refunded")
    chain = agent.verify_chain(job["job_id"])
    say(
        "completed",
        job_id=job["job_id"],
        status=done["job"]["status"],
        revision=done["job"]["revision"],
        chain_ok=chain["ok"],
    )
    return 0 if done["job"]["status"] == "completed" and chain["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
