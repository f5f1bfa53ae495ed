"""The read side of the dashboard: login, the jobs list, the job detail page, live polling."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from approvals.policies import PolicyBinding, policy_save
from gaitweb.lib.actors import Actor
from jobs import services
from jobs.engine.runner import advance
from jobs.models import Job, JobEvent, StepRun
from tests.conftest import PASSWORD
from tests.web.conftest import AGENT, Browser, agent_job, pending_request

pytestmark = pytest.mark.django_db


def test_anonymous_visitors_are_sent_to_the_login_page(cast):
    for url in ["/", "/jobs/", "/approvals/", "/jobs/new/", "/packs/verify/"]:
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")


def test_login_form_needs_csrf_and_shows_the_role_in_the_header(cast):
    client = Client(enforce_csrf_checks=True)
    refused = client.post("/login/", {"username": "rita_reviewer", "password": PASSWORD})
    assert refused.status_code == 403  # no CSRF token: refused before authentication

    page = client.get("/login/")
    token = client.cookies["csrftoken"].value
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()
    wrong = client.post(
        "/login/", {"username": "rita_reviewer", "password": "nope", "csrfmiddlewaretoken": token}
    )
    assert wrong.status_code == 200 and "correct username and password" in wrong.content.decode()

    ok = client.post(
        "/login/", {"username": "rita_reviewer", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert ok.status_code == 302
    home = client.get("/jobs/")
    html = home.content.decode()
    assert 'class="role role-reviewer"' in html and ">reviewer</span>" in html
    assert "hx-headers" in html and "X-CSRFToken" in html


def test_logout_is_a_post_form_and_ends_the_session(cast):
    b = Browser(cast.viewer)
    html = b.get("/jobs/").content.decode()
    assert re.search(r'<form method="post" action="/logout/">', html)
    assert b.post("/logout/").status_code == 302
    assert b.get("/jobs/").status_code == 302


def test_a_user_without_a_role_is_refused_every_page(cast):
    agent_job("j-outsider")
    b = Browser(cast.outsider)
    for url in [
        "/jobs/",
        "/jobs/j-outsider/",
        "/approvals/",
        "/jobs/j-outsider/chain/",
        "/packs/verify/",
    ]:
        response = b.get(url)
        assert response.status_code == 403, url
        assert "permission_denied" in response.content.decode()


def test_jobs_list_shows_counts_status_progress_identity_and_newest_first(cast):
    agent_job("j-old", "paused")
    agent_job("j-steps", "queued", steps=True)
    agent_job("j-new", "running")
    html = Browser(cast.viewer).get("/jobs/").content.decode()
    assert html.index("j-new") < html.index("j-steps") < html.index("j-old")
    # counts from the stats service, with the status in words next to the colour
    assert re.search(r'<span class="n">1</span><span class="badge st-paused">paused</span>', html)
    assert re.search(r'<span class="n">1</span><span class="badge st-running">running</span>', html)
    assert re.search(r'<span class="n">0</span><span class="badge st-failed">failed</span>', html)
    # the job with steps shows its progress and current step
    assert 'aria-valuemax="2" aria-valuenow="0"' in html and "0/2" in html and ">one<" in html
    assert "agent.smith" in html


def test_jobs_list_filters_by_status_identity_label_and_job_id_text(cast):
    agent_job("refund-1", "paused")
    agent_job("refund-2", "running", submitter=Actor.system("other", identity="agent.other"))
    agent_job("export-3", "running")
    b = Browser(cast.viewer)

    def shown(**params):
        html = b.get("/jobs/", **params).content.decode()
        return sorted(set(re.findall(r'data-job="([^"]+)"', html)))

    assert shown(status="paused") == ["refund-1"]
    assert shown(identity="agent.other") == ["refund-2"]
    assert shown(q="refund") == ["refund-1", "refund-2"]
    assert shown(label="team=qa") == ["export-3", "refund-1", "refund-2"]
    assert shown(label="team=nope") == []
    assert shown(status="running", q="refund") == ["refund-2"]
    assert "unknown status" in b.get("/jobs/", status="exploded").content.decode()


def test_jobs_list_pages_with_a_keyset_cursor_without_counting_rows(cast, monkeypatch):
    import jobs.views

    monkeypatch.setattr(jobs.views, "PAGE_SIZE", 2)
    for i in range(5):
        agent_job(f"page-{i}")
    b = Browser(cast.viewer)
    seen = []
    url, params = "/jobs/", {}
    while True:
        html = b.get(url, **params).content.decode()
        seen += re.findall(r'data-job="([^"]+)"', html)
        older = re.search(r'<a href="\?([^"]*after=[^"]+)">Older', html)
        if not older:
            break
        params = dict(p.split("=", 1) for p in older.group(1).replace("&amp;", "&").split("&"))
    assert seen == [f"page-{i}" for i in reversed(range(5))]


def test_jobs_list_poll_answers_204_until_a_visible_row_changes(cast):
    agent_job("poll-1")
    b = Browser(cast.viewer)
    fragment = b.get("/jobs/", htmx=True, fragment="rows", fp="nothing-yet")
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert html.lstrip().startswith('<div id="rows"') and "<html" not in html
    fp = re.search(r"fp=([0-9a-f]+)", html).group(1)
    assert b.get("/jobs/", htmx=True, fragment="rows", fp=fp).status_code == 204

    services.job_pause(actor=AGENT.__class__.system("ops"), job_id="poll-1")
    changed = b.get("/jobs/", htmx=True, fragment="rows", fp=fp)
    assert changed.status_code == 200 and "st-paused" in changed.content.decode()
    assert '<a href="/jobs/poll-1/">poll-1</a>' in changed.content.decode()  # rows still link


def test_job_detail_shows_policy_digest_timeline_hashes_and_loads_the_chain_badge(cast):
    version = policy_save(
        actor=Actor.system("admin"), name="billing", source="default_verdict: allow\nrules: []\n"
    )
    services.job_submit(
        actor=AGENT,
        job_id="detail-1",
        identity="agent.smith",
        policy=PolicyBinding.of(version),
    )
    services.job_checkpoint_add(
        actor=AGENT, job_id="detail-1", type="plan", summary="Plan the refund"
    )
    services.job_stop(actor=Actor.system("ops"), job_id="detail-1", reason="runaway agent")
    b = Browser(cast.viewer)
    html = b.get("/jobs/detail-1/").content.decode()
    assert "policy:billing" in html and version.digest in html
    assert "runaway agent" in html  # stop reason
    for ev in JobEvent.objects.filter(job__job_id="detail-1"):
        assert ev.hash in html
    # newest first: the stop comes before the plan checkpoint, which comes before the submit
    assert (
        html.index("emergency_stop_acknowledged")
        < html.index("Plan the refund")
        < html.index(">submitted<")
    )
    assert 'hx-get="/jobs/detail-1/chain/"' in html
    badge = b.get("/jobs/detail-1/chain/", htmx=True).content.decode()
    assert "chain verified · 3 events" in badge


def test_chain_badge_reports_a_tampered_journal(cast):
    agent_job("tamper-1", "paused")
    JobEvent.objects.filter(job__job_id="tamper-1", revision=1).update(payload={"forged": True})
    badge = Browser(cast.viewer).get("/jobs/tamper-1/chain/", htmx=True).content.decode()
    assert "chain broken at #1" in badge


def test_job_detail_poll_is_204_when_unchanged_and_stops_once_terminal(cast):
    agent_job("live-1")
    b = Browser(cast.viewer)
    html = b.get("/jobs/live-1/", htmx=True, fp="x").content.decode()
    assert html.lstrip().startswith('<div id="live"') and 'hx-trigger="every 2s' in html
    fp = re.search(r'hx-get="/jobs/live-1/\?fp=([0-9a-f]+)', html).group(1)
    assert b.get("/jobs/live-1/", htmx=True, fp=fp).status_code == 204
    services.job_checkpoint_add(actor=AGENT, job_id="live-1", type="completed", summary="all done")
    done = b.get("/jobs/live-1/", htmx=True, fp=fp)
    assert done.status_code == 200
    assert "hx-trigger" not in done.content.decode().split('id="chain"')[0]  # no more polling


def test_action_buttons_follow_the_role_and_the_status(cast):
    agent_job("btn-running")
    agent_job("btn-paused", "paused")
    viewer = Browser(cast.viewer).get("/jobs/btn-running/").content.decode()
    assert "/jobs/btn-running/pause/" not in viewer and "Emergency stop" not in viewer

    op = Browser(cast.operator)
    running = op.get("/jobs/btn-running/").content.decode()
    assert "/jobs/btn-running/pause/" in running and "Emergency stop" in running
    assert "/jobs/btn-running/resume/" not in running and "/jobs/btn-running/retry/" not in running
    paused = op.get("/jobs/btn-paused/").content.decode()
    assert "/jobs/btn-paused/resume/" in paused and "/jobs/btn-paused/pause/" not in paused
    # and in the list rows
    rows = op.get("/jobs/").content.decode()
    assert (
        'action="/jobs/btn-running/pause/"' in rows and 'action="/jobs/btn-paused/resume/"' in rows
    )


def test_unknown_job_is_404(cast):
    assert Browser(cast.viewer).get("/jobs/no-such-job/").status_code == 404


def test_pending_approval_on_the_job_page_shows_what_is_asked(cast):
    pending_request("ask-1")
    html = Browser(cast.reviewer).get("/jobs/ask-1/").content.decode()
    assert "May ask-1 refund 420 EUR?" in html and "invoices.refund" in html
    assert "account:acct-42" in html and "approval_required_for_refund" in html
    assert "0 of 1 approval" in html and "data-expires=" in html


def test_without_javascript_the_chain_badge_is_a_link_to_a_full_page(cast):
    agent_job("nojs-1", "paused")
    b = Browser(cast.viewer)
    assert 'href="/jobs/nojs-1/chain/"' in b.get("/jobs/nojs-1/").content.decode()
    page = b.get("/jobs/nojs-1/chain/").content.decode()
    assert "<html" in page and "chain verified · 2 events" in page


def test_the_timeline_pages_through_a_long_journal_newest_first(cast, monkeypatch):
    import jobs.views

    monkeypatch.setattr(jobs.views, "TIMELINE_SIZE", 3)
    agent_job("long-1")
    for i in range(4):
        services.job_checkpoint_add(
            actor=AGENT, job_id="long-1", type="progress", summary=f"step {i} done"
        )
    b = Browser(cast.viewer)
    first = b.get("/jobs/long-1/").content.decode()
    assert [s for s in ("step 3 done", "step 2 done", "step 1 done") if s in first] == [
        "step 3 done",
        "step 2 done",
        "step 1 done",
    ]
    assert "step 0 done" not in first
    older = re.search(r'href="\?before=(\d+)">Older events', first).group(1)
    second = b.get("/jobs/long-1/", before=older).content.decode()
    assert "step 0 done" in second and ">submitted<" in second and "step 3 done" not in second


def test_chain_badge_checks_new_events_and_catches_a_forged_one(cast):
    agent_job("grow-1")
    b = Browser(cast.viewer)
    assert "chain verified · 1 event" in b.get("/jobs/grow-1/chain/", htmx=True).content.decode()
    services.job_checkpoint_add(actor=AGENT, job_id="grow-1", type="progress", summary="half way")
    assert "chain verified · 2 events" in b.get("/jobs/grow-1/chain/", htmx=True).content.decode()
    services.job_checkpoint_add(actor=AGENT, job_id="grow-1", type="progress", summary="almost")
    JobEvent.objects.filter(job__job_id="grow-1", revision=3).update(payload={"summary": "forged"})
    assert "chain broken at #3" in b.get("/jobs/grow-1/chain/", htmx=True).content.decode()


def test_a_poll_after_the_session_ended_sends_the_browser_to_the_login_page(cast):
    response = Client().get(
        "/jobs/",
        {"fragment": "rows", "fp": "x"},
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/jobs/?status=paused"},
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login/?next=/jobs/%3Fstatus%3Dpaused"


def test_a_failed_attempt_waiting_for_its_retry_shows_retry_due_not_next(cast):
    """A flaky step failed once; its retry is an hour away. The job page says so."""

    services.job_submit(
        actor=AGENT,
        job_id="web-retry",
        spec={
            "steps": [
                {
                    "name": "flaky",
                    "kind": "python",
                    "with": {"function": "fail_n_times", "args": {"n": 1}},
                    "retry": {"max_attempts": 3, "initial_interval": "1h", "max_interval": "2h"},
                }
            ]
        },
    )
    assert advance("web-retry") == "retry_scheduled"
    job = Job.objects.get(job_id="web-retry")
    assert job.status == "waiting" and job.wake_at is not None
    html = Browser(cast.viewer).get("/jobs/web-retry/").content.decode()
    assert 'data-step-status="flaky">retry due<' in html
    assert "attempt 2" in html and "previous: attempt 1 failed" in html
    assert job.wake_at.strftime("%H:%M:%S") in html


def test_a_paused_job_whose_step_is_still_running_says_the_step_is_finishing(cast):
    """Pause lands while a worker runs a command: the status is paused, the step still runs."""
    import uuid

    from django.utils import timezone

    services.job_submit(
        actor=AGENT,
        job_id="web-finishing",
        spec={
            "steps": [
                {
                    "name": "long",
                    "kind": "python",
                    "with": {"function": "add", "args": {"a": 1, "b": 1}},
                }
            ]
        },
    )
    # what a worker's claim leaves: the lease, and the command's started record
    job = Job.objects.get(job_id="web-finishing")
    Job.objects.filter(pk=job.pk).update(status="running", lease_token=uuid.uuid4())
    StepRun.objects.create(
        job=job, step_index=0, step_name="long", attempt=1, status="started",
        started_at=timezone.now(), stdout="halfway\n",
    )  # fmt: skip
    services.job_pause(actor=AGENT, job_id="web-finishing")
    html = Browser(cast.viewer).get("/jobs/web-finishing/").content.decode()
    assert ">paused<" in html and "the running step is still finishing" in html
    assert 'data-step-status="long">running<' in html and "halfway" in html
