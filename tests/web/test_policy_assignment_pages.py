"""The dashboard under admin-assigned policies: "Run a job" is bound to the identity's policy
whatever the form asks, and an ungated deployment or job says so loudly (docs/dashboard.md)."""

from __future__ import annotations

from typing import Any

import pytest

from approvals.identities import identity_policy_set
from approvals.policies import policy_save
from gaitweb.lib.actors import Actor
from jobs.models import Job
from jobs.services import job_submit
from tests.web.conftest import Browser

pytestmark = pytest.mark.django_db

ADMIN = Actor.system("ada")
SPEC = "steps:\n  - {name: a, kind: python, with: {function: echo}}\n"


@pytest.fixture
def assigned(db: Any) -> None:
    policy_save(actor=ADMIN, name="strict", source="default_verdict: block\n")
    policy_save(actor=ADMIN, name="lenient", source="default_verdict: allow\n")
    identity_policy_set(actor=ADMIN, identity="agent.billing", policy="strict")


def test_run_a_job_with_a_weaker_policy_is_refused_and_without_one_is_bound(
    cast: Any, assigned: None
) -> None:
    b = Browser(cast.operator)
    form = {"spec": SPEC, "identity": "agent.billing", "policy": "lenient", "job_id": "w-1"}
    response = b.post("/jobs/new/", form)
    assert response.status_code == 422
    assert "policy_not_allowed" in response.content.decode()
    assert not Job.objects.exists()
    response = b.post("/jobs/new/", {**form, "policy": ""})
    assert response.status_code == 302
    assert Job.objects.get(job_id="w-1").policy_ref == "policy:strict"


def test_an_ungated_deployment_and_its_jobs_carry_a_loud_warning(cast: Any) -> None:
    job_submit(actor=Actor.system("agent", identity="agent.x"), job_id="u-1")
    b = Browser(cast.viewer)
    listing = b.get("/jobs/").content.decode()
    assert 'id="gate-banner"' in listing and "UNGATED" in listing
    assert 'class="badge st-ungated"' in listing
    detail = b.get("/jobs/u-1/").content.decode()
    assert 'id="gate-banner"' in detail and 'id="job-ungated"' in detail
    assert "every tool call is allowed" in detail


def test_a_gated_deployment_shows_no_warning_and_bound_jobs_no_badge(
    cast: Any, settings: Any
) -> None:
    policy_save(actor=ADMIN, name="strict", source="default_verdict: block\n")
    settings.GAIT = {**settings.GAIT, "DEFAULT_POLICY": "strict"}
    job_submit(actor=Actor.system("agent", identity="agent.x"), job_id="g-1")
    b = Browser(cast.viewer)
    listing = b.get("/jobs/").content.decode()
    assert 'id="gate-banner"' not in listing and "st-ungated" not in listing
    detail = b.get("/jobs/g-1/").content.decode()
    assert 'id="job-ungated"' not in detail and "policy:strict" in detail


def test_a_step_shows_the_name_the_gate_sees_next_to_its_label(
    cast: Any, allow_commands: Any
) -> None:
    allow_commands("touch")
    spec = {
        "steps": [
            {"name": "sneak", "kind": "command", "with": {"argv": ["touch", "/tmp/x"]}, "tool": "tool.read"},
            {"name": "calm", "kind": "python", "with": {"function": "echo"}},
        ]
    }  # fmt: skip
    job_submit(actor=Actor.system("agent", identity="agent.x"), job_id="t-1", spec=spec)
    detail = Browser(cast.viewer).get("/jobs/t-1/").content.decode()
    assert "gate sees <code>command:touch</code> · label tool.read" in detail
    assert "gate sees <code>python:echo</code></span>" in detail  # no label: it is the kind
