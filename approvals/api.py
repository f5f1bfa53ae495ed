"""The gate, approvals, policies and identity revocations over HTTP (docs/api.md): thin DRF views
over approvals/gate.py, approvals/services.py, approvals/policies.py and approvals/identities.py.

A gate verdict is an answer, not an error: ``block`` and ``require_approval`` come back as 200
with the verdict (the agent must not run the tool); refusals of the request itself (bad intent,
no permission, unknown policy) are error envelopes.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from approvals.gate import gate_dispatch, gate_evaluate_for_actor
from approvals.identities import (
    binding_as_dict,
    deployment_gate_status,
    identity_policy_clear,
    identity_policy_list,
    identity_policy_set,
    identity_policy_show,
    identity_revoke,
    policy_assigned_version,
)
from approvals.models import ApprovalRequest
from approvals.policies import policy_list, policy_resolve, policy_save
from approvals.policy_format import policy_parse
from approvals.selectors import approval_pending_list
from approvals.services import approval_decide, approval_expire_due
from gaitweb.api import StrictInput, StrictQuery, int_param
from gaitweb.api_views import ApiView
from gaitweb.lib import reasons
from gaitweb.lib.actors import Scope
from gaitweb.lib.canonical import iso_utc
from gaitweb.lib.errors import Interface, InvalidInput, NotFound
from jobs.selectors import job_id_check

READ, SUBMIT, APPROVE, ADMIN = Scope.READ, Scope.SUBMIT, Scope.APPROVE, Scope.ADMIN


class GateResultOut(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=["allow", "dry_run", "block", "require_approval"])
    allowed = serializers.BooleanField(help_text="true for allow and dry_run: the tool may run")
    reason_codes = serializers.ListField(child=serializers.CharField())
    violations = serializers.ListField(child=serializers.CharField())
    matched_rules = serializers.ListField(child=serializers.CharField())
    policy_digest = serializers.CharField(allow_blank=True)
    intent_digest = serializers.CharField(allow_blank=True)
    min_approvals = serializers.IntegerField()
    require_distinct_approvers = serializers.BooleanField()
    forbid_self_approval = serializers.BooleanField()


def _gate_out(result: Any) -> dict[str, Any]:
    data = result.as_dict()
    data["allowed"] = result.allowed
    return GateResultOut(data).data


class GateEvaluateIn(StrictInput):
    intent = serializers.DictField(
        child=serializers.JSONField(), help_text="{tool_name, args, targets[], context{}}"
    )
    policy = serializers.CharField(
        required=False,
        max_length=200,
        help_text="stored policy: NAME, NAME@N or digest (default: the one assigned to your identity)",
    )
    policy_source = serializers.CharField(
        required=False,
        max_length=256 * 1024,
        help_text="policy YAML to evaluate without storing it (like `gait gate eval --policy FILE`)",
    )


class GateDispatchIn(StrictInput):
    intent = serializers.DictField(child=serializers.JSONField())
    path = serializers.CharField(
        required=False, default="api", max_length=64, help_text="dispatch path named in the journal"
    )


class GateEvaluateView(ApiView):
    required_scopes = {"POST": READ}

    @extend_schema(
        operation_id="gate_evaluate",
        request=GateEvaluateIn,
        responses={200: GateResultOut},
        summary="Evaluate an intent against a policy (pure: writes nothing)",
        description="The intent's identity is the caller's: an intent naming another identity "
        "gets `block` (`intent_identity_mismatch`). Without `policy` or `policy_source` the "
        "policy assigned to the caller's identity decides (docs/security.md).",
    )
    def post(self, request: Request) -> Response:
        data = self.input(GateEvaluateIn)
        if data.get("policy") and data.get("policy_source"):
            raise InvalidInput(
                reasons.INVALID_POLICY_REF, "give either policy or policy_source, not both"
            )
        policy: Any = None
        if data.get("policy_source"):
            policy = policy_parse(data["policy_source"])
        elif data.get("policy"):
            policy = policy_resolve(ref=data["policy"], actor=self.actor)
        else:
            policy = policy_assigned_version(identity=self.actor.identity or "")
        result = gate_evaluate_for_actor(actor=self.actor, intent=data["intent"], policy=policy)
        return Response(_gate_out(result))


class GateDispatchView(ApiView):
    required_scopes = {"POST": SUBMIT}

    @extend_schema(
        operation_id="gate_dispatch",
        request=GateDispatchIn,
        responses={200: GateResultOut},
        summary="Ask the gate before a tool call of this job (journaled on the job)",
    )
    def post(self, request: Request, job_id: str) -> Response:
        job_id_check(job_id)
        data = self.input(GateDispatchIn)
        result = gate_dispatch(
            job_id=job_id, intent=data["intent"], actor=self.actor, path=data.get("path") or "api"
        )
        return Response(_gate_out(result))


# --- approvals ---------------------------------------------------------------------------------


class DecisionOut(serializers.Serializer):
    actor = serializers.CharField()
    decision = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    decided_at = serializers.CharField()


class ApprovalRequestOut(serializers.Serializer):
    request_id = serializers.CharField()
    job_id = serializers.CharField()
    status = serializers.CharField()
    summary = serializers.CharField(allow_blank=True)
    step_name = serializers.CharField(allow_blank=True)
    checkpoint_id = serializers.CharField(allow_blank=True)
    tool_name = serializers.CharField(allow_blank=True)
    intent = serializers.JSONField()
    gate_result = serializers.JSONField()
    required_approvals = serializers.IntegerField()
    approvals = serializers.IntegerField()
    distinct_approvers = serializers.BooleanField()
    escalated = serializers.BooleanField()
    expires_at = serializers.CharField(allow_null=True)
    on_expiry = serializers.CharField()
    created_at = serializers.CharField()
    decisions = DecisionOut(many=True)


def _request_dict(r: ApprovalRequest) -> dict[str, Any]:
    decisions = list(r.decisions.all())
    return {
        "request_id": r.request_id,
        "job_id": r.job.job_id,
        "status": r.status,
        "summary": r.summary,
        "step_name": r.step_name,
        "checkpoint_id": r.checkpoint_id,
        "tool_name": r.tool_name,
        "intent": r.intent,
        "gate_result": r.gate_result,
        "required_approvals": r.required_approvals,
        "approvals": sum(1 for d in decisions if d.decision == "approve"),
        "distinct_approvers": r.distinct_approvers,
        "escalated": r.escalated,
        "expires_at": iso_utc(r.expires_at),
        "on_expiry": r.on_expiry,
        "created_at": iso_utc(r.created_at),
        "decisions": [
            {
                "actor": d.actor,
                "decision": d.decision,
                "reason": d.reason,
                "decided_at": iso_utc(d.decided_at),
            }
            for d in decisions
        ],
    }


class ApprovalListQuery(StrictQuery):
    job_id = serializers.CharField(required=False, max_length=128)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=500)


class ApprovalListOut(serializers.Serializer):
    results = ApprovalRequestOut(many=True)


class ApprovalDecideIn(StrictInput):
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=4096, help_text="required to reject"
    )


class DecideOut(serializers.Serializer):
    request_id = serializers.CharField()
    job_id = serializers.CharField()
    status = serializers.CharField()
    summary = serializers.CharField(allow_blank=True, help_text="what the request asks")
    decision = serializers.CharField()
    approvals = serializers.IntegerField()
    required_approvals = serializers.IntegerField()
    completed = serializers.BooleanField()
    job_status = serializers.CharField()
    resume_error = serializers.DictField(
        allow_null=True,
        child=serializers.CharField(allow_blank=True),
        help_text="why the job did not resume after the last approval: code, message, hint",
    )


class ApprovalsView(ApiView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="approvals_pending",
        parameters=[ApprovalListQuery],
        responses={200: ApprovalListOut},
        summary="The reviewers' queue: pending approval requests, soonest expiry first",
    )
    def get(self, request: Request) -> Response:
        q = self.query(ApprovalListQuery)
        limit = int_param(request, "limit", default=100, lo=1, hi=500)
        rows = approval_pending_list(actor=self.actor, job_id=q.get("job_id") or None)[:limit]
        return Response(ApprovalListOut({"results": [_request_dict(r) for r in rows]}).data)


class ApprovalDecideView(ApiView):
    required_scopes = {"POST": APPROVE}

    @extend_schema(
        operation_id="approvals_decide",
        request=ApprovalDecideIn,
        responses={200: DecideOut},
        summary="Approve or reject a pending request; the last required approval resumes the job",
    )
    def post(self, request: Request, request_id: str) -> Response:
        data = self.input(ApprovalDecideIn)
        outcome = approval_decide(
            actor=self.actor,
            request_id=request_id,
            decision=data["decision"],
            reason=data.get("reason", ""),
        )
        return Response(DecideOut(outcome.as_dict(Interface.API)).data)


# --- policies ------------------------------------------------------------------------------------


class PolicyVersionOut(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField()
    digest = serializers.CharField()
    author = serializers.CharField(allow_blank=True)
    created_at = serializers.CharField()


class PolicyDetailOut(PolicyVersionOut):
    source = serializers.CharField()
    normalized = serializers.JSONField()


class PolicyListOut(serializers.Serializer):
    results = PolicyVersionOut(many=True)


class PolicySaveIn(StrictInput):
    name = serializers.CharField(max_length=128)
    source = serializers.CharField(
        max_length=256 * 1024, trim_whitespace=False, help_text="policy YAML (parsed strictly)"
    )
    description = serializers.CharField(required=False, allow_blank=True, max_length=512)


class PolicyDigestIn(StrictInput):
    source = serializers.CharField(max_length=256 * 1024, trim_whitespace=False)


class PolicyDigestOut(serializers.Serializer):
    policy_digest = serializers.CharField()
    default_verdict = serializers.CharField()
    rules = serializers.IntegerField()


def _version_dict(version: Any, *, full: bool = False) -> dict[str, Any]:
    data = {
        "name": version.policy.name,
        "version": version.version,
        "digest": version.digest,
        "author": version.author,
        "created_at": iso_utc(version.created_at),
    }
    if full:
        data |= {"source": version.source, "normalized": version.normalized}
    return data


class PoliciesView(ApiView):
    required_scopes = {"GET": READ, "POST": ADMIN}

    @extend_schema(
        operation_id="policies_list",
        responses={200: PolicyListOut},
        summary="Stored policies and their current versions",
    )
    def get(self, request: Request) -> Response:
        rows = [_version_dict(p.current) for p in policy_list(actor=self.actor) if p.current]
        return Response(PolicyListOut({"results": rows}).data)

    @extend_schema(
        operation_id="policies_save",
        request=PolicySaveIn,
        responses={201: PolicyDetailOut},
        summary="Store a policy (a new version if it changed; admins only)",
    )
    def post(self, request: Request) -> Response:
        data = self.input(PolicySaveIn)
        version = policy_save(
            actor=self.actor,
            name=data["name"],
            source=data["source"],
            description=data.get("description"),
        )
        version.refresh_from_db()
        return Response(PolicyDetailOut(_version_dict(version, full=True)).data, status=201)


class PolicyDetailView(ApiView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="policies_show",
        responses={200: PolicyDetailOut},
        summary="A stored policy by NAME, NAME@N or digest",
    )
    def get(self, request: Request, ref: str) -> Response:
        version = policy_resolve(ref=ref, actor=self.actor)
        return Response(PolicyDetailOut(_version_dict(version, full=True)).data)


class PolicyDigestView(ApiView):
    required_scopes = {"POST": READ}

    @extend_schema(
        operation_id="policies_digest",
        request=PolicyDigestIn,
        responses={200: PolicyDigestOut},
        summary="Digest of a policy (stable under reformatting)",
    )
    def post(self, request: Request) -> Response:
        policy = policy_parse(self.input(PolicyDigestIn)["source"])
        return Response(
            PolicyDigestOut(
                {
                    "policy_digest": policy.digest,
                    "default_verdict": policy.default_verdict,
                    "rules": len(policy.rules),
                }
            ).data
        )


# --- identities ----------------------------------------------------------------------------------


class RevokeIn(StrictInput):
    identity = serializers.CharField(max_length=256)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=512)


class RevokedOut(serializers.Serializer):
    identity = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    revoked_by = serializers.CharField(allow_blank=True)
    revoked_at = serializers.CharField()


class IdentityRevocationsView(ApiView):
    required_scopes = {"POST": ADMIN}

    @extend_schema(
        operation_id="identities_revoke",
        request=RevokeIn,
        responses={201: RevokedOut},
        summary="Revoke an agent identity (admins only): its dispatches, submits and resumes are refused",
    )
    def post(self, request: Request) -> Response:
        data = self.input(RevokeIn)
        row = identity_revoke(
            actor=self.actor, identity=data["identity"], reason=data.get("reason", "")
        )
        out = {
            "identity": row.identity,
            "reason": row.reason,
            "revoked_by": row.revoked_by,
            "revoked_at": iso_utc(row.revoked_at),
        }
        return Response(RevokedOut(out).data, status=201)


class IdentityPolicyIn(StrictInput):
    identity = serializers.CharField(max_length=256)
    policy = serializers.CharField(max_length=128, help_text="a stored policy, by name")
    may_request = serializers.ListField(
        child=serializers.CharField(max_length=128),
        required=False,
        default=list,
        max_length=50,
        help_text="stricter stored policies the identity may ask for instead",
    )


class IdentityPolicyOut(serializers.Serializer):
    identity = serializers.CharField()
    source = serializers.ChoiceField(
        choices=["identity", "default", "none"],
        help_text="identity: its own binding; default: GAIT_DEFAULT_POLICY; none: ungated",
    )
    policy = serializers.CharField(allow_null=True)
    policy_digest = serializers.CharField(allow_null=True)
    may_request = serializers.ListField(child=serializers.CharField())
    assigned_by = serializers.CharField(allow_blank=True, required=False)
    updated_at = serializers.CharField(allow_null=True, required=False)


class IdentityPolicyListOut(serializers.Serializer):
    default_policy = serializers.CharField(allow_blank=True)
    gate = serializers.DictField(child=serializers.JSONField())
    results = IdentityPolicyOut(many=True)


class IdentityPoliciesView(ApiView):
    required_scopes = {"GET": ADMIN, "POST": ADMIN}

    @extend_schema(
        operation_id="identity_policies_list",
        responses={200: IdentityPolicyListOut},
        summary="The policy bound to each identity, the deployment default and whether the deployment is gated (admins)",
    )
    def get(self, request: Request) -> Response:
        rows = [binding_as_dict(r) for r in identity_policy_list(actor=self.actor)]
        gate = deployment_gate_status()
        out = {"default_policy": gate["default_policy"], "gate": gate, "results": rows}
        return Response(IdentityPolicyListOut(out).data)

    @extend_schema(
        operation_id="identity_policies_set",
        request=IdentityPolicyIn,
        responses={200: IdentityPolicyOut},
        summary="Bind a stored policy to an identity (admins): its jobs are bound to it whatever they ask for",
    )
    def post(self, request: Request) -> Response:
        data = self.input(IdentityPolicyIn)
        row = identity_policy_set(
            actor=self.actor,
            identity=data["identity"],
            policy=data["policy"],
            may_request=data.get("may_request") or [],
        )
        return Response(IdentityPolicyOut(binding_as_dict(row)).data)


class IdentityPolicyDetailView(ApiView):
    required_scopes = {"GET": ADMIN, "DELETE": ADMIN}

    @extend_schema(
        operation_id="identity_policies_show",
        responses={200: IdentityPolicyOut},
        summary="The policy an identity's jobs are bound to, and where it comes from (admins)",
    )
    def get(self, request: Request, identity: str) -> Response:
        assignment = identity_policy_show(actor=self.actor, identity=identity)
        return Response(IdentityPolicyOut(assignment.as_dict()).data)

    @extend_schema(
        operation_id="identity_policies_clear",
        responses={204: None},
        summary="Remove an identity's binding (admins): it falls back to the default policy",
    )
    def delete(self, request: Request, identity: str) -> Response:
        self.input(None)  # no body: any field is unknown
        if not identity_policy_clear(actor=self.actor, identity=identity):
            raise NotFound(
                reasons.IDENTITY_POLICY_NOT_FOUND,
                f"identity {identity!r} has no policy of its own",
                details={"identity": identity},
            )
        return Response(status=204)


class ApprovalExpireOut(serializers.Serializer):
    expired = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))


class ApprovalExpireView(ApiView):
    required_scopes = {"POST": ADMIN}

    @extend_schema(
        operation_id="approvals_expire_due",
        request=None,
        responses={200: ApprovalExpireOut},
        summary="Apply the expiry fallback to overdue requests (admins)",
    )
    def post(self, request: Request) -> Response:
        self.input(None)
        return Response(ApprovalExpireOut({"expired": approval_expire_due(actor=self.actor)}).data)
