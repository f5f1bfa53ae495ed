"""The gate: one verdict per tool call.

``gate_evaluate`` is the pure decision (policy + intent -> verdict); the engine calls it before
every step and the CLI's ``gate eval`` uses it. ``gate_dispatch`` is what external agents call
before each of their own tool calls against a job: it adds the job's state (emergency stop,
finished job, revoked identity) to the policy decision and journals the outcome on the job as
``dispatch_blocked`` or ``dispatch_allowed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import DatabaseError, transaction

from approvals.models import PolicyVersion, RevokedIdentity
from approvals.policy_format import (
    Intent,
    Policy,
    intent_parse,
    policy_for_version,
    policy_from_normalized_cached,
)
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.errors import EXIT_APPROVAL_REQUIRED, EXIT_OK, EXIT_POLICY_BLOCKED, InvalidInput
from jobs.journal import event_append
from jobs.models import FINISHED_STATUSES, JobStatus
from jobs.selectors import jobs_visible

EXIT_CODES = {
    "allow": EXIT_OK,
    "dry_run": EXIT_OK,
    "block": EXIT_POLICY_BLOCKED,
    "require_approval": EXIT_APPROVAL_REQUIRED,
}


@dataclass(frozen=True)
class GateResult:
    """What the gate decided. ``min_approvals`` / ``require_distinct_approvers`` come from the
    deciding rule(s) and feed ``approval_request_create``; ``forbid_self_approval`` from the
    policy's separation-of-duties switch."""

    verdict: str
    reason_codes: tuple[str, ...]
    violations: tuple[str, ...] = ()
    matched_rules: tuple[str, ...] = ()
    policy_digest: str = ""
    intent_digest: str = ""
    min_approvals: int = 0
    require_distinct_approvers: bool = False
    forbid_self_approval: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def allowed(self) -> bool:
        return self.verdict in ("allow", "dry_run")

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason_codes": list(self.reason_codes),
            "violations": list(self.violations),
            "matched_rules": list(self.matched_rules),
            "policy_digest": self.policy_digest,
            "intent_digest": self.intent_digest,
            "min_approvals": self.min_approvals,
            "require_distinct_approvers": self.require_distinct_approvers,
            "forbid_self_approval": self.forbid_self_approval,
            **self.extra,
        }


def policy_of(policy: Policy | PolicyVersion | None) -> Policy | None:
    """The compiled policy of a stored version (cached by digest), or the policy itself."""
    if policy is None or isinstance(policy, Policy):
        return policy
    return policy_from_normalized_cached(policy.digest, policy.normalized)


def job_policy(job: Any) -> Policy | None:
    """The compiled policy a job is bound to, from the per-version cache: the engine's
    before-step check reads no policy row once a worker has seen the version. ``None`` for a
    job bound to no policy. Raises ``PolicyVersion.DoesNotExist`` if the row is gone."""
    if job.policy_id is None:
        return None
    return _stored_policy(job.policy_id, job.policy_digest)


def _stored_policy(version_pk: int, digest: str) -> Policy:
    def load() -> tuple[str, Any]:
        return PolicyVersion.objects.values_list("digest", "normalized").get(pk=version_pk)

    return policy_for_version(version_pk, digest, load)


def gate_evaluate(
    *, intent: Mapping[str, Any] | Intent, policy: Policy | PolicyVersion | None
) -> GateResult:
    """Evaluate ``intent`` against ``policy``. Pure: reads nothing, writes nothing.

    ``intent`` is ``{tool_name, args, targets[{kind, value, operation?, endpoint_class?}],
    context{identity, job_id, risk_class, workspace}}`` (Gait's intent_request fields are
    accepted). ``policy`` is a parsed ``Policy``, a stored ``PolicyVersion``, or ``None``: a job
    bound to no policy is not gated (verdict ``allow``, reason ``no_policy_bound``).
    Raises ``InvalidInput('intent_invalid')`` on a malformed intent.
    """
    parsed = intent_parse(intent)
    compiled = policy_of(policy)
    if compiled is None:
        return GateResult(
            verdict="allow", reason_codes=("no_policy_bound",), intent_digest=parsed.digest
        )
    outcome = compiled.compiled.evaluate(parsed)
    return GateResult(
        verdict=outcome.verdict,
        reason_codes=outcome.reason_codes,
        violations=outcome.violations,
        matched_rules=outcome.matched_rules,
        policy_digest=compiled.digest,
        intent_digest=parsed.digest,
        min_approvals=outcome.min_approvals,
        require_distinct_approvers=outcome.require_distinct_approvers,
        forbid_self_approval=compiled.forbid_self_approval,
    )


def _refusal(code: str, intent: Intent, policy_digest: str = "") -> GateResult:
    return GateResult(
        verdict="block",
        reason_codes=(code,),
        policy_digest=policy_digest,
        intent_digest=intent.digest,
    )


def _event_reason(result: GateResult, state_code: str | None) -> str:
    if state_code:
        return state_code
    return {
        "block": "policy_blocked",
        "require_approval": "approval_required",
        "dry_run": "policy_dry_run",
        "allow": "policy_allowed",
    }[result.verdict]


