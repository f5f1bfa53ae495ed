"""Who may do what, across the five roles and an outsider: the services check scopes
themselves, so every entry point (admin, dashboard, API, CLI) enforces the same rules."""

from __future__ import annotations

from typing import Any

import pytest

from approvals.gate import gate_dispatch
from approvals.identities import identity_revoke
from approvals.models import Policy, RevokedIdentity
from approvals.policies import policy_list, policy_save
from approvals.selectors import approval_pending_list
from approvals.services import approval_decide, approval_expire_due, approval_request_create
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import Forbidden
from jobs import services as jobs
from jobs.models import JobEvent

pytestmark = pytest.mark.django_db

ROLES = ["admin", "operator", "reviewer", "integrator", "viewer", "outsider"]
AGENT = Actor.system("agent-runner", identity="agent.billing")


def _parked() -> str:
    jobs.job_submit(actor=AGENT, job_id="job_p1")
    jobs.job_checkpoint_add(actor=AGENT, job_id="job_p1", type="decision-needed", summary="ok?")
    return approval_request_create(
        actor=Actor.system("engine"), job="job_p1", summary="ok?"
    ).request_id


ACTIONS: dict[str, Any] = {
    "save a policy": (
        lambda actor: policy_save(actor=actor, name="p", source="default_verdict: allow\n"),
        {"admin"},
    ),
    "revoke an identity": (
        lambda actor: identity_revoke(actor=actor, identity="agent.x"),
        {"admin"},
    ),
    "decide an approval": (
        lambda actor: approval_decide(actor=actor, request_id=_parked(), decision="approve"),
        {"admin", "reviewer"},
    ),
    "see the approval queue": (
        lambda actor: list(approval_pending_list(actor=actor)),
        set(ROLES) - {"outsider"},
    ),
    "list policies": (lambda actor: policy_list(actor=actor), set(ROLES) - {"outsider"}),
    "expire due approvals": (lambda actor: approval_expire_due(actor=actor), {"admin"}),
    "request an approval": (
        # on a job of the actor's own identity: an integrator sees no other (tests/api matrix)
        lambda actor: approval_request_create(
            actor=actor,
            job=jobs.job_submit(actor=AGENT, job_id="job_p2", identity=actor.identity).job_id,
            summary="?",
        ),
        {"admin", "operator", "integrator"},
    ),
    "dispatch a tool call": (
        lambda actor: gate_dispatch(
            job_id=jobs.job_submit(actor=AGENT, job_id="job_p3").job_id,
            intent={"tool_name": "t"},
            actor=actor,
        ),
        {"admin", "operator", "integrator"},
    ),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(ACTIONS))
def test_permission_matrix(cast: Any, action: str, role: str) -> None:
    fn, allowed = ACTIONS[action]
    actor = cast.actor(role)
    if role in allowed:
        fn(actor)
    else:
        with pytest.raises(Forbidden) as info:
            fn(actor)
        assert info.value.code == "permission_denied"


def test_a_refused_admin_action_writes_nothing(cast: Any) -> None:
    with pytest.raises(Forbidden):
        policy_save(actor=cast.actor("operator"), name="p", source="default_verdict: allow\n")
    with pytest.raises(Forbidden):
        identity_revoke(actor=cast.actor("reviewer"), identity="agent.x")
    assert (Policy.objects.count(), RevokedIdentity.objects.count(), JobEvent.objects.count()) == (
        0,
        0,
        0,
    )
