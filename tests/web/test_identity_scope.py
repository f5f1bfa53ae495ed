"""The dashboard by role and identity (docs/dashboard.md, docs/security.md): the staff roles see
every identity's work; an integrator (an agent's account) sees its own identity's only, and
another identity's job, template, approval or pack is a 404 page, as if it did not exist."""

from __future__ import annotations

from typing import Any

import pytest

from gaitweb.lib.actors import Actor
from jobs.models import Job
from jobs.services import job_submit
from tests.identity_world import A, B, World, world_build, world_fingerprint
from tests.web.conftest import Browser

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db: None, settings: Any, tmp_path: Any) -> World:
    settings.GAIT = {**settings.GAIT, "KEYS_DIR": tmp_path / "keys"}
    return world_build()


def _own_job(cast: Any) -> None:
    me = cast.integrator.username
    job_submit(actor=Actor.system(me, identity=me), job_id="mine", identity=me)


def test_an_integrator_lists_and_counts_only_its_own_identitys_jobs(
    cast: Any, world: World
) -> None:
    _own_job(cast)
    b = Browser(cast.integrator)
    html = b.get("/jobs/").content.decode()
    assert "/jobs/mine/" in html
    for job_id in (World.run, World.queued, World.b_job):
        assert f"/jobs/{job_id}/" not in html
    # the header's counts are the integrator's jobs: one running job, nothing else
    counts = b.get("/jobs/", htmx=True, fragment="counts", fp="x").content.decode()
    assert '<span class="n">1</span><span class="badge st-running">' in counts
    assert '<span class="n">0</span><span class="badge st-decision_needed">' in counts
    # a filter on another identity finds nothing, rather than A's jobs
    assert f"/jobs/{World.run}/" not in b.get("/jobs/", identity=A).content.decode()


@pytest.mark.parametrize(
    "url",
    [
        f"/jobs/{World.run}/",
        f"/jobs/{World.run}/chain/",
        f"/templates/{World.template}/",
    ],
)
def test_an_integrator_gets_404_for_another_identitys_pages(
    cast: Any, world: World, url: str
) -> None:
    assert Browser(cast.integrator).get(url).status_code == 404
    assert Browser(cast.viewer).get(url).status_code == 200


def test_an_integrator_cannot_act_on_or_download_another_identitys_objects(
    cast: Any, world: World
) -> None:
    b = Browser(cast.integrator)
    before = world_fingerprint()
    for action in ("pause", "stop", "cancel"):
        data = {"confirm": "emergency-stop"} if action == "stop" else {}
        assert b.post(f"/jobs/{World.run}/{action}/", data).status_code == 404
    assert b.post(f"/jobs/{World.run}/pack/").status_code == 404
    assert b.post(f"/templates/{World.template}/run/").status_code == 404
    assert b.get(f"/packs/{world.pack_id}/download").status_code == 404
    assert world_fingerprint() == before


def test_an_integrator_sees_no_other_identitys_approvals(cast: Any, world: World) -> None:
    b = Browser(cast.integrator)
    html = b.get("/approvals/").content.decode()
    assert world.request_id not in html and "Nothing is waiting for approval." in html
    assert 'aria-label="0 pending"' in html
    reviewer = Browser(cast.reviewer).get("/approvals/").content.decode()
    assert world.request_id in reviewer and 'aria-label="1 pending"' in reviewer


def test_an_integrator_submits_only_as_its_own_identity(cast: Any, world: World) -> None:
    b = Browser(cast.integrator)
    spec = '{"steps": [{"name": "a", "kind": "python", "with": {"function": "noop"}}]}'
    refused = b.post("/jobs/new/", {"spec": spec, "identity": B, "job_id": "as-b"})
    assert refused.status_code == 422 and "identity_binding_mismatch" in refused.content.decode()
    assert not Job.objects.filter(job_id="as-b").exists()
    ok = b.post("/jobs/new/", {"spec": spec, "job_id": "as-me"})
    assert ok.status_code == 302
    assert Job.objects.get(job_id="as-me").identity == cast.integrator.username


def test_the_staff_roles_see_every_identitys_jobs(cast: Any, world: World) -> None:
    for role in ("viewer", "reviewer", "operator", "admin"):
        html = Browser(getattr(cast, role)).get("/jobs/").content.decode()
        assert f"/jobs/{World.run}/" in html and f"/jobs/{World.b_job}/" in html, role
