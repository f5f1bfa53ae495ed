"""Demo data for `make run`: a first look at the dashboard shows the product.

``demo_seed()`` is idempotent: every demo job has a fixed id and is created only when missing.
It uses the real services only, so every demo job has a valid, hash-chained journal:

- agent-driven jobs (no steps; an external agent reports checkpoints) put in every status the
  lifecycle services can reach: running, paused, decision_needed with pending approval requests
  (one 1-of-1, one 2-of-2), blocked, emergency_stopped, cancelled, completed (with a pack);
- jobs with steps, which the engine (started by `make run` next to the web server) runs to
  completed, failed (a step that fails on purpose) and waiting (a durable sleep and a signal
  wait). ``queued`` shows briefly for each of them until a worker claims it.

`make run` runs in demo mode (``GAIT_DEMO``): the demo's python step functions are registered,
command steps are on and ``echo`` is the one allow-listed executable (docs/security.md).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from approvals.gate import gate_evaluate
from approvals.models import Policy
from approvals.policies import PolicyBinding, policy_save
from approvals.services import approval_request_create
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import GaitError
from gaitweb.lib.roles import roles_ensure
from jobs import services
from jobs.models import AllowedExecutable, Job, JobTemplate
from jobs.recurring import template_create
from jobs.workflow_registry import workflow_versions
from packs.keys import key_init
from packs.models import SigningKey, SigningKeyStatus
from packs.services import pack_build

log = logging.getLogger("gaitweb.demo")

AGENT = "demo-agent"
POLICY_NAME = "demo-billing"

# `make run`'s logins: (username, role). Created only by demo_logins_ensure, never with --no-demo.
DEMO_USERS = [
    ("admin", "admin"),
    ("reviewer", "reviewer"),
    ("operator", "operator"),
    ("viewer", "viewer"),
]
DEMO_PASSWORD_FILE = "demo_password"


@dataclass
class DemoLogins:
    """What `manage.py up` prints about the demo logins."""

    password: str | None  # None: not known here (the file is gone); nothing was changed
    created: list[str] = field(default_factory=list)  # users made now
    reset: bool = False  # a new password was set for every demo user
    changed: list[str] = field(default_factory=list)  # users whose password someone changed
    path: Path | None = None


def _password_write(path: Path, record: dict[str, Any]) -> None:
    """Replace the password file atomically, readable by its owner only (0600 from creation,
    never a moment with wider permissions)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, path)


