"""`gait gate …`, `gait policy …`, `gait identity …` and `gait approval …` verbs.

``gate eval`` mirrors Gait: exit 0 for allow / dry_run, 3 for block, 4 for require_approval,
6 for a bad policy or intent file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from approvals.gate import gate_evaluate
from approvals.identities import (
    binding_as_dict,
    deployment_gate_status,
    identity_policy_clear,
    identity_policy_list,
    identity_policy_set,
    identity_policy_show,
    identity_revoke,
)
from approvals.policies import policy_list, policy_resolve, policy_save
from approvals.policy_format import policy_parse
from approvals.selectors import approval_pending_list
from approvals.services import approval_decide, approval_expire_due
from gaitweb.cli import add_json_flag, run_handler
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor
from gaitweb.lib.canonical import iso_utc
from gaitweb.lib.errors import EXIT_OK, Interface, InvalidInput
from gaitweb.lib.parsing import json_loads


def _read_text(path: str, what: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            reasons.for_field(reasons.FIELD_UNREADABLE, what),
            f"cannot read {what} file {path}: {exc}",
        ) from None


def _read_intent(path: str) -> Any:
    text = _read_text(path, "intent")
    try:
        return json_loads(text, what=f"intent file {path}")
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            reasons.INTENT_INVALID,
            f"intent file {path} is not JSON: {exc.msg} at line {exc.lineno}",
        ) from None


def _actor(args: Any) -> Actor:
    # the local CLI runs as the operator of this installation (docs/cli.md), named for the journal
    return Actor.system(getattr(args, "actor", None) or "cli")


def _gate_eval(args: Any) -> tuple[int, dict[str, Any]]:
    policy = policy_parse(_read_text(args.policy, "policy"))
    result = gate_evaluate(intent=_read_intent(args.intent), policy=policy)
    payload = {
        "ok": True,
        **result.as_dict(),
        "summary": f"{result.verdict} ({', '.join(result.reason_codes)})",
    }
    return result.exit_code, payload


def _policy_digest(args: Any) -> tuple[int, dict[str, Any]]:
    policy = policy_parse(_read_text(args.file, "policy"))
    return EXIT_OK, {
        "policy_digest": policy.digest,
        "default_verdict": policy.default_verdict,
        "rules": len(policy.rules),
        "summary": policy.digest,
    }


def _version_dict(version: Any) -> dict[str, Any]:
    return {
        "name": version.policy.name,
        "version": version.version,
        "digest": version.digest,
        "author": version.author,
        "created_at": iso_utc(version.created_at),
    }


def _policy_list(args: Any) -> tuple[int, dict[str, Any]]:
    versions = [_version_dict(p.current) for p in policy_list(actor=_actor(args)) if p.current]
    lines = [f"{v['name']} v{v['version']} {v['digest']}" for v in versions]
    return EXIT_OK, {"policies": versions, "summary": "\n".join(lines) or "no policies"}


def _policy_show(args: Any) -> tuple[int, dict[str, Any]]:
    version = policy_resolve(ref=args.ref, actor=_actor(args))
    data = _version_dict(version) | {"normalized": version.normalized, "source": version.source}
    return EXIT_OK, data | {"summary": version.source}


def _policy_save(args: Any) -> tuple[int, dict[str, Any]]:
    version = policy_save(
        name=args.name, source=_read_text(args.file, "policy"), actor=_actor(args)
    )
    data = _version_dict(version)
    return EXIT_OK, data | {"summary": f"{data['name']} v{data['version']} {data['digest']}"}


def _identity_revoke(args: Any) -> tuple[int, dict[str, Any]]:
    revoked = identity_revoke(identity=args.identity, reason=args.reason, actor=_actor(args))
    return EXIT_OK, {
        "identity": revoked.identity,
        "reason": revoked.reason,
        "summary": f"revoked {revoked.identity}",
    }


def _identity_policy_set(args: Any) -> tuple[int, dict[str, Any]]:
    row = identity_policy_set(
        actor=_actor(args),
        identity=args.identity,
        policy=args.policy,
        may_request=args.may_request or [],
    )
    data = binding_as_dict(row)
    extra = f" (may also ask for {', '.join(data['may_request'])})" if data["may_request"] else ""
    return EXIT_OK, data | {
        "summary": f"jobs of {row.identity} are bound to {row.policy.name}{extra}"
    }


def _identity_policy_show(args: Any) -> tuple[int, dict[str, Any]]:
    data = identity_policy_show(actor=_actor(args), identity=args.identity).as_dict()
    if data["policy"] is None:
        summary = f"{args.identity}: UNGATED (no identity policy, no GAIT_DEFAULT_POLICY)"
    else:
        summary = f"{args.identity}: {data['policy']} ({data['source']})"
    return EXIT_OK, data | {"summary": summary}


def _identity_policy_list(args: Any) -> tuple[int, dict[str, Any]]:
    rows = [binding_as_dict(r) for r in identity_policy_list(actor=_actor(args))]
    gate = deployment_gate_status()
    lines = [f"{r['identity']} -> {r['policy']}" for r in rows]
    head = [gate["warning"]] if gate["warning"] else []
    head.append(f"default policy: {gate['default_policy'] or '(none)'}")
    return EXIT_OK, {
        "identity_policies": rows,
        "default_policy": gate["default_policy"],
        "gate": gate,
        "summary": "\n".join(head + lines),
    }


def _identity_policy_clear(args: Any) -> tuple[int, dict[str, Any]]:
    cleared = identity_policy_clear(actor=_actor(args), identity=args.identity)
    return EXIT_OK, {
        "identity": args.identity,
        "cleared": cleared,
        "summary": f"{args.identity}: binding removed"
        if cleared
        else f"{args.identity} had no policy of its own",
    }


def _approval_expire(args: Any) -> tuple[int, dict[str, Any]]:
    outcomes = approval_expire_due(actor=_actor(args))
    return EXIT_OK, {"expired": outcomes, "summary": f"{len(outcomes)} approval request(s) expired"}


def _approval_list(args: Any) -> tuple[int, dict[str, Any]]:
    rows = [
        {
            "request_id": r.request_id,
            "job_id": r.job.job_id,
            "summary": r.summary,
            "tool": r.tool_name,
            "approvals": r.approvals_count,
            "required_approvals": r.required_approvals,
            "escalated": r.escalated,
            "expires_at": iso_utc(r.expires_at),
        }
        for r in approval_pending_list(actor=_actor(args), job_id=args.job or None)
    ]
    lines = [
        f"{r['request_id']} {r['job_id']} {r['approvals']}/{r['required_approvals']} {r['summary']}"
        for r in rows
    ]
    return EXIT_OK, {
        "requests": rows,
        "summary": "\n".join(lines) or "no pending approval requests",
    }


def _approval_decide(args: Any) -> tuple[int, dict[str, Any]]:
    # a person decides: the name is theirs, so separation of duties sees who it is
    actor = Actor.system(args.actor, identity=args.actor)
    outcome = approval_decide(
        actor=actor, request_id=args.request_id, decision=args.decision, reason=args.reason
    )
    data = outcome.as_dict(Interface.CLI)
    return EXIT_OK, data | {
        "summary": f"{data['request_id']}: {data['status']} ({data['approvals']}/{data['required_approvals']}), job {data['job_status']}"
    }


def register(groups: Any) -> None:
    gate = groups.add_parser("gate", help="evaluate intents against policies")
    gate_verbs = gate.add_subparsers(dest="verb", required=True)
    p = gate_verbs.add_parser(
        "eval", help="evaluate one intent (exit 0 allow, 3 block, 4 approval)"
    )
    p.add_argument("--policy", required=True, help="policy YAML file")
    p.add_argument("--intent", required=True, help="intent JSON file ('-' for stdin)")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_gate_eval, a, "gate eval"))

    policy = groups.add_parser("policy", help="policy files and stored policies")
    policy_verbs = policy.add_subparsers(dest="verb", required=True)
    p = policy_verbs.add_parser(
        "digest", help="digest of a policy file (stable under reformatting)"
    )
    p.add_argument("file")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_policy_digest, a, "policy digest"))
    p = policy_verbs.add_parser("list", help="stored policies and their current versions")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_policy_list, a, "policy list"))
    p = policy_verbs.add_parser("show", help="a stored policy: NAME, NAME@VERSION or a digest")
    p.add_argument("ref")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_policy_show, a, "policy show"))
    p = policy_verbs.add_parser("save", help="store FILE as a new version of policy NAME")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--actor", default="cli", help="name recorded as the author")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_policy_save, a, "policy save"))

    identity = groups.add_parser("identity", help="agent identities")
    identity_verbs = identity.add_subparsers(dest="verb", required=True)
    p = identity_verbs.add_parser(
        "revoke", help="revoke an identity: its dispatches and resumes are refused"
    )
    p.add_argument("identity")
    p.add_argument("--reason", default="")
    p.add_argument("--actor", default="cli", help="name recorded as the revoker")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_identity_revoke, a, "identity revoke"))
    p = identity_verbs.add_parser(
        "policy", help="the policy an admin binds to an identity's jobs (docs/security.md)"
    )
    policy_verbs = p.add_subparsers(dest="policy_verb", required=True)
    p = policy_verbs.add_parser(
        "set", help="bind stored policy POLICY to IDENTITY's jobs, whatever they ask for"
    )
    p.add_argument("identity")
    p.add_argument("policy", help="a stored policy, by name")
    p.add_argument(
        "--may-request",
        dest="may_request",
        action="append",
        metavar="POLICY",
        help="a stricter stored policy the identity may ask for instead (repeatable)",
    )
    p.add_argument("--actor", default="cli", help="name recorded as the admin who assigned it")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_identity_policy_set, a, "identity policy set"))
    p = policy_verbs.add_parser("show", help="the policy IDENTITY's jobs are bound to, and why")
    p.add_argument("identity")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_identity_policy_show, a, "identity policy show"))
    p = policy_verbs.add_parser("list", help="every identity policy and the deployment default")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_identity_policy_list, a, "identity policy list"))
    p = policy_verbs.add_parser(
        "clear", help="remove IDENTITY's binding (it falls back to GAIT_DEFAULT_POLICY)"
    )
    p.add_argument("identity")
    p.add_argument("--actor", default="cli")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_identity_policy_clear, a, "identity policy clear"))

    approval = groups.add_parser("approval", help="approval requests")
    approval_verbs = approval.add_subparsers(dest="verb", required=True)
    p = approval_verbs.add_parser("list", help="pending approval requests")
    p.add_argument("--job", default="", help="only this job's requests")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_approval_list, a, "approval list"))
    p = approval_verbs.add_parser("decide", help="approve or reject a request as --actor")
    p.add_argument("request_id")
    p.add_argument("decision", choices=["approve", "reject"])
    p.add_argument(
        "--actor",
        required=True,
        help="the reviewer deciding (recorded; separation of duties applies)",
    )
    p.add_argument("--reason", default="")
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_approval_decide, a, "approval decide"))
    p = approval_verbs.add_parser(
        "expire-due", help="apply the expiry fallback to overdue requests"
    )
    add_json_flag(p)
    p.set_defaults(func=lambda a: run_handler(_approval_expire, a, "approval expire-due"))
