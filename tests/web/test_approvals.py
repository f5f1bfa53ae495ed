"""The reviewers' approvals queue and decisions from the dashboard."""

from __future__ import annotations

import re

import pytest

from approvals.models import ApprovalRequest, Decision
from gaitweb.lib.actors import Actor
from jobs.models import Job
from tests.web.conftest import Browser, pending_request

pytestmark = pytest.mark.django_db


def _job_status(job_id: str) -> str:
    return Job.objects.get(job_id=job_id).status


def test_queue_shows_tool_targets_gate_reasons_last_checkpoint_progress_and_expiry(cast):
    req = pending_request("q-1", required=2)
    html = Browser(cast.reviewer).get("/approvals/").content.decode()
    assert "May q-1 refund 420 EUR?" in html
    assert "<code>invoices.refund</code>" in html and "account:acct-42" in html
    assert "approval_required_for_refund" in html
    assert "Refund 420 EUR?" in html  # the job's last checkpoint summary
    assert "0 of 2 approvals" in html
    expires = re.search(r'data-expires="([^"]+)">expires in (\d+)\s+minutes', html)
    assert expires and expires.group(1).startswith(req.expires_at.strftime("%Y-%m-%dT%H:%M"))
    assert int(expires.group(2)) in (58, 59)
    assert re.search(r'id="nav-approvals-count"[^>]*>1<', html)  # count in the nav


def test_reviewer_approves_and_the_job_resumes(cast):
    req = pending_request("ok-1")
    b = Browser(cast.reviewer)
    response = b.post(
        f"/approvals/{req.request_id}/decide/", {"decision": "approve", "reason": "fine"}
    )
    assert response.status_code == 302 and response["Location"] == "/approvals/"
    assert _job_status("ok-1") == "running"
    assert ApprovalRequest.objects.get(pk=req.pk).status == "approved"
    assert "now running" in b.get("/approvals/").content.decode()


def test_approving_from_the_job_page_with_htmx_returns_the_job_fragment(cast):
    req = pending_request("ok-2")
    response = Browser(cast.reviewer).post(
        f"/approvals/{req.request_id}/decide/", {"decision": "approve", "from": "job"}, htmx=True
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="live"')
    assert 'id="job-status">running<' in html and "Waiting for a reviewer" not in html


def test_reject_needs_a_reason_and_then_blocks_the_job(cast):
    req = pending_request("no-1")
    b = Browser(cast.reviewer)
    page = b.get("/approvals/").content.decode()
    assert re.search(
        r'name="reason"[^>]*placeholder="Why reject\? \(required\)"[^>]* required', page
    )
    refused = b.post(f"/approvals/{req.request_id}/decide/", {"decision": "reject", "reason": " "})
    assert refused.status_code == 400 and "<code>missing_reason</code>" in refused.content.decode()
    assert not Decision.objects.filter(request=req).exists()
    b.post(
        f"/approvals/{req.request_id}/decide/", {"decision": "reject", "reason": "amount is wrong"}
    )
    assert _job_status("no-1") == "blocked"


def test_a_reviewer_cannot_approve_their_own_job(cast):
    me = Actor(
        name=cast.reviewer.username,
        scopes=frozenset({"submit", "read"}),
        identity=cast.reviewer.username,
        kind="system",
    )
    req = pending_request("mine-1", submitter=me)
    b = Browser(cast.reviewer)
    page = b.get("/approvals/").content.decode()
    assert "You submitted this job" in page
    assert f'action="/approvals/{req.request_id}/decide/"' not in page
    # the server refuses even a hand-made POST, inline, and writes nothing
    response = b.post(f"/approvals/{req.request_id}/decide/", {"decision": "approve"}, htmx=True)
    assert "<code>self_approval_forbidden</code>" in response.content.decode()
    assert not Decision.objects.filter(request=req).exists()
    assert _job_status("mine-1") == "decision_needed"


def test_two_of_two_needs_two_different_reviewers(cast):
    req = pending_request("two-1", required=2)
    first = Browser(cast.reviewer)
    first.post(f"/approvals/{req.request_id}/decide/", {"decision": "approve"})
    assert _job_status("two-1") == "decision_needed"
    page = first.get("/approvals/").content.decode()
    assert "1 of 2 approvals" in page and "You have decided" in page
    again = first.post(f"/approvals/{req.request_id}/decide/", {"decision": "approve"})
    assert (
        again.status_code == 409
        and "<code>approval_already_decided</code>" in again.content.decode()
    )
    Browser(cast.reviewer2).post(f"/approvals/{req.request_id}/decide/", {"decision": "approve"})
    assert _job_status("two-1") == "running"


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("reviewer", True),
        ("admin", True),
        ("operator", False),
        ("viewer", False),
        ("integrator", False),
    ],
)
def test_permission_matrix_for_decisions(cast, role, allowed):
    req = pending_request("perm-a")
    b = Browser(getattr(cast, role))
    page = b.get("/approvals/").content.decode()
    assert (f'action="/approvals/{req.request_id}/decide/"' in page) == allowed
    response = b.post(f"/approvals/{req.request_id}/decide/", {"decision": "approve"})
    if allowed:
        assert response.status_code == 302 and _job_status("perm-a") == "running"
    else:
        assert (
            response.status_code == 403
            and "<code>permission_denied</code>" in response.content.decode()
        )
        assert _job_status("perm-a") == "decision_needed"


def test_outsider_cannot_decide(cast):
    req = pending_request("perm-b")
    response = Browser(cast.outsider).post(
        f"/approvals/{req.request_id}/decide/", {"decision": "approve"}
    )
    assert response.status_code == 403 and not Decision.objects.filter(request=req).exists()


def test_queue_poll_is_204_until_something_changes_and_updates_the_nav_count(cast):
    pending_request("poll-a")
    b = Browser(cast.reviewer)
    html = b.get("/approvals/", htmx=True, fp="x").content.decode()
    fp = re.search(r'\?fp=([0-9a-f]+)"', html).group(1)
    assert b.get("/approvals/", htmx=True, fp=fp).status_code == 204
    pending_request("poll-b")
    changed = b.get("/approvals/", htmx=True, fp=fp).content.decode()
    assert "poll-b" in changed
    assert re.search(r'id="nav-approvals-count" hx-swap-oob="true"[^>]*>2<', changed)


def test_expired_request_is_refused_inline(cast):
    from datetime import timedelta

    from django.utils import timezone

    req = pending_request("exp-1")
    ApprovalRequest.objects.filter(pk=req.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = Browser(cast.reviewer).post(
        f"/approvals/{req.request_id}/decide/", {"decision": "approve"}, htmx=True
    )
    assert "<code>approval_expired</code>" in response.content.decode()
    assert _job_status("exp-1") == "decision_needed"


def test_an_escalated_request_can_only_be_decided_by_an_admin(cast):
    req = pending_request("esc-1")
    ApprovalRequest.objects.filter(pk=req.pk).update(escalated=True)
    reviewer = Browser(cast.reviewer)
    page = reviewer.get("/approvals/").content.decode()
    assert "Escalated: only an admin can decide now." in page
    refused = reviewer.post(f"/approvals/{req.request_id}/decide/", {"decision": "approve"})
    assert (
        refused.status_code == 403 and "<code>permission_denied</code>" in refused.content.decode()
    )
    Browser(cast.admin).post(f"/approvals/{req.request_id}/decide/", {"decision": "approve"})
    assert _job_status("esc-1") == "running"