def demo_logins_ensure(*, reset: bool = False) -> DemoLogins:
    """The demo logins of `make run`, kept across restarts (docs/security.md).

    The first start creates the users with one random password, kept in
    ``GAIT_DATA_DIR/demo_password`` (mode 0600, like ``secret_key`` and the signing keys beside
    it) so every start can print the login again. Later starts change nothing: a user whose
    password was changed keeps it (and it is not printed); a deleted demo user is created again
    with the kept password. ``reset`` draws a new password for every demo user. When the file
    is gone but demo users exist, nothing is changed and the password is reported unknown."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, User

    roles_ensure()
    path = Path(settings.DATA_DIR) / DEMO_PASSWORD_FILE
    names = [name for name, _ in DEMO_USERS]
    existing = {u.username: u for u in User.objects.filter(username__in=names)}
    record: dict[str, Any] | None = None
    if path.exists() and not reset:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("password"), str):
            record = None
    if record is None and existing and not reset:
        return DemoLogins(password=None, path=path)
    result = DemoLogins(password="", reset=reset, path=path)
    if record is None:
        record = {"password": secrets.token_urlsafe(12), "hashes": {}}
    password: str = record["password"]
    hashes: dict[str, str] = dict(record.get("hashes") or {})
    for username, role in DEMO_USERS:
        user = existing.get(username)
        if user is None:
            user = User(username=username, email=f"{username}@localhost")
            user.is_staff = user.is_superuser = role == "admin"
            result.created.append(username)
        elif not reset:
            # the stored hash says "unchanged" cheaply; a rehash on login needs the slow check
            if user.password != hashes.get(username) and not user.check_password(password):
                result.changed.append(username)
                continue
            hashes[username] = user.password
            continue
        user.password = make_password(password)
        user.save()
        if username in result.created:
            user.groups.set([Group.objects.get(name=role)])
        hashes[username] = user.password
    record["hashes"] = hashes
    _password_write(path, record)
    result.password = password
    return result


def _policy_binding(admin: Actor) -> Any:
    policy = Policy.objects.filter(name=POLICY_NAME).select_related("current").first()
    if policy is None or policy.current is None:
        source = (Path(settings.BASE_DIR) / "examples" / "policy.yaml").read_text()
        version = policy_save(
            actor=admin, name=POLICY_NAME, source=source, description="Demo policy"
        )
    else:
        version = policy.current
    return PolicyBinding.of(version, name=POLICY_NAME)


def _signing_key(admin: Actor) -> None:
    if not SigningKey.objects.filter(status=SigningKeyStatus.ACTIVE).exists():
        try:
            key_init(actor=admin)
        except GaitError as exc:  # a concurrent init won, or keys are managed elsewhere
            log.info("demo: no signing key created (%s)", exc.code)


def _approval(
    job_id: str, *, summary: str, intent: dict[str, Any], binding: Any, hours: float, **kw: Any
) -> None:
    gate = gate_evaluate(intent=intent, policy=binding.version).as_dict()
    approval_request_create(
        actor=Actor.system(AGENT),
        job=job_id,
        summary=summary,
        intent=intent,
        gate_result=gate,
        expires_in=hours * 3600,
        **kw,
    )


def _agent_job(
    job_id: str, *, identity: str, team: str, binding: Any, plan: str, progress: list[str]
) -> bool:
    """Submit an agent-driven job with its plan and progress checkpoints, as an agent would.
    False (and nothing written) when the job exists already: the caller then skips the steps
    that put it in its demo status."""

    if Job.objects.filter(job_id=job_id).exists():
        return False
    agent = Actor.system(AGENT, identity=identity)
    services.job_submit(
        actor=agent,
        job_id=job_id,
        identity=identity,
        policy=binding,
        labels={"team": team, "demo": "yes"},
    )
    services.job_checkpoint_add(actor=agent, job_id=job_id, type="plan", summary=plan)
    for line in progress:
        services.job_checkpoint_add(actor=agent, job_id=job_id, type="progress", summary=line)
    return True


def _seed_agent_jobs(binding: Any) -> None:
    agent = Actor.system(AGENT)
    ops = Actor.system("ops-oncall")

    if _agent_job(
        "demo-refund-4711",
        identity="agent.billing",
        team="billing",
        binding=binding,
        plan="Refund invoice 4711 (420.00 EUR) after the customer's complaint",
        progress=[
            "Invoice 4711 found: 420.00 EUR, paid 2026-10-02",
            "Customer eligible under the 30-day policy",
        ],
    ):
        services.job_checkpoint_add(
            actor=agent,
            job_id="demo-refund-4711",
            type="decision-needed",
            summary="Ready to refund 420.00 EUR to card ending 4242",
            required_action="approve the refund",
        )
        _approval(
            "demo-refund-4711",
            summary="Refund 420.00 EUR on invoice 4711?",
            binding=binding,
            hours=20,
            intent={
                "tool_name": "tool.write",
                "args": {"invoice": 4711, "amount": "420.00"},
                "targets": [{"kind": "path", "value": "/srv/staging/invoices/4711"}],
                "context": {
                    "identity": "agent.billing",
                    "job_id": "demo-refund-4711",
                    "workspace": "/srv/staging",
                },
            },
            required_approvals=1,
        )
    if _agent_job(
        "demo-wire-transfer",
        identity="agent.treasury",
        team="finance",
        binding=binding,
        plan="Wire 12,000 EUR to supplier ACME GmbH for PO-889",
        progress=["PO-889 matched to delivery note DN-3321"],
    ):
        services.job_checkpoint_add(
            actor=agent,
            job_id="demo-wire-transfer",
            type="decision-needed",
            summary="Wire 12,000.00 EUR to DE89 3704 0044 0532 0130 00",
            required_action="two reviewers approve",
        )
        _approval(
            "demo-wire-transfer",
            summary="Wire 12,000 EUR to ACME GmbH?",
            binding=binding,
            hours=3,
            intent={
                "tool_name": "bank.wire",
                "args": {"amount": "12000.00", "currency": "EUR"},
                "targets": [{"kind": "account", "value": "DE89370400440532013000"}],
                "context": {"identity": "agent.treasury", "job_id": "demo-wire-transfer"},
            },
            on_expiry="escalate",
        )
    # running: nothing more to do
    _agent_job(
        "demo-crawl-docs",
        identity="agent.research",
        team="docs",
        binding=binding,
        plan="Crawl the product docs and summarise breaking changes",
        progress=["Fetched 120 of 340 pages", "Fetched 260 of 340 pages"],
    )
    if _agent_job(
        "demo-sync-crm",
        identity="agent.sales",
        team="sales",
        binding=binding,
        plan="Sync 2,000 CRM contacts to the newsletter tool",
        progress=["Synced 800 of 2,000"],
    ):
        services.job_pause(
            actor=ops, job_id="demo-sync-crm", reason="newsletter tool maintenance window"
        )
    if _agent_job(
        "demo-cleanup-tmp",
        identity="agent.ops",
        team="ops",
        binding=binding,
        plan="Delete build artefacts older than 30 days",
        progress=[],
    ):
        services.job_checkpoint_add(
            actor=agent,
            job_id="demo-cleanup-tmp",
            type="blocked",
            summary="tool.delete is blocked by policy (destructive_tool_blocked)",
            reason_code="policy_blocked",
        )
    if _agent_job(
        "demo-email-blast",
        identity="agent.marketing",
        team="marketing",
        binding=binding,
        plan="Send the November campaign to 48,000 subscribers",
        progress=["Sent 1,200 of 48,000"],
    ):
        services.job_stop(
            actor=ops,
            job_id="demo-email-blast",
            reason="wrong segment: unsubscribed users included",
        )
    if _agent_job(
        "demo-old-import",
        identity="agent.ops",
        team="ops",
        binding=binding,
        plan="Import the 2019 archive",
        progress=[],
    ):
        services.job_cancel(
            actor=ops, job_id="demo-old-import", reason="superseded by the new archive format"
        )
    if _agent_job(
        "demo-nightly-report",
        identity="agent.reports",
        team="finance",
        binding=binding,
        plan="Build the nightly revenue report",
        progress=["Queried 14 ledgers", "Rendered 6 charts"],
    ):
        services.job_checkpoint_add(
            actor=agent,
            job_id="demo-nightly-report",
            type="completed",
            summary="Report published to /reports/2026-11-21",
        )

        pack_build(actor=Actor.system("demo-admin"), job_id="demo-nightly-report")


ENGINE_JOBS: dict[str, dict[str, Any]] = {
    "demo-etl-pipeline": {
        "description": "Extract, add up and report",
        "steps": [
            {
                "name": "extract-a",
                "kind": "python",
                "with": {"function": "add", "args": {"a": 2, "b": 3}},
            },
            {
                "name": "extract-b",
                "kind": "python",
                "with": {"function": "add", "args": {"a": 10, "b": 20}},
            },
            {"name": "total", "kind": "python", "with": {"function": "sum_outputs"}},
            {"name": "report", "kind": "command", "with": {"argv": ["echo", "report ready"]}},
        ],
    },
    "demo-flaky-upload": {
        "description": "An upload whose last step gives up",
        "steps": [
            {
                "name": "prepare",
                "kind": "python",
                "with": {"function": "echo", "args": {"files": 3}},
            },
            {
                "name": "upload",
                "kind": "python",
                "with": {"function": "fail", "args": {"error": "QuotaExceeded"}},
            },
            {"name": "notify", "kind": "python", "with": {"function": "noop"}},
        ],
    },
    "demo-wait-for-invoice": {
        "description": "Waits for the invoice-paid signal",
        "steps": [
            {
                "name": "send-invoice",
                "kind": "python",
                "with": {"function": "echo", "args": {"invoice": 991}},
            },
            {
                "name": "wait-paid",
                "kind": "wait_event",
                "with": {"signal": "invoice-paid", "timeout": "7d"},
            },
            {"name": "ship", "kind": "python", "with": {"function": "noop"}},
        ],
    },
    "demo-cooldown": {
        "description": "A durable timer: sleeps for an hour",
        "steps": [
            {"name": "warm-up", "kind": "python", "with": {"function": "noop"}},
            {"name": "cool-down", "kind": "sleep", "with": {"duration": "1h"}},
            {"name": "finish", "kind": "python", "with": {"function": "noop"}},
        ],
    },
}


def _seed_engine_jobs() -> None:
    operator = Actor.system("demo-operator")
    for job_id, spec in ENGINE_JOBS.items():
        if Job.objects.filter(job_id=job_id).exists():
            continue
        services.job_submit(
            actor=operator,
            job_id=job_id,
            identity="agent.pipeline",
            spec=spec,
            labels={"demo": "yes", "team": "data"},
        )


def _seed_workflow_job(binding: Any) -> None:
    """One run of examples/refund_agent.py's workflow, bound to the demo policy (which sends
    its refund to two reviewers)."""

    if Job.objects.filter(job_id="demo-refund-agent").exists() or not workflow_versions(
        "refund-agent"
    ):
        return
    services.job_submit(
        actor=Actor.system("demo-operator"),
        job_id="demo-refund-agent",
        identity="agent.billing",
        spec={"workflow": "refund-agent", "input": {"invoice": "INV-42"}},
        policy=binding,
        labels={"demo": "yes", "team": "billing"},
    )


def _seed_templates() -> None:
    """Saved templates, so "Run a job" offers a choice (jobs.recurring; admins manage them)."""

    if JobTemplate.objects.filter(template_id="demo-etl").exists():
        return
    try:
        template_create(
            actor=Actor.system("demo-admin"),
            template_id="demo-etl",
            name="ETL pipeline",
            description="Extract two sources, add them up, report",
            spec=dict(ENGINE_JOBS["demo-etl-pipeline"]),
            identity="agent.pipeline",
            labels={"demo": "yes", "team": "data"},
        )
    except GaitError as exc:
        log.info("demo: no template created (%s)", exc.code)


# What the demo's command steps may run (and examples/): one harmless executable.
DEMO_EXECUTABLES = ("echo",)


def demo_allowlist_ensure() -> None:
    """Allow-list the demo's executables (jobs.models.AllowedExecutable), as an admin would.
    Only in demo mode: a deployment's list is its admins' alone."""
    if not settings.GAIT["DEMO"]:  # type: ignore[index]
        return
    from django.core.exceptions import ValidationError

    for name in DEMO_EXECUTABLES:
        if AllowedExecutable.objects.filter(name=name).exists():
            continue
        row = AllowedExecutable(name=name, note="created by the demo", created_by="demo-admin")
        try:
            row.full_clean()
        except ValidationError as exc:  # not on GAIT_COMMAND_PATH here: the demo step fails
            log.warning("demo: %s is not allow-listed (%s)", name, exc)
            continue
        row.save()


def demo_seed() -> dict[str, Any]:
    """Create the demo jobs that are missing. Safe to run on every start."""

    before = Job.objects.filter(job_id__startswith="demo-").count()
    admin = Actor.system("demo-admin")
    demo_allowlist_ensure()
    _signing_key(admin)
    with transaction.atomic():
        binding = _policy_binding(admin)
    _seed_agent_jobs(binding)
    _seed_engine_jobs()
    _seed_workflow_job(binding)
    _seed_templates()
    after = Job.objects.filter(job_id__startswith="demo-").count()
    return {"created": after - before, "total": after}
