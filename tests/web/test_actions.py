"""Lifecycle actions from the dashboard: every one a CSRF-protected POST that works without
JavaScript (redirect) and with htmx (fragment), refused inline with its reason code, enforced on
the server for every role."""

from __future__ import annotations

import pytest

from jobs.models import Job, JobEvent
from packs.models import Pack
from tests.web.conftest import Browser, agent_job

pytestmark = pytest.mark.django_db


def _status(job_id: str) -> str:
    return Job.objects.get(job_id=job_id).status


def _events(job_id: str) -> int:
    return JobEvent.objects.filter(job__job_id=job_id).count()


# (action, starting status, extra form data, status after)
TRANSITIONS = [
    ("pause", "running", {}, "paused"),
    ("stop", "running", {"confirm": "emergency-stop", "reason": "runaway"}, "emergency_stopped"),
    ("resume", "paused", {}, "running"),
    ("cancel", "running", {}, "cancelled"),
]


@pytest.mark.parametrize(("action", "start", "data", "after"), TRANSITIONS)
def test_operator_action_without_javascript_redirects_to_the_job_with_a_message(
    cast, action, start, data, after
):
    agent_job("act-1", start)
    b = Browser(cast.operator)
    response = b.post(f"/jobs/act-1/{action}/", data)
    assert response.status_code == 302 and response["Location"] == "/jobs/act-1/"
    assert _status("act-1") == after
    page = b.get("/jobs/act-1/").content.decode()
    assert "Job act-1" in page  # the flash message after the round trip


@pytest.mark.parametrize(("action", "start", "data", "after"), TRANSITIONS)
def test_operator_action_with_htmx_swaps_the_live_fragment(cast, action, start, data, after):
    agent_job("act-2", start)
    response = Browser(cast.operator).post(f"/jobs/act-2/{action}/", data, htmx=True)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="live"') and "<html" not in html
    assert f'id="job-status">{after}<' in html and 'class="notice"' in html
    assert _status("act-2") == after


def test_operator_retries_a_job_cancelled_before_its_steps_finished(cast):
    agent_job("retry-1", "cancelled", steps=True)
    b = Browser(cast.operator)
    assert "/jobs/retry-1/retry/" in b.get("/jobs/retry-1/").content.decode()
    response = b.post("/jobs/retry-1/retry/")
    assert response.status_code == 302
    assert _status("retry-1") == "queued"
    assert JobEvent.objects.filter(job__job_id="retry-1", type="retried").exists()


def test_list_row_action_with_htmx_returns_just_the_row(cast):
    agent_job("row-1")
    response = Browser(cast.operator).post("/jobs/row-1/pause/", {"from": "list"}, htmx=True)
    html = response.content.decode()
    assert html.lstrip().startswith("<tr") and 'data-status="paused"' in html
    assert 'action="/jobs/row-1/resume/"' in html  # the row now offers what a paused job allows


def test_a_refused_list_row_action_keeps_the_rows_current_step(cast):
    agent_job("row-3", "paused", steps=True)
    response = Browser(cast.operator).post("/jobs/row-3/pause/", {"from": "list"}, htmx=True)
    html = response.content.decode()
    assert html.lstrip().startswith("<tr") and "<code>invalid_transition</code>" in html
    # the swapped row reads the step name like the list does, not "all steps done"
    assert '<div class="small muted">one</div>' in html and "all steps done" not in html


def test_list_row_action_without_javascript_goes_back_to_the_list(cast):
    agent_job("row-2")
    response = Browser(cast.operator).post(
        "/jobs/row-2/pause/", {"from": "list", "next": "/jobs/?status=running"}
    )
    assert response.status_code == 302 and response["Location"] == "/jobs/?status=running"
    evil = Browser(cast.operator).post("/jobs/row-2/resume/", {"next": "https://evil.example/"})
    assert evil["Location"] == "/jobs/row-2/"


def test_emergency_stop_must_be_confirmed(cast):
    agent_job("stop-1")
    b = Browser(cast.operator)
    page = b.get("/jobs/stop-1/").content.decode()
    assert (
        "This is an emergency stop" in page
        and 'name="confirm" value="emergency-stop" required' in page
    )
    before = _events("stop-1")
    response = b.post("/jobs/stop-1/stop/", {"reason": "oops"})
    assert response.status_code == 400
    assert "confirmation_required" in response.content.decode()
    assert _status("stop-1") == "running" and _events("stop-1") == before


def test_a_refused_transition_shows_the_reason_code_inline_and_writes_nothing(cast):
    agent_job("refuse-1", "paused")
    b = Browser(cast.operator)
    before = _events("refuse-1")
    response = b.post("/jobs/refuse-1/pause/")  # already paused
    assert response.status_code == 409
    html = response.content.decode()
    assert "<code>invalid_transition</code>" in html and "cannot pause a job that is paused" in html
    htmx = b.post("/jobs/refuse-1/pause/", htmx=True)
    assert htmx.status_code == 200 and "<code>invalid_transition</code>" in htmx.content.decode()
    assert _events("refuse-1") == before


