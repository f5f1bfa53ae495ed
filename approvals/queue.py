"""What a reviewer must decide, as the dashboard shows it: one queue of approval requests and
unanswered decision-needed checkpoints (the engine's in-doubt "step X may have run; re-run?"
among them), read through approvals.selectors and turned into ``DecisionCard``s.

A card carries everything the decision needs on one screen: the question, the tool call and
its arguments, the gate's verdict and reasons, earlier decisions with their reasons, the
expiry, and what this viewer may do about it. The queue page and the job page render the same
cards (templates/approvals/_card.html). Building them costs a fixed number of queries whatever
the queue's length (a request's decisions are prefetched, a checkpoint's event payload and
job come with it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import OuterRef, Subquery
from django.urls import reverse

from approvals.models import ApprovalRequest, DecisionKind
from approvals.selectors import approval_pending_list, decision_checkpoints_pending
from gaitweb.lib.actors import Actor, Scope
from jobs.models import Checkpoint, Job, JobStatus

REQUEST = "request"
CHECKPOINT = "checkpoint"


@dataclass
class DecisionCard:
    kind: str  # REQUEST or CHECKPOINT
    dom_id: str
    job: Job
    question: str
    decide_url: str
    created_at: datetime
    required_action: str = ""
    request_id: str = ""
    checkpoint_id: str = ""
    step_name: str = ""
    step_kind: str = ""
    attempt: int | None = None
    tool_name: str = ""
    arguments: str = ""  # the tool call's arguments, as indented JSON
    targets: list[str] = field(default_factory=list)
    verdict: str = ""
    reasons: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    matched_rules: list[str] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    approvals_n: int = 0
    required_approvals: int = 1
    expires_at: datetime | None = None
    on_expiry: str = ""
    escalated: bool = False
    last_checkpoint: str = ""
    # what the viewer may do
    can_decide: bool = False
    can_cancel: bool = False
    no_scope: bool = False
    is_mine: bool = False
    forbid_submitter: bool = True
    already_decided: bool = False

    @property
    def is_request(self) -> bool:
        return self.kind == REQUEST

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        """What a poll compares: a change here re-renders the queue."""
        return (self.dom_id, self.approvals_n, self.escalated, self.job.status)


def checkpoint_dom_id(job_id: str, checkpoint_id: str) -> str:
    """The card's element id: job ids may hold ``.`` and ``:``, which CSS selectors would
    need escaped, so the job is named by a short digest."""
    return f"cp-{hashlib.sha256(job_id.encode()).hexdigest()[:12]}-{checkpoint_id}"


def _pretty(value: Any) -> str:
    if value in (None, "", {}, []):
        return ""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _request_card(req: ApprovalRequest, actor: Actor) -> DecisionCard:
    decisions = list(req.decisions.all())  # prefetched by approval_pending_list
    intent = req.intent or {}
    gate = req.gate_result or {}
    is_mine = req.job.is_submitted_by(actor)
    already = any(d.actor == actor.name for d in decisions)
    return DecisionCard(
        kind=REQUEST,
        dom_id=f"req-{req.request_id}",
        job=req.job,
        question=req.summary or "Approval needed",
        decide_url=reverse("approvals-decide", args=[req.request_id]),
        created_at=req.created_at,
        request_id=req.request_id,
        checkpoint_id=req.checkpoint_id,
        step_name=req.step_name,
        tool_name=req.tool_name,
        arguments=_pretty(intent.get("args")),
        targets=[
            f"{t.get('kind', '')}:{t.get('value', '')}" if isinstance(t, dict) else str(t)
            for t in intent.get("targets") or []
        ],
        verdict=str(gate.get("verdict") or ""),
        reasons=[str(r) for r in gate.get("reason_codes") or []],
        violations=[str(v) for v in gate.get("violations") or []],
        matched_rules=[str(r) for r in gate.get("matched_rules") or []],
        decisions=[
            {"actor": d.actor, "decision": d.decision, "reason": d.reason, "at": d.decided_at}
            for d in decisions
        ],
        approvals_n=sum(1 for d in decisions if d.decision == DecisionKind.APPROVE),
        required_approvals=req.required_approvals,
        expires_at=req.expires_at,
        on_expiry=req.on_expiry,
        escalated=req.escalated,
        last_checkpoint=getattr(req, "last_checkpoint", "") or "",
        can_decide=(
            actor.can(Scope.APPROVE)
            and not (req.forbid_submitter and is_mine)
            and not already
            and (not req.escalated or actor.can(Scope.ADMIN))
        ),
        no_scope=not actor.can(Scope.APPROVE),
        is_mine=is_mine,
        forbid_submitter=req.forbid_submitter,
        already_decided=already,
    )


def _checkpoint_card(cp: Checkpoint, actor: Actor) -> DecisionCard:
    job = cp.job
    payload = getattr(cp, "event_payload", None) or {}
    card = DecisionCard(
        kind=CHECKPOINT,
        dom_id=checkpoint_dom_id(job.job_id, cp.checkpoint_id),
        job=job,
        question=cp.summary,
        required_action=cp.required_action,
        decide_url=reverse("approvals-answer", args=[job.job_id, cp.checkpoint_id]),
        created_at=cp.created_at,
        checkpoint_id=cp.checkpoint_id,
        reasons=[cp.reason_code] if cp.reason_code else [],
        is_mine=job.is_submitted_by(actor),
        no_scope=not actor.can(Scope.APPROVE),
        can_cancel=actor.can(Scope.CONTROL) and job.can("cancel"),
    )
    card.can_decide = actor.can(Scope.APPROVE) and not card.is_mine
    index = payload.get("step_index")
    if isinstance(index, int) and 0 <= index < len(job.steps):
        # the step the question is about, as the gate saw it: its arguments without ``env``
        # (jobs.engine's intent of a step leaves env out too)
        step = job.steps[index]
        card.step_name = str(step.get("name") or "")
        card.step_kind = str(step.get("kind") or "")
        card.tool_name = str(step.get("tool") or "")
        card.arguments = _pretty({k: v for k, v in (step.get("with") or {}).items() if k != "env"})
        card.attempt = payload.get("attempt") if isinstance(payload.get("attempt"), int) else None
    return card


def decision_cards(
    actor: Actor, *, job: Job | None = None, limit: int | None = None
) -> list[DecisionCard]:
    """Everything ``actor`` may see waiting for a reviewer (of one ``job``, already read for
    this actor): requests with an expiry first, soonest first; then the rest, newest first."""
    job_id = job.job_id if job is not None else None
    last_cp = Checkpoint.objects.filter(job=OuterRef("job")).order_by("-id").values("summary")[:1]
    requests = approval_pending_list(actor=actor, job_id=job_id).annotate(
        last_checkpoint=Subquery(last_cp)
    )
    cards = [_request_card(r, actor) for r in requests[:limit]]
    if job is None or job.status == JobStatus.DECISION_NEEDED:  # only such jobs ask questions
        questions = decision_checkpoints_pending(actor=actor, job_id=job_id)
        cards += [_checkpoint_card(cp, actor) for cp in questions[:limit]]
    cards.sort(
        key=lambda c: (
            c.expires_at is None,
            c.expires_at.timestamp() if c.expires_at else 0.0,
            -c.created_at.timestamp(),
        )
    )
    return cards[:limit] if limit is not None else cards
