"""The gate decides from what the server knows, and policy is assigned by admins — over the REST
API (docs/security.md). Each test reproduces a request that used to succeed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from approvals.models import IdentityPolicy
from approvals.policies import policy_save
from gaitweb.lib.actors import Actor
from jobs.models import Job, JobEvent
from tests.api.conftest import error_code, submit

pytestmark = pytest.mark.django_db

ADMIN = Actor.system("ada")
# only trusted-bot may drop tables; everyone else is blocked
TRUST = "default_verdict: block\nrules:\n  - {name: trusted, effect: allow, match: {identities: [trusted-bot]}}\n"
STRICT = "default_verdict: block\nrules:\n  - {name: reads, effect: allow, match: {tool_names: [tool.read]}}\n"
LENIENT = "default_verdict: allow\n"
CLAIM = {"tool_name": "db.drop", "context": {"identity": "trusted-bot"}}


@pytest.fixture
def stored(db: Any) -> None:
    for name, source in (("trust", TRUST), ("strict", STRICT), ("lenient", LENIENT)):
        policy_save(actor=ADMIN, name=name, source=source)


# --- the identity in an intent ----------------------------------------------------------------


def test_an_agent_claiming_trusted_bot_in_an_evaluated_intent_is_blocked(
    stored: None, agent: APIClient, key_client: Callable[..., APIClient]
) -> None:
    r = agent.post("/api/v1/gate/evaluate", {"intent": CLAIM, "policy": "trust"}, format="json")
    assert r.status_code == 200
    body = r.json()
    assert (body["verdict"], body["reason_codes"], body["allowed"]) == (
        "block",
        ["intent_identity_mismatch"],
        False,
    )
    assert body["matched_rules"] == []  # the policy was not even consulted
    # without the claim the agent is judged as itself
    r = agent.post(
        "/api/v1/gate/evaluate",
        {"intent": {"tool_name": "db.drop"}, "policy": "trust"},
        format="json",
    )
    assert (r.json()["verdict"], r.json()["reason_codes"]) == ("block", ["default_block"])
    # the real trusted-bot still gets its verdict: the rule works, only the claim is refused
    bot = key_client("read", identity="trusted-bot")
    r = bot.post("/api/v1/gate/evaluate", {"intent": CLAIM, "policy": "trust"}, format="json")
    assert r.json()["verdict"] == "allow"


def test_an_agent_claiming_trusted_bot_in_a_dispatch_is_blocked_and_the_claim_is_journaled(
    stored: None, agent: APIClient
) -> None:
    assert submit(agent, job_id="j-claim", policy="trust").status_code == 201
    r = agent.post("/api/v1/jobs/j-claim/gate/dispatch", {"intent": CLAIM}, format="json")
    assert r.status_code == 200
    assert (r.json()["verdict"], r.json()["reason_codes"]) == (
        "block",
        ["intent_identity_mismatch"],
    )
    event = JobEvent.objects.filter(job__job_id="j-claim").order_by("-revision").first()
    assert event is not None
    assert (event.type, event.reason_code) == ("dispatch_blocked", "intent_identity_mismatch")
    assert (event.payload["identity"], event.payload["claimed_identity"]) == (
        "agent-7",
        "trusted-bot",
    )
    # naming its own identity is no claim
    own = {"tool_name": "db.drop", "context": {"identity": "agent-7"}}
    r = agent.post("/api/v1/jobs/j-claim/gate/dispatch", {"intent": own}, format="json")
    assert r.json()["reason_codes"] == ["default_block"]


def test_evaluate_without_a_policy_uses_the_one_assigned_to_the_caller(
    stored: None, agent: APIClient, admin_key: APIClient
) -> None:
    write = {"intent": {"tool_name": "tool.write"}}
    r = agent.post("/api/v1/gate/evaluate", write, format="json")
    assert (r.json()["verdict"], r.json()["reason_codes"]) == ("allow", ["no_policy_bound"])
    r = admin_key.post(
        "/api/v1/identities/policies", {"identity": "agent-7", "policy": "strict"}, format="json"
    )
    assert r.status_code == 200
    r = agent.post("/api/v1/gate/evaluate", write, format="json")
    assert (r.json()["verdict"], r.json()["reason_codes"]) == ("block", ["default_block"])
    r = agent.post("/api/v1/gate/evaluate", {"intent": {"tool_name": "tool.read"}}, format="json")
    assert r.json()["verdict"] == "allow"


# --- policy assignment ----------------------------------------------------------------------------


@pytest.fixture
def assigned(stored: None, admin_key: APIClient) -> None:
    r = admin_key.post(
        "/api/v1/identities/policies",
        {"identity": "agent-7", "policy": "strict", "may_request": ["trust"]},
        format="json",
    )
    assert r.status_code == 200, r.content


def test_admins_set_read_and_clear_an_identity_policy_over_the_api(
    assigned: None, admin_key: APIClient, agent: APIClient
) -> None:
    r = admin_key.get("/api/v1/identities/policies")
    assert r.status_code == 200
    body = r.json()
    assert [(b["identity"], b["policy"], b["may_request"]) for b in body["results"]] == [
        ("agent-7", "strict", ["trust"])
    ]
    assert body["gate"]["mode"] == "partially_gated" and body["default_policy"] == ""
    r = admin_key.get("/api/v1/identities/policies/agent-7")
    assert (r.json()["source"], r.json()["policy"]) == ("identity", "strict")
    r = admin_key.get("/api/v1/identities/policies/someone-else")
    assert (r.json()["source"], r.json()["policy"]) == ("none", None)
    # an agent can neither read nor change its own assignment
    for r in (
        agent.get("/api/v1/identities/policies"),
        agent.post(
            "/api/v1/identities/policies",
            {"identity": "agent-7", "policy": "lenient"},
            format="json",
        ),
        agent.delete("/api/v1/identities/policies/agent-7"),
    ):
        assert (r.status_code, error_code(r)) == (403, "permission_denied")
    assert IdentityPolicy.objects.get().policy.name == "strict"
    assert admin_key.delete("/api/v1/identities/policies/agent-7").status_code == 204
    r = admin_key.delete("/api/v1/identities/policies/agent-7")
    assert (r.status_code, error_code(r)) == (404, "identity_policy_not_found")


def test_an_agent_cannot_choose_a_weaker_policy_or_none(assigned: None, agent: APIClient) -> None:
    r = submit(agent, job_id="j-weak", policy="lenient")
    assert (r.status_code, error_code(r)) == (422, "policy_not_allowed")
    assert r.json()["error"]["details"]["assigned_policy"] == "strict"
    r = submit(agent, job_id="j-none", policy="none")
    assert (r.status_code, error_code(r)) == (422, "policy_none_refused")
    assert not Job.objects.exists()
    r = submit(agent, job_id="j-trust", policy="trust")  # allowed by the admin
    assert (r.status_code, r.json()["policy_ref"]) == (201, "policy:trust")


def test_a_submit_without_a_policy_or_with_a_misspelled_field_is_bound_to_the_assigned_one(
    assigned: None, agent: APIClient
) -> None:
    r = submit(agent, job_id="j-plain")
    assert (r.status_code, r.json()["policy_ref"]) == (201, "policy:strict")
    # {"polcy": …} once gave an ungated job: refused as an unknown field, or — where that
    # refusal is not in place — the job is still bound to the assigned policy
    r = submit(agent, job_id="j-typo", polcy="lenient")
    if r.status_code == 201:
        assert r.json()["policy_ref"] == "policy:strict"
    else:
        assert (r.status_code, error_code(r)) == (400, "unknown_field")


def test_a_resume_asking_for_a_weaker_policy_is_refused(assigned: None, agent: APIClient) -> None:
    assert submit(agent, job_id="j-res").status_code == 201
    assert agent.post("/api/v1/jobs/j-res/pause", {}, format="json").status_code == 200
    r = agent.post("/api/v1/jobs/j-res/resume", {"policy": "lenient"}, format="json")
    assert (r.status_code, error_code(r)) == (422, "policy_not_allowed")
    assert Job.objects.get(job_id="j-res").status == "paused"


def test_the_stats_endpoint_says_ungated(agent: APIClient) -> None:
    assert submit(agent, job_id="j-u").status_code == 201
    gate = agent.get("/api/v1/stats").json()["gate"]
    assert (gate["mode"], gate["ungated_active_jobs"]) == ("ungated", 1)
    assert gate["warning"].startswith("UNGATED")
