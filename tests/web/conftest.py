"""Dashboard test helpers: CSRF-enforcing clients logged in as the cast, and jobs put in a given
state through the real lifecycle services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from gaitweb.lib.actors import Actor
from tests.conftest import PASSWORD, Cast
from tests.engine.conftest import clusters, pg, worker_env  # noqa: F401 (real workers for pages)

AGENT = Actor.system("agent-smith", identity="agent.smith")


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    from jobs.views import status_counts_forget

    status_counts_forget()


class Browser:
    """A Django test client that enforces CSRF like a browser: every POST carries the token
    from the csrftoken cookie a page set, or none at all when ``csrf=False``."""

    def __init__(self, user: Any | None) -> None:
        self.client = Client(enforce_csrf_checks=True)
        if user is not None:
            assert self.client.login(username=user.username, password=PASSWORD)
        self.user = user

    def get(self, url: str, *, htmx: bool = False, **params: Any) -> Any:
        headers = {"HX-Request": "true"} if htmx else {}
        return self.client.get(url, params, headers=headers)

    def token(self) -> str:
        if "csrftoken" not in self.client.cookies:
            # any page with a form sets the cookie (the login page redirects a logged-in user)
            self.client.get("/packs/verify/" if self.user is not None else "/login/")
        return self.client.cookies["csrftoken"].value

    def post(
        self,
        url: str,
        data: dict[str, Any] | None = None,
        *,
        htmx: bool = False,
        csrf: bool = True,
        **kw: Any,
    ) -> Any:
        data = dict(data or {})
        if csrf:
            data["csrfmiddlewaretoken"] = self.token()
        headers = {"HX-Request": "true"} if htmx else {}
        return self.client.post(url, data, headers=headers, **kw)


@pytest.fixture
def browser_as(cast: Cast) -> Callable[[str | None], Browser]:
    def make(role: str | None) -> Browser:
        return Browser(getattr(cast, role) if role else None)

    return make


def agent_job(
    job_id: str, status: str = "running", *, submitter: Actor = AGENT, steps: bool = False
) -> Any:
    """A job in ``status``, reached through the lifecycle services like an agent would."""
    from jobs import services

    spec = (
        {
            "steps": [
                {"name": "one", "kind": "python", "with": {"function": "noop"}},
                {"name": "two", "kind": "python", "with": {"function": "noop"}},
            ]
        }
        if steps
        else None
    )
    services.job_submit(
        actor=submitter,
        job_id=job_id,
        identity=submitter.identity or "",
        spec=spec,
        labels={"team": "qa"},
    )
    ops = Actor.system("ops")
    if status in ("running", "queued"):
        pass
    elif status == "paused":
        services.job_pause(actor=ops, job_id=job_id)
    elif status == "decision_needed":
        services.job_checkpoint_add(
            actor=submitter, job_id=job_id, type="decision-needed", summary="Refund 420 EUR?"
        )
    elif status == "blocked":
        services.job_checkpoint_add(actor=submitter, job_id=job_id, type="blocked", summary="stuck")
    elif status == "completed":
        services.job_checkpoint_add(
            actor=submitter, job_id=job_id, type="completed", summary="done"
        )
    elif status == "emergency_stopped":
        services.job_stop(actor=ops, job_id=job_id, reason="runaway agent")
    elif status == "cancelled":
        services.job_cancel(actor=ops, job_id=job_id)
    else:
        raise ValueError(status)
    from jobs.models import Job

    return Job.objects.get(job_id=job_id)


def pending_request(
    job_id: str, *, required: int = 1, submitter: Actor = AGENT, expires_in: float | None = 3600
) -> Any:
    """A decision-needed job with one pending approval request, as the engine or an agent
    opens it."""
    from approvals.services import approval_request_create

    agent_job(job_id, "decision_needed", submitter=submitter)
    return approval_request_create(
        actor=submitter,
        job=job_id,
        summary=f"May {job_id} refund 420 EUR?",
        intent={
            "tool_name": "invoices.refund",
            "targets": [{"kind": "account", "value": "acct-42"}],
        },
        gate_result={
            "verdict": "require_approval",
            "reason_codes": ["approval_required_for_refund"],
        },
        required_approvals=required,
        expires_in=expires_in,
    )
