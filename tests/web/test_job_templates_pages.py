"""The job templates pages: the list, a template's page with its past runs, and Run now /
Enable / Disable as CSRF-protected POSTs that work without JavaScript (redirect) and with htmx
(fragment), refused inline with their reason code and enforced by the services for every role."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from approvals.policies import policy_save
from gaitweb.lib.actors import Actor
from jobs import services
from jobs.models import Job, JobStatus, JobTemplate, TemplateFire
from jobs.recurring import recurring_fire_due, template_create, template_run_now
from jobs.views_job_templates import cron_in_words
from tests.web.conftest import Browser

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("tester")
SPEC = {
    "steps": [
        {"name": "gather", "kind": "python", "with": {"function": "noop"}},
        {"name": "summarize", "kind": "python", "with": {"function": "noop"}},
    ]
}


def _template(template_id: str = "brief", **kw: Any) -> JobTemplate:
    fields: dict[str, Any] = {
        "name": "Daily brief",
        "template_id": template_id,
        "description": "Summarize yesterday's tickets",
        "spec": SPEC,
        "cron": "0 9 * * 1-5",
        "timezone_name": "Europe/Berlin",
        "labels": {"team": "support"},
        "identity": "agent.brief",
    }
    fields.update(kw)
    return template_create(actor=SYSTEM, **fields)


def _fresh(template_id: str) -> JobTemplate:
    return JobTemplate.objects.get(template_id=template_id)


def _fires(template_id: str) -> int:
    return TemplateFire.objects.filter(template__template_id=template_id).count()


def _finish(job_id: str) -> None:
    Job.objects.filter(job_id=job_id).update(status=JobStatus.COMPLETED)


# --- the list ----------------------------------------------------------------------------------


def test_the_list_shows_each_template_with_its_schedule_in_words_and_next_run(cast):
    t = _template()
    _template("adhoc", name="Ad hoc report", cron="", description="")
    html = Browser(cast.viewer).get("/templates/").content.decode()
    assert 'href="/templates/brief/"' in html and "Daily brief" in html
    assert "Summarize yesterday&#x27;s tickets" in html
    assert "At 09:00, Monday through Friday" in html and "(Europe/Berlin)" in html
    assert "0 9 * * 1-5" in html  # the expression itself next to the words
    local = t.next_fire_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert f"{local:%a %Y-%m-%d} 09:00:00 {local.tzname()}" in html
    assert 'class="badge st-ok">enabled</span>' in html
    assert "continuity <strong>fresh</strong>" in html
    assert "overlap <strong>skip</strong>" in html and "catch-up <strong>once</strong>" in html
    assert "on demand" in html and "never run" in html  # the template without a cron


def test_the_list_shows_the_last_run_with_its_status_and_links_to_the_job(cast):
    _template()
    fire = template_run_now(actor=SYSTEM, template_id="brief")
    services.job_pause(actor=SYSTEM, job_id=fire.job.job_id)
    html = Browser(cast.viewer).get("/templates/").content.decode()
    assert f'href="/jobs/{fire.job.job_id}/"' in html
    assert 'class="badge st-paused">paused</span>' in html and "1 run<" in html


def test_a_disabled_template_is_marked_in_words_and_has_no_next_run(cast):
    _template(enabled=False)
    html = Browser(cast.viewer).get("/templates/").content.decode()
    assert 'class="badge st-cancelled">disabled</span>' in html
    assert "— (disabled)" in html and "enabled</span>" not in html


def test_the_nav_links_to_the_templates_page_and_marks_it_current(cast):
    b = Browser(cast.viewer)
    assert '<a href="/templates/" >Templates</a>' in b.get("/jobs/").content.decode()
    html = b.get("/templates/").content.decode()
    assert '<a href="/templates/" aria-current="page">Templates</a>' in html


def test_the_list_polls_and_gets_204_until_a_template_changes(cast):
    _template()
    b = Browser(cast.viewer)
    page = b.get("/templates/").content.decode()
    fp = page.split("fragment=rows&amp;fp=")[1].split('"')[0]
    assert b.get("/templates/", htmx=True, fragment="rows", fp=fp).status_code == 204
    template_run_now(actor=SYSTEM, template_id="brief")
    changed = b.get("/templates/", htmx=True, fragment="rows", fp=fp)
    html = changed.content.decode()
    assert changed.status_code == 200 and html.lstrip().startswith('<div id="rows"')
    assert "st-queued" in html and "<html" not in html


# --- a template's page -------------------------------------------------------------------------


def test_the_template_page_shows_spec_labels_identity_policy_rules_and_next_run(cast):
    version = policy_save(actor=SYSTEM, name="briefs", source="default_verdict: allow\nrules: []\n")
    t = _template(policy="briefs", continuity="resume", overlap="queue", catch_up="skip")
    html = Browser(cast.viewer).get("/templates/brief/").content.decode()
    assert "<h1" in html and "Daily brief" in html and "Summarize yesterday" in html
    assert "1. gather" in html and "2. summarize" in html  # the spec's steps
    assert '<span class="tag">team=support</span>' in html
    assert "agent.brief" in html
    assert "briefs · current version 1" in html and version.digest in html
    assert (
        "<strong>resume</strong> — each run receives the previous run&#x27;s final outputs" in html
    )
    assert t.continuity_handle in html
    assert "<strong>queue</strong>" in html and "<strong>skip</strong> — slots missed" in html
    local = t.next_fire_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert f"{local:%a %Y-%m-%d} 09:00:00 {local.tzname()}" in html
    assert f"{t.next_fire_at:%Y-%m-%d %H:%M:%S} UTC" in html
    assert "No runs yet." in html


def test_past_runs_link_each_fire_to_its_job_with_lateness_and_reason_codes(cast):
    t = _template(cron="*/5 * * * *", timezone_name="UTC")
    first = t.next_fire_at
    recurring_fire_due(now=first + timedelta(milliseconds=300))
    job = Job.objects.get()
    recurring_fire_due(now=first + timedelta(minutes=5, seconds=2))  # still running: skipped
    html = Browser(cast.viewer).get("/templates/brief/").content.decode()
    assert f'<a class="mono" href="/jobs/{job.job_id}/">{job.job_id}</a>' in html
    assert "300 ms" in html and "2.0 s" in html
    assert html.count(f"{first:%Y-%m-%d %H:%M:%S} UTC") == 1  # a UTC template: not twice
    assert 'class="badge st-ok">fired</span>' in html
    assert 'class="badge st-cancelled">skipped</span>' in html and "overlap_skipped" in html
    # newest first: the skipped slot is listed before the one that ran
    assert html.index('data-fire-status="skipped"') < html.index('data-fire-status="fired"')


def test_a_catch_up_fire_says_how_many_missed_slots_it_covers(cast):
    t = _template(cron="*/5 * * * *", timezone_name="UTC")
    recurring_fire_due(now=t.next_fire_at + timedelta(minutes=57))
    html = Browser(cast.viewer).get("/templates/brief/").content.decode()
    assert "catch_up" in html and "covers 11 missed slots" in html


def test_an_unknown_or_impossible_template_id_is_404(cast):
    b = Browser(cast.viewer)
    assert b.get("/templates/nope/").status_code == 404
    assert b.get("/templates/-bad!/").status_code == 404


def test_the_template_page_polls_and_gets_204_until_a_fire_changes(cast):
    _template()
    b = Browser(cast.viewer)
    page = b.get("/templates/brief/").content.decode()
    fp = page.split("/templates/brief/?fp=")[1].split('"')[0]
    assert b.get("/templates/brief/", htmx=True, fp=fp).status_code == 204
    fire = template_run_now(actor=SYSTEM, template_id="brief")
    changed = b.get("/templates/brief/", htmx=True, fp=fp)
    html = changed.content.decode()
    assert changed.status_code == 200 and html.lstrip().startswith('<div id="live"')
    assert fire.job.job_id in html and 'id="nav-approvals-count" hx-swap-oob="true"' in html


def test_a_disabled_template_without_an_active_run_stops_polling(cast):
    _template(enabled=False)
    html = Browser(cast.viewer).get("/templates/brief/").content.decode()
    assert "hx-trigger" not in html.split('<div id="live"')[1].split(">")[0]


# --- actions -----------------------------------------------------------------------------------


def test_run_now_without_javascript_redirects_to_the_template_with_a_message(cast):
    _template()
    b = Browser(cast.admin)
    response = b.post("/templates/brief/run/")
    assert response.status_code == 302 and response["Location"] == "/templates/brief/"
    fire = TemplateFire.objects.get(template__template_id="brief")
    assert fire.trigger == "manual" and fire.actor == "ada_admin"
    page = b.get("/templates/brief/").content.decode()
    assert f"Job {fire.job.job_id} started from template Daily brief." in page


def test_run_now_with_htmx_swaps_the_live_fragment_and_links_the_new_job(cast):
    _template()
    response = Browser(cast.admin).post("/templates/brief/run/", htmx=True)
    html = response.content.decode()
    job = Job.objects.get()
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="live"') and "<html" not in html
    assert 'class="notice"' in html and f'<a href="/jobs/{job.job_id}/">Open the job' in html
    assert job.labels["gait.template"] == "brief" and job.labels["gait.trigger"] == "manual"


def test_run_now_while_a_run_is_active_is_refused_inline_and_writes_nothing(cast):
    _template()
    active = template_run_now(actor=SYSTEM, template_id="brief").job
    b = Browser(cast.admin)
    response = b.post("/templates/brief/run/")
    html = response.content.decode()
    assert response.status_code == 409
    assert "<code>template_run_active</code>" in html and "already has an active" in html
    assert f'href="/jobs/{active.job_id}/">{active.job_id}</a>' in html  # the run in the way
    htmx = b.post("/templates/brief/run/", htmx=True)
    assert htmx.status_code == 200 and "<code>template_run_active</code>" in htmx.content.decode()
    assert _fires("brief") == 1 and Job.objects.count() == 1


def test_run_now_after_the_active_run_finished_starts_the_next_one(cast):
    _template()
    first = template_run_now(actor=SYSTEM, template_id="brief").job
    _finish(first.job_id)
    assert Browser(cast.admin).post("/templates/brief/run/").status_code == 302
    assert Job.objects.count() == 2


def test_run_now_under_overlap_queue_holds_the_run_and_says_so(cast):
    _template(overlap="queue")
    template_run_now(actor=SYSTEM, template_id="brief")
    html = Browser(cast.admin).post("/templates/brief/run/", htmx=True).content.decode()
    assert "this run is queued behind it (overlap_queued)" in html
    assert 'data-fire-status="pending"' in html and "waiting for the active run" in html
    assert Job.objects.count() == 1 and _fires("brief") == 2


def test_run_now_while_jobs_are_switched_off_is_refused_with_jobs_disabled(cast, settings):
    _template()
    settings.GAIT = {**settings.GAIT, "JOBS_ENABLED": False}
    response = Browser(cast.admin).post("/templates/brief/run/")
    assert response.status_code == 503
    assert "<code>jobs_disabled</code>" in response.content.decode()
    assert _fires("brief") == 0 and not Job.objects.exists()


def test_disable_clears_the_next_run_and_enable_schedules_it_again(cast):
    _template()
    b = Browser(cast.admin)
    response = b.post("/templates/brief/disable/")
    assert response.status_code == 302 and response["Location"] == "/templates/brief/"
    t = _fresh("brief")
    assert not t.enabled and t.next_fire_at is None
    page = b.get("/templates/brief/").content.decode()
    assert "Template Daily brief disabled" in page
    assert 'action="/templates/brief/enable/"' in page
    assert 'action="/templates/brief/disable/"' not in page

    enabled = b.post("/templates/brief/enable/", htmx=True).content.decode()
    t = _fresh("brief")
    assert t.enabled and t.next_fire_at is not None
    assert "Template Daily brief enabled; next run" in enabled
    assert 'id="template-enabled">enabled</span>' in enabled
    assert 'action="/templates/brief/disable/"' in enabled


def test_list_row_action_with_htmx_returns_just_the_row(cast):
    _template()
    response = Browser(cast.admin).post("/templates/brief/disable/", {"from": "list"}, htmx=True)
    html = response.content.decode()
    assert html.lstrip().startswith("<tr") and 'data-enabled="false"' in html
    assert 'action="/templates/brief/enable/"' in html and 'class="notice"' in html
    assert not _fresh("brief").enabled


def test_a_refusal_from_a_list_row_is_shown_in_that_row(cast):
    _template()
    template_run_now(actor=SYSTEM, template_id="brief")
    html = (
        Browser(cast.admin)
        .post("/templates/brief/run/", {"from": "list"}, htmx=True)
        .content.decode()
    )
    assert html.lstrip().startswith("<tr") and "<code>template_run_active</code>" in html
    assert _fires("brief") == 1


def test_list_row_action_without_javascript_goes_back_to_the_list(cast):
    _template()
    b = Browser(cast.admin)
    response = b.post("/templates/brief/disable/", {"from": "list", "next": "/templates/"})
    assert response.status_code == 302 and response["Location"] == "/templates/"
    evil = b.post("/templates/brief/enable/", {"next": "https://evil.example/"})
    assert evil["Location"] == "/templates/brief/"


def test_posting_without_a_csrf_token_is_refused(cast):
    _template()
    b = Browser(cast.admin)
    for action in ("run", "disable"):
        assert b.post(f"/templates/brief/{action}/", csrf=False).status_code == 403
    t = _fresh("brief")
    assert t.enabled and _fires("brief") == 0


def test_actions_only_accept_post_and_unknown_actions_are_404(cast):
    _template()
    b = Browser(cast.admin)
    assert b.get("/templates/brief/run/").status_code == 405
    assert b.post("/templates/brief/delete/").status_code == 404
    assert b.post("/templates/nope/run/").status_code == 404
    assert _fires("brief") == 0 and _fresh("brief").enabled


# --- who may do what ---------------------------------------------------------------------------

# run now needs the submit scope, enable/disable the control scope, and both need the template
# to be the user's own identity's or the user to be an admin (jobs.recurring.template_may_change):
# "ok", "not_owner" (403 template_not_owner), "no_scope" (403 permission_denied) or "hidden" (an
# integrator sees only its own identity's templates: 404)
MAY_ACT = {
    "admin": "ok",
    "operator": "not_owner",
    "integrator": "hidden",
    "reviewer": "no_scope",
    "viewer": "no_scope",
}
REFUSAL = {"not_owner": "template_not_owner", "no_scope": "permission_denied"}


@pytest.mark.parametrize("role", sorted(MAY_ACT))
def test_every_role_sees_the_pages_but_only_the_owner_and_admins_get_the_buttons(cast, role):
    _template()
    b = Browser(getattr(cast, role))
    listing, detail = b.get("/templates/"), b.get("/templates/brief/")
    if MAY_ACT[role] == "hidden":
        assert listing.status_code == 200 and detail.status_code == 404
        assert "/templates/brief/" not in listing.content.decode()
        return
    assert listing.status_code == 200 and detail.status_code == 200
    for html in (listing.content.decode(), detail.content.decode()):
        assert ('action="/templates/brief/run/"' in html) is (MAY_ACT[role] == "ok")
        assert ('action="/templates/brief/disable/"' in html) is (MAY_ACT[role] == "ok")


@pytest.mark.parametrize("role", sorted(MAY_ACT))
def test_permission_matrix_for_run_now(cast, role):
    _template()
    response = Browser(getattr(cast, role)).post("/templates/brief/run/")
    if MAY_ACT[role] == "ok":
        assert response.status_code == 302 and _fires("brief") == 1
        return
    if MAY_ACT[role] == "hidden":
        assert response.status_code == 404
    else:
        assert response.status_code == 403
        assert f"<code>{REFUSAL[MAY_ACT[role]]}</code>" in response.content.decode()
    assert _fires("brief") == 0 and not Job.objects.exists()


@pytest.mark.parametrize("role", sorted(MAY_ACT))
def test_permission_matrix_for_disable_and_enable(cast, role):
    _template()
    b = Browser(getattr(cast, role))
    disabled = b.post("/templates/brief/disable/", htmx=True)
    if MAY_ACT[role] == "ok":
        assert disabled.status_code == 200 and not _fresh("brief").enabled
        assert b.post("/templates/brief/enable/").status_code == 302
        assert _fresh("brief").enabled
    elif MAY_ACT[role] == "hidden":
        assert disabled.status_code == 404 and _fresh("brief").enabled
    else:
        # with htmx the refusal is a fragment (200) so that htmx swaps it in
        assert f"<code>{REFUSAL[MAY_ACT[role]]}</code>" in disabled.content.decode()
        assert _fresh("brief").enabled
        JobTemplate.objects.filter(template_id="brief").update(enabled=False)
        refused = b.post("/templates/brief/enable/")
        assert refused.status_code == 403 and not _fresh("brief").enabled


def test_an_integrator_runs_and_disables_its_own_identitys_template(cast):
    _template(identity=cast.integrator.username)
    b = Browser(cast.integrator)
    assert 'action="/templates/brief/run/"' in b.get("/templates/brief/").content.decode()
    assert b.post("/templates/brief/run/").status_code == 302
    assert Job.objects.get().identity == cast.integrator.username
    assert b.post("/templates/brief/disable/").status_code == 302
    assert not _fresh("brief").enabled


def test_a_user_without_a_role_gets_403_on_every_template_page_and_action(cast):
    _template()
    b = Browser(cast.outsider)
    assert b.get("/templates/").status_code == 403
    assert b.get("/templates/brief/").status_code == 403
    for action in ("run", "disable"):
        assert b.post(f"/templates/brief/{action}/").status_code == 403
    assert _fires("brief") == 0 and _fresh("brief").enabled


def test_anonymous_visitors_are_sent_to_the_login_page(cast):
    _template()
    for url in ["/templates/", "/templates/brief/"]:
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


# --- the schedule in words ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("@daily", "At 00:00"),
        ("@hourly", "Every hour"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("0 9 * * 1-5", "At 09:00, Monday through Friday"),
        ("0 2 1 * *", "At 02:00, on day 1 of the month"),
        ("* * * * * *", "Every second"),
        ("* * * * * */10", "Every 10 seconds"),
        ("not a cron", ""),
    ],
)
def test_common_cron_shapes_read_as_words(cron, words):
    assert cron_in_words(cron) == words
