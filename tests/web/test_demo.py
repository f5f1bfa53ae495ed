"""`make run`'s demo data: a first look at the dashboard shows the product."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import Browser

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _keys(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.GAIT = {**settings.GAIT, "KEYS_DIR": tmp_path / "keys"}
    monkeypatch.delenv(settings.GAIT["SIGNING_KEY_ENV"], raising=False)


def test_demo_seed_shows_every_status_the_services_reach_a_pending_approval_and_a_signed_pack(
    cast, demo_mode
):
    from approvals.models import ApprovalRequest
    from gaitweb.demo import ENGINE_JOBS, demo_seed
    from jobs.models import Job, JobTemplate
    from jobs.services import job_verify_chain
    from packs.models import Pack

    first = demo_seed()
    statuses = set(Job.objects.values_list("status", flat=True))
    # without a worker the engine's jobs stay queued; `make run` starts one next to the web
    assert statuses == {
        "queued", "running", "paused", "decision_needed", "blocked",
        "emergency_stopped", "cancelled", "completed",
    }  # fmt: skip
    assert Job.objects.filter(job_id__in=ENGINE_JOBS, status="queued").count() == len(ENGINE_JOBS)
    assert ApprovalRequest.objects.filter(status="pending").count() == 2
    pack = Pack.objects.get(job__job_id="demo-nightly-report")
    assert pack.key_id  # signed
    assert JobTemplate.objects.filter(template_id="demo-etl").exists()
    for job in Job.objects.all():
        assert job_verify_chain(job_id=job.job_id).ok, job.job_id

    again = demo_seed()
    assert first["created"] == again["total"] and again["created"] == 0

    # a reviewer (not the demo agent) can decide the demo approvals
    html = Browser(cast.reviewer).get("/approvals/").content.decode()
    assert html.count('value="approve"') == 2
