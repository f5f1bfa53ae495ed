"""Two identities' worth of objects for the cross-identity tests (docs/security.md).

Identity A (``agent-a``) owns one job in each state an operation needs, a checkpoint, a step
run with an output, a pending approval request, a pack and a template bound to a policy;
identity B (``agent-b``) owns a job and a template of its own. ``world_fingerprint`` is what
"A's objects are unchanged" means in the tests: every job's status, revision and chain head,
every template's fields, every approval request's status and decisions, the packs, checkpoints
and step runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gaitweb.lib.actors import Actor
from tests.api.conftest import POLICY_YAML

A = "agent-a"
B = "agent-b"
POLICY = "strict"
ELSEWHERE = "bound-elsewhere"  # an identity with an admin-assigned policy
STEPS = {"steps": [{"name": "say", "kind": "python", "with": {"function": "echo"}}]}
SECRET_OUTPUT = {"answer": "only agent-a may read this"}


@dataclass(frozen=True)
class World:
    request_id: str  # pending approval request on A's job a-decide
    pack_id: str  # pack of A's job a-run
    pack_bytes: bytes

    # A's objects by role in the tests
    run = "a-run"  # running, agent-driven, one checkpoint (cp_0001)
    queued = "a-queued"  # queued, with steps and a recorded step run
    paused = "a-paused"
    cancelled = "a-cancelled"  # cancelled before its step ran: retry-able
    decide = "a-decide"  # decision_needed with a pending approval request
    template = "a-tpl"
    b_job = "b-run"
    b_template = "b-tpl"


def world_build() -> World:
    """Create both identities' objects through the services, as the local operator would."""
    from django.utils import timezone

    from approvals.identities import identity_policy_set
    from approvals.policies import policy_save
    from approvals.services import approval_request_create
    from jobs import services
    from jobs.models import Job, StepRun
    from jobs.recurring import template_create
    from packs.services import pack_build

    admin = Actor.system("ada-admin")
    agent_a = Actor.system(A, identity=A)
    agent_b = Actor.system(B, identity=B)
    policy_save(actor=admin, name=POLICY, source=POLICY_YAML)
    # an admin's policy assignment, for an identity that is neither A nor B
    identity_policy_set(actor=admin, identity=ELSEWHERE, policy=POLICY)

    services.job_submit(actor=agent_a, job_id=World.run, identity=A)
    services.job_checkpoint_add(actor=agent_a, job_id=World.run, type="plan", summary="plan")
    queued = services.job_submit(actor=agent_a, job_id=World.queued, identity=A, spec=STEPS)
    StepRun.objects.create(
        job=queued,
        step_index=0,
        step_name="say",
        attempt=1,
        status="failed",
        output=SECRET_OUTPUT,
        started_at=timezone.now(),
    )
    services.job_submit(actor=agent_a, job_id=World.paused, identity=A)
    services.job_pause(actor=admin, job_id=World.paused)
    services.job_submit(actor=agent_a, job_id=World.cancelled, identity=A, spec=STEPS)
    services.job_cancel(actor=admin, job_id=World.cancelled)
    services.job_submit(actor=agent_a, job_id=World.decide, identity=A)
    services.job_checkpoint_add(
        actor=agent_a,
        job_id=World.decide,
        type="decision-needed",
        summary="refund 420 EUR?",
        required_action="approve the refund",
    )
    request = approval_request_create(actor=agent_a, job=World.decide, summary="refund 420 EUR?")
    pack = pack_build(actor=admin, job_id=World.run).pack
    template_create(
        actor=admin, name="A nightly", template_id=World.template, identity=A, policy=POLICY
    )

    services.job_submit(actor=agent_b, job_id=World.b_job, identity=B)
    template_create(actor=admin, name="B nightly", template_id=World.b_template, identity=B)
    assert Job.objects.filter(identity=A).count() == 5
    return World(request_id=request.request_id, pack_id=pack.pack_id, pack_bytes=bytes(pack.data))


def world_fingerprint(identity: str = A) -> dict[str, Any]:
    """Everything of ``identity`` a cross-identity request could change."""
    from approvals.models import ApprovalRequest
    from jobs.models import Checkpoint, Job, JobTemplate, StepRun
    from packs.models import Pack

    return {
        "jobs": list(
            Job.objects.filter(identity=identity)
            .order_by("job_id")
            .values_list("job_id", "status", "revision", "last_event_hash", "policy_digest")
        ),
        "templates": list(
            JobTemplate.objects.filter(identity=identity)
            .order_by("template_id")
            .values_list(
                "template_id", "enabled", "policy_id", "spec", "description", "run_count", "cron"
            )
        ),
        "approvals": [
            (r.request_id, r.status, r.decisions.count())
            for r in ApprovalRequest.objects.filter(job__identity=identity).order_by("request_id")
        ],
        "packs": Pack.objects.filter(job__identity=identity).count(),
        "checkpoints": Checkpoint.objects.filter(job__identity=identity).count(),
        "step_runs": StepRun.objects.filter(job__identity=identity).count(),
        "jobs_total": Job.objects.count(),
    }