def _identity_claim_refused(parsed: Intent, server_identity: str) -> bool:
    """An intent may leave ``context.identity`` out or repeat the identity the server knows;
    naming another one is a claim the gate refuses (``intent_identity_mismatch``)."""
    return bool(parsed.identity) and parsed.identity != server_identity


def gate_evaluate_for_actor(
    *, actor: Actor, intent: Mapping[str, Any] | Intent, policy: Policy | PolicyVersion | None
) -> GateResult:
    """The API's and MCP's pure evaluation: the intent's identity is the authenticated actor's,
    never the body's. An intent naming another identity gets ``block``
    (``intent_identity_mismatch``) without consulting any policy, so claiming a trusted
    identity gains nothing. Writes nothing; the caller picks the policy (the API's default is
    the caller's assigned one: ``approvals.identities.policy_assigned_version``)."""
    actor.require(Scope.READ)
    parsed = intent_parse(intent)
    identity = actor.identity or ""
    if _identity_claim_refused(parsed, identity):
        return _identity_refusal(parsed, identity)
    return gate_evaluate(intent=replace(parsed, identity=identity), policy=policy)


def _identity_refusal(parsed: Intent, identity: str) -> GateResult:
    return GateResult(
        verdict="block",
        reason_codes=("intent_identity_mismatch",),
        violations=(f"the intent claims identity {parsed.identity!r}; the caller is {identity!r}",),
        intent_digest=parsed.digest,
    )


def gate_dispatch(
    *, job_id: str, intent: Mapping[str, Any] | Intent, actor: Actor, path: str = "api"
) -> GateResult:
    """Decide an external agent's tool call against job ``job_id`` and journal it.

    The intent's identity is the job's (the caller's, for a job bound to none): an intent
    naming another one is refused, not believed.

    Order (fails closed): unknown, unreadable or not the caller's to see (another identity's,
    jobs.selectors) job -> ``block`` (``emergency_stop_state_unavailable``, nothing journaled:
    there is no job to write to);
    emergency-stopped job -> ``block`` (``emergency_stop_preempted``); finished job ->
    ``block`` (``job_not_active``); an intent claiming another identity -> ``block``
    (``intent_identity_mismatch``, the claim is journaled); a revoked identity (the job's or the
    caller's) -> ``block`` (``identity_revoked``); otherwise the job's bound policy decides. Every block and
    ``require_approval`` is journaled as ``dispatch_blocked``, ``allow``/``dry_run`` as
    ``dispatch_allowed``; the payload names the dispatch ``path``, the tool and the verdict.
    The event is written with the job row locked, in one transaction.
    """
    actor.require(Scope.SUBMIT)
    parsed = intent_parse(intent)
    if parsed.job_id and parsed.job_id != job_id:
        raise InvalidInput(
            reasons.INTENT_JOB_MISMATCH,
            f"intent context.job_id '{parsed.job_id}' is not job '{job_id}'",
        )
    if not isinstance(path, str) or not path or len(path) > 64:
        raise InvalidInput(
            reasons.INVALID_DISPATCH_PATH, "path must be a short name such as 'api' or 'cli'"
        )

    try:
        with transaction.atomic():
            # a job the caller may not see (another identity's) answers exactly as an unknown
            # one: no verdict from its policy, nothing journaled, no existence oracle
            job = jobs_visible(actor).select_for_update().filter(job_id=job_id).first()
            if job is None:
                return _refusal(
                    reasons.EMERGENCY_STOP_STATE_UNAVAILABLE, replace(parsed, job_id=job_id)
                )
            identity = job.identity or actor.identity or ""
            claimed = parsed.identity if _identity_claim_refused(parsed, identity) else ""
            parsed = replace(parsed, job_id=job_id, identity=identity)
            state_code: str | None = None
            result: GateResult
            if job.status == JobStatus.EMERGENCY_STOPPED:
                state_code = "emergency_stop_preempted"
            elif job.status in FINISHED_STATUSES:
                state_code = "job_not_active"
            elif claimed:
                state_code = "intent_identity_mismatch"
            else:
                names = {n for n in (job.identity, actor.identity) if n}
                if names and RevokedIdentity.objects.filter(identity__in=names).exists():
                    state_code = "identity_revoked"
            policy = job_policy(job)
            if state_code:
                result = _refusal(
                    state_code, parsed, policy.digest if policy else job.policy_digest
                )
            else:
                result = gate_evaluate(intent=parsed, policy=policy)
            event_append(
                job,
                type="dispatch_allowed" if result.allowed else "dispatch_blocked",
                actor=actor.name,
                reason_code=_event_reason(result, state_code),
                payload={
                    "path": path,
                    "tool": parsed.tool_name,
                    "identity": parsed.identity,
                    **({"claimed_identity": claimed} if claimed else {}),
                    **result.as_dict(),
                },
            )
            return result
    except DatabaseError:
        # the job's state cannot be read (or the journal cannot be written): never allow
        return _refusal(reasons.EMERGENCY_STOP_STATE_UNAVAILABLE, replace(parsed, job_id=job_id))
