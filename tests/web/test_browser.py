"""A few real-browser checks: Playwright driving Debian's Chromium against a live server.

They cover what the view tests cannot: htmx swapping fragments in place (no reload), polling,
downloads. Screenshots of the main pages land in GAIT_DATA_DIR/screenshots as test artifacts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from approvals.queue import checkpoint_dom_id
from gaitweb.lib.actors import Actor
from jobs import services
from jobs.engine.runner import advance
from jobs.models import Job
from jobs.services import job_submit
from packs.keys import key_init
from tests.conftest import PASSWORD
from tests.web.conftest import agent_job, pending_request

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"  # .ci/run sets it
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # between browser steps are ordinary blocking calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def shots() -> Callable[[Any, str], None]:
    folder = Path(settings.DATA_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> None:
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    return take


@pytest.fixture
def login(chromium: Any, live_server: Any, cast: Any) -> Iterator[Callable[..., Any]]:
    contexts = []

    def as_user(role: str, *, width: int = 1280, height: int = 800) -> Any:
        context = chromium.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(live_server.url + "/login/")
        page.fill("#id_username", getattr(cast, role).username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/jobs/")
        return page

    yield as_user
    for context in contexts:
        context.close()


def _mark(page: Any) -> None:
    """Set a flag that a full page load would wipe out."""
    page.evaluate("window.__noReload = true")


def _not_reloaded(page: Any) -> bool:
    return page.evaluate("window.__noReload === true")


def test_reviewer_approves_a_pending_job_and_sees_it_move_on_without_reloading(
    login, live_server, shots
):
    from playwright.sync_api import expect

    req = pending_request("web-approve")
    page = login("reviewer")
    page.goto(live_server.url + "/approvals/")
    expect(page.locator("#nav-approvals-count")).to_have_text("1")
    shots(page, "approvals-queue")
    page.goto(live_server.url + "/jobs/web-approve/")
    expect(page.locator("#chain")).to_contain_text("chain verified")
    _mark(page)
    card = page.locator(f"#req-{req.request_id}")
    card.get_by_role("button", name="Approve").click()
    expect(page.locator("#job-status")).to_have_text("running")
    expect(page.locator(".notice")).to_contain_text("now running")
    expect(page.locator("#nav-approvals-count")).to_have_text("0")  # swapped out of band
    assert _not_reloaded(page)
    assert Job.objects.get(job_id="web-approve").status == "running"
    shots(page, "job-detail-approved")


def test_operator_emergency_stops_a_running_job(login, live_server, shots):
    from playwright.sync_api import expect

    agent_job("web-stop")
    page = login("operator")
    page.goto(live_server.url + "/jobs/web-stop/")
    _mark(page)
    page.get_by_text("Emergency stop…").click()
    expect(page.locator("#stop")).to_contain_text("This is an emergency stop")
    page.get_by_label("Yes, emergency-stop web-stop now").check()
    page.fill("#stop-reason", "agent is looping")
    shots(page, "job-detail-stop-confirm")
    page.get_by_role("button", name="Confirm emergency stop").click()
    expect(page.locator("#job-status")).to_have_text("emergency_stopped")
    expect(page.locator("#live")).to_contain_text("agent is looping")
    assert _not_reloaded(page)
    job = Job.objects.get(job_id="web-stop")
    assert job.status == "emergency_stopped" and job.stopped_by == "otto_operator"


def test_a_downloaded_pack_verifies_on_the_upload_page(
    login, live_server, shots, settings, tmp_path, monkeypatch
):
    from playwright.sync_api import expect

    settings.GAIT = {**settings.GAIT, "KEYS_DIR": tmp_path / "keys"}
    monkeypatch.delenv(settings.GAIT["SIGNING_KEY_ENV"], raising=False)
    key_init(actor=Actor.system("admin"))
    agent_job("web-pack", "completed")
    page = login("operator")  # building is a write: viewers read and verify, operators build
    page.goto(live_server.url + "/jobs/web-pack/")
    page.get_by_role("button", name="Build pack").click()
    link = page.get_by_role("link", name="Download")
    expect(link).to_be_visible()
    shots(page, "job-detail-pack")
    with page.expect_download() as info:
        link.click()
    saved = tmp_path / "downloaded.zip"
    info.value.save_as(saved)
    assert saved.stat().st_size > 0

    page.goto(live_server.url + "/packs/verify/")
    page.set_input_files("#f-pack", str(saved))
    page.get_by_role("button", name="Verify").click()
    expect(page.locator("#verdict")).to_have_text("verified")
    expect(page.locator("#result")).to_contain_text("web-pack")
    expect(page.locator("#result")).to_contain_text("chain verified")
    shots(page, "verify-pack")


def test_the_jobs_list_updates_live_when_a_job_changes_in_the_background(login, live_server, shots):
    from playwright.sync_api import expect

    agent_job("web-live")
    agent_job("web-steps", "queued", steps=True)
    page = login("viewer")
    row = page.locator('tr[data-job="web-live"]')
    expect(row).to_have_attribute("data-status", "running")
    _mark(page)
    services.job_pause(actor=Actor.system("ops"), job_id="web-live", reason="background change")
    expect(row).to_have_attribute("data-status", "paused", timeout=8_000)
    expect(row.locator(".badge").first).to_have_text("paused")
    expect(row.locator(".badge.st-ungated")).to_have_text("ungated")  # bound to no policy
    assert _not_reloaded(page)
    shots(page, "jobs-list")
    phone = login("viewer", width=390, height=844)
    expect(phone.locator('tr[data-job="web-live"]')).to_be_visible()
    shots(phone, "jobs-list-phone")


def test_a_reviewer_sees_an_in_doubt_question_in_the_queue_and_answers_it(
    login, live_server, shots, tmp_path
):
    """A worker died mid-way through a non-idempotent step; the engine parked the job on "step
    transfer may have run; re-run?". The reviewer finds it in the queue with the step's
    arguments, approves and resumes it in place, and the step runs again."""
    from playwright.sync_api import expect

    from tests.web.test_decision_queue import in_doubt_job

    log = tmp_path / "transfers.log"
    in_doubt_job("web-doubt", log)
    page = login("reviewer")
    expect(page.locator("#nav-approvals-count")).to_have_text("1")  # counted from any page
    page.get_by_role("link", name=re.compile("^Approvals")).click()
    card = page.locator(f"#{checkpoint_dom_id('web-doubt', 'cp_0001')}")
    expect(card).to_contain_text("Step transfer may have run (attempt 1)")
    expect(card).to_contain_text("approve and resume to run it again, or cancel the job")
    expect(card).to_contain_text(str(log))  # the step's arguments, not only its tool
    expect(card).to_contain_text("step_in_doubt")
    shots(page, "approvals-in-doubt")
    _mark(page)
    card.get_by_placeholder("Reason (optional)").fill("the bank has no record of it")
    card.get_by_role("button", name="Approve and resume").click()
    notice = page.locator(".notice")
    expect(notice).to_contain_text("on job web-doubt")
    expect(notice).to_contain_text("now queued")
    expect(page.locator("#nav-approvals-count")).to_have_text("0")
    expect(page.locator("#queue")).to_contain_text("Nothing is waiting for approval.")
    assert _not_reloaded(page)
    job = Job.objects.get(job_id="web-doubt")
    assert job.status == "queued"
    assert advance("web-doubt") == "completed"  # a worker runs the step again
    assert [line.split()[1:3] for line in log.read_text().splitlines()] == [["transfer", "2"]]
    page.goto(live_server.url + "/jobs/web-doubt/")
    expect(page.locator("#job-status")).to_have_text("completed")
    shots(page, "job-detail-in-doubt-answered")


def test_an_operator_watches_a_command_steps_output_grow_while_it_runs(
    login, live_server, shots, clusters, allow_commands
):
    """A real qcluster runs a command printing a line a second; the operator keeps the job page
    open and sees the step running (attempt 1, elapsed time) with its output growing, without
    reloading, then the step and the job complete."""
    from playwright.sync_api import expect

    allow_commands(shell=True)
    clusters()
    script = "for i in 1 2 3 4 5 6; do echo line-$i; sleep 1; done; echo oops >&2"
    job_submit(
        actor=Actor.system("ops"),
        job_id="web-watch",
        spec={
            "steps": [
                {"name": "count", "kind": "command", "with": {"shell": True, "command": script}}
            ]
        },
    )
    page = login("operator")
    page.goto(live_server.url + "/jobs/web-watch/")
    _mark(page)
    badge = page.locator('[data-step-status="count"]')
    expect(badge).to_have_text("running", timeout=15_000)
    expect(page.locator(".step-attempt")).to_have_text("attempt 1")
    out = page.locator('.live-output[data-step="count"] .live-stdout')
    expect(out).to_contain_text("line-1", timeout=8_000)
    first = out.inner_text()
    expect(out).to_contain_text("line-3", timeout=8_000)
    assert len(out.inner_text()) > len(first)  # it grew while the step ran
    expect(badge).to_have_text("running")  # still running: this is the live tail
    expect(page.locator(".step-elapsed")).to_contain_text("running for")
    shots(page, "job-detail-live-output")
    expect(page.locator("#job-status")).to_have_text("completed", timeout=15_000)
    expect(badge).to_have_text("succeeded")
    assert _not_reloaded(page)
    page.get_by_text("output and logs").click()
    expect(page.locator("#live")).to_contain_text("line-6")
    expect(page.locator("#live")).to_contain_text("oops")