def test_resume_after_an_emergency_stop_is_refused_until_someone_approves(cast):
    agent_job("estop-1", "emergency_stopped")
    op = Browser(cast.operator)
    refused = op.post("/jobs/estop-1/resume/", htmx=True).content.decode()
    assert "<code>approval_required</code>" in refused
    assert _status("estop-1") == "emergency_stopped"

    reviewer = Browser(cast.reviewer)
    page = reviewer.get("/jobs/estop-1/").content.decode()
    assert 'action="/jobs/estop-1/approve/"' in page
    assert (
        reviewer.post("/jobs/estop-1/approve/", {"reason": "checked the segment"}).status_code
        == 302
    )
    assert op.post("/jobs/estop-1/resume/").status_code == 302
    assert _status("estop-1") == "running"


def test_posting_without_a_csrf_token_is_refused(cast):
    agent_job("csrf-1")
    response = Browser(cast.operator).post("/jobs/csrf-1/pause/", csrf=False)
    assert response.status_code == 403
    assert _status("csrf-1") == "running"


def test_actions_only_accept_post(cast):
    agent_job("get-1")
    assert Browser(cast.operator).get("/jobs/get-1/pause/").status_code == 405
    assert _status("get-1") == "running"


# The permission matrix: who may do what, enforced by the server whatever the page showed.
# None: the job is another identity's, which an integrator does not see (404, docs/security.md)
ROLES_CONTROL = {
    "operator": True,
    "admin": True,
    "reviewer": False,
    "viewer": False,
    "integrator": None,
}


@pytest.mark.parametrize("role", sorted(ROLES_CONTROL))
@pytest.mark.parametrize(("action", "start", "data", "after"), TRANSITIONS)
def test_permission_matrix_for_lifecycle_actions(cast, role, action, start, data, after):
    agent_job("perm-1", start)
    response = Browser(getattr(cast, role)).post(f"/jobs/perm-1/{action}/", data)
    if ROLES_CONTROL[role]:
        assert response.status_code == 302
        assert _status("perm-1") == after
    elif ROLES_CONTROL[role] is None:
        assert response.status_code == 404
        assert _status("perm-1") == start
    else:
        assert response.status_code == 403
        assert "<code>permission_denied</code>" in response.content.decode()
        assert _status("perm-1") == start


def test_outsider_cannot_act_on_a_job(cast):
    agent_job("perm-2")
    response = Browser(cast.outsider).post("/jobs/perm-2/pause/")
    assert response.status_code == 403 and _status("perm-2") == "running"


def test_a_viewer_cannot_build_a_pack_building_journals_an_event(cast):
    agent_job("pack-0", "completed")
    viewer = Browser(cast.viewer)
    assert "Build pack" not in viewer.get("/jobs/pack-0/").content.decode()
    refused = viewer.post("/jobs/pack-0/pack/")
    fragment = viewer.post("/jobs/pack-0/pack/", htmx=True).content.decode()
    assert refused.status_code == 403
    assert "<code>permission_denied</code>" in fragment
    assert not Pack.objects.filter(job__job_id="pack-0").exists()
    assert not JobEvent.objects.filter(job__job_id="pack-0", type="pack_built").exists()


def test_an_operator_builds_a_pack_and_a_viewer_downloads_it(cast):
    agent_job("pack-1", "completed")
    b = Browser(cast.operator)
    response = b.post("/jobs/pack-1/pack/", htmx=True)
    html = response.content.decode()
    assert "built" in html

    pack = Pack.objects.get(job__job_id="pack-1")
    assert f'href="/packs/{pack.pack_id}/download"' in html
    download = Browser(cast.viewer).get(f"/packs/{pack.pack_id}/download")
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    assert download.content == bytes(pack.data)
    assert Browser(cast.outsider).get(f"/packs/{pack.pack_id}/download").status_code == 403


def test_rebuilding_an_unchanged_job_returns_the_same_pack(cast):
    agent_job("pack-3", "completed")
    b = Browser(cast.operator)
    assert b.post("/jobs/pack-3/pack/").status_code == 302
    again = b.post("/jobs/pack-3/pack/", htmx=True).content.decode()
    assert "unchanged" in again

    assert Pack.objects.filter(job__job_id="pack-3").count() == 1


def test_job_level_reject_needs_a_reason(cast):
    agent_job("rej-1", "decision_needed")
    b = Browser(cast.reviewer)
    refused = b.post("/jobs/rej-1/reject/", {"reason": ""}, htmx=True).content.decode()
    assert "<code>missing_reason</code>" in refused and _status("rej-1") == "decision_needed"
    b.post("/jobs/rej-1/reject/", {"reason": "not this month"})
    assert _status("rej-1") == "blocked"
