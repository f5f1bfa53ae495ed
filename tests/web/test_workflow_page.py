"""A workflow job's page: its calls as a timeline (name, kind, attempt, duration, result, gate
verdict), the current call and why it is parked; approval cards show the call's arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from approvals.policies import PolicyBinding
from gaitweb.lib.actors import Actor
from jobs.engine.runner import advance
from jobs.models import Job
from jobs.services import job_submit
from tests.web.conftest import Browser
from tests.workflow_world import policy_stored

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def parked(tmp_path: Path) -> Job:
    version = policy_stored()
    job = job_submit(
        actor=Actor.system("tester"),
        job_id="wf-page",
        spec={
            "workflow": "refund",
            "input": {"path": str(tmp_path / "fx"), "invoice": "42", "amount": 420},
        },
        policy=PolicyBinding.of(version),
    )
    assert advance(job.job_id) == "decision_needed"
    return Job.objects.get(pk=job.pk)


def test_the_job_page_shows_the_calls_and_why_the_job_is_parked(cast: Any, parked: Job) -> None:
    page = Browser(cast.operator).get("/jobs/wf-page/").content.decode()
    assert 'id="calls"' in page
    assert 'data-call="1"' in page and "<code>lookup</code>" in page
    assert 'data-call="2"' in page and "<code>plan</code>" in page and "checkpoint" in page
    assert "Waiting for a reviewer to approve call payments.refund" in page
    assert "{&quot;total&quot;: 420}" in page  # the lookup's result preview
    # the approval card on the same page shows the call's arguments
    assert "payments.refund" in page and "&quot;amount&quot;: 420" in page


def test_the_approvals_queue_shows_the_tool_calls_arguments(cast: Any, parked: Job) -> None:
    page = Browser(cast.reviewer).get("/approvals/").content.decode()
    assert "wf-page" in page and "payments.refund" in page
    assert "&quot;invoice&quot;: &quot;42&quot;" in page and "&quot;amount&quot;: 420" in page


def test_another_identitys_integrator_cannot_see_the_page(cast: Any, parked: Job) -> None:
    response = Browser(cast.integrator).get("/jobs/wf-page/")
    assert response.status_code == 404
