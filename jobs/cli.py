"""`gait job …` verbs (Gait-compatible flags and JSON output)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from approvals.policies import policy_binding_resolve
from approvals.services import job_decide
from gaitweb.cli import add_json_flag, run_handler
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import EXIT_OK, EXIT_VERIFY_FAILED, Interface, InvalidInput
from gaitweb.lib.parsing import json_loads
from jobs import services
from jobs.cli_engine import register_job_verbs
from jobs.selectors import checkpoint_get, checkpoint_list, job_get, job_snapshot
from jobs.spec import spec_load


def _actor(args: Any, default: str = "cli") -> Actor:
    name = getattr(args, "actor", None) or default
    return Actor.system(name, identity=getattr(args, "identity", None) or name)


def _read_file(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(
            reasons.for_field(reasons.FIELD_FILE_NOT_FOUND, what),
            f"{what} file not found: {path}",
            details={"path": path},
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            reasons.for_field(reasons.FIELD_FILE_UNREADABLE, what),
            f"cannot read {what} file {path}: {exc}",
            details={"path": path},
        ) from None


def policy_binding_from_arg(value: str | None) -> services.PolicyBinding | None:
    """``--policy`` takes a YAML file (path) or the name of a policy managed in gaitweb."""
    if not value:
        return None

    return policy_binding_resolve(ref=value)


def revocations_from_file(path: str | None) -> set[str]:
    """Revocation files: a JSON array, a JSON object with ``revoked_identities``, or one identity
    per line with ``#`` comments."""
    if not path:
        return set()
    text = _read_file(path, "revocations")
    stripped = text.strip()
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            data = json_loads(stripped, what="the revocations file")
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                reasons.INVALID_REVOCATIONS_FILE, f"revocations file is not valid JSON: {exc}"
            ) from None
        if isinstance(data, dict):
            data = data.get("revoked_identities")
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise InvalidInput(
                reasons.INVALID_REVOCATIONS_FILE,
                "a JSON revocations file must be an array of strings or an object with revoked_identities",
            )
        return {x.strip() for x in data if x.strip()}
    out = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(line)
    return out


def _labels(values: list[str] | None) -> dict[str, str]:
    labels = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(reasons.INVALID_LABELS, f"labels are key=value, got {item!r}")
        labels[key] = value
    return labels


def _spec_from_file(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None

    return spec_load(_read_file(path, "spec"), source=path)


def _ok(operation: str, job: Any, **extra: Any) -> tuple[int, dict[str, Any]]:
    snapshot = job_snapshot(job)
    payload = {"ok": True, "operation": operation, "job_id": job.job_id, "job": snapshot}
    payload["summary"] = f"{job.job_id}: {job.status} (revision {job.revision})"
    payload.update(extra)
    return EXIT_OK, payload


# --- handlers --------------------------------------------------------------------------------


def _submit(args: Any) -> tuple[int, dict[str, Any]]:
    job = services.job_submit(
        actor=_actor(args, default=args.identity or "cli"),
        job_id=args.id,
        identity=args.identity or "",
        policy=policy_binding_from_arg(args.policy),
        spec=_spec_from_file(args.spec),
        labels=_labels(args.label),
    )
    return _ok("submit", job)


def _status(args: Any) -> tuple[int, dict[str, Any]]:
    return _ok("status", job_get(actor=_actor(args), job_id=args.id))


def _checkpoint_add(args: Any) -> tuple[int, dict[str, Any]]:
    cp = services.job_checkpoint_add(
        actor=_actor(args),
        job_id=args.id,
        type=args.type,
        summary=args.summary,
        required_action=args.required_action or "",
        reason_code=args.reason_code or "",
    )
    return _ok(
        "checkpoint_add", job_get(actor=_actor(args), job_id=args.id), checkpoint=cp.as_dict()
    )


def _checkpoint_list(args: Any) -> tuple[int, dict[str, Any]]:
    job = job_get(actor=_actor(args), job_id=args.id)
    return _ok("checkpoint_list", job, checkpoints=[c.as_dict() for c in checkpoint_list(job=job)])


def _checkpoint_show(args: Any) -> tuple[int, dict[str, Any]]:
    cp = checkpoint_get(actor=_actor(args), job_id=args.id, checkpoint_id=args.checkpoint)
    return _ok("checkpoint_show", cp.job, checkpoint=cp.as_dict())


def _decide(decision: str) -> Any:
    """``job approve`` / ``job reject``: a decision on whatever the job waits on — its pending
    approval request (then ``decided.approval_request`` shows the N of M) or its own decision
    point (approvals.services.job_decide)."""

    def handler(args: Any) -> tuple[int, dict[str, Any]]:
        outcome = job_decide(
            actor=_actor(args), job_id=args.id, decision=decision, reason=args.reason or ""
        )
        return _ok(
            decision, outcome.job, decided=outcome.as_dict(Interface.CLI), summary=outcome.notice()
        )

    return handler


def _control(operation: str) -> Any:
    if operation in ("approve", "reject"):
        return _decide(operation)
    fn = {
        "pause": services.job_pause,
        "stop": services.job_stop,
        "cancel": services.job_cancel,
        "retry": services.job_retry,
    }[operation]

    def handler(args: Any) -> tuple[int, dict[str, Any]]:
        job = fn(actor=_actor(args), job_id=args.id, reason=args.reason or "")
        return _ok(operation, job)

    return handler


def _resume(args: Any) -> tuple[int, dict[str, Any]]:
    job = services.job_resume(
        actor=_actor(args),
        job_id=args.id,
        reason=args.reason or "",
        identity=args.identity or args.actor or None,
        policy=policy_binding_from_arg(args.policy),
        revoked_identities=revocations_from_file(args.identity_revocations),
        allow_env_mismatch=args.allow_env_mismatch,
        environment_fingerprint=args.env_fingerprint,
    )
    return _ok("resume", job)


def _inspect(args: Any) -> tuple[int, dict[str, Any]]:
    report = services.job_inspect(actor=_actor(args), job_id=args.id)
    job = report["job"]
    chain = report["chain"]
    payload = {
        "ok": bool(chain["ok"]),
        "operation": "inspect",
        "job_id": args.id,
        **report,
        "summary": f"{args.id}: {job['status']}, {len(report['checkpoints'])} checkpoints, "
        f"revision {job['revision']}, chain {'ok' if chain['ok'] else 'BROKEN'}",
    }
    if chain["ok"]:
        return EXIT_OK, payload
    # a broken journal is a failed verification, whichever verb found it: scripts that gate
    # on `gait job inspect` must not read a tampered job as healthy
    payload.update(
        error=chain.get("reason") or "the job's event chain does not verify",
        error_code="chain_broken",
        retryable=False,
        hint=f"first bad revision: {chain.get('first_bad_revision')}",
    )
    return EXIT_VERIFY_FAILED, payload


def _verify_chain(args: Any) -> tuple[int, dict[str, Any]]:
    report = services.job_verify_chain(actor=_actor(args), job_id=args.id)
    payload = {
        "ok": report.ok,
        "operation": "verify_chain",
        "job_id": args.id,
        "chain": report.as_dict(),
    }
    if report.ok:
        payload["summary"] = f"{args.id}: chain ok ({report.events_checked} events)"
        return EXIT_OK, payload
    payload.update(
        error=report.reason,
        error_code="chain_broken",
        retryable=False,
        hint=f"first bad revision: {report.first_bad_revision}",
    )
    return EXIT_VERIFY_FAILED, payload


# --- parser ----------------------------------------------------------------------------------


def _verb(sub: Any, name: str, handler: Any, operation: str, help: str) -> Any:
    p = sub.add_parser(name, help=help)
    p.add_argument("--id", required=True, help="job id")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(handler, args, operation))
    return p


def register(groups: Any) -> None:
    job = groups.add_parser("job", help="submit and control jobs")
    sub = job.add_subparsers(dest="verb", required=True, parser_class=type(job))

    p = sub.add_parser("submit", help="submit a job")
    p.add_argument("--id", help="job id (generated when omitted)")
    p.add_argument("--identity", default="", help="agent identity the job is bound to")
    p.add_argument("--policy", help="policy YAML file or the name of a managed policy")
    p.add_argument("--spec", help="job spec (YAML or JSON file) with steps for gaitweb's workers")
    p.add_argument("--label", action="append", help="key=value (repeatable)")
    p.add_argument("--actor", help="who submits (defaults to the identity)")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_submit, args, "submit"))

    _verb(sub, "status", _status, "status", "show a job's status")

    cp = sub.add_parser("checkpoint", help="add, list or show checkpoints")
    cpsub = cp.add_subparsers(dest="cpverb", required=True, parser_class=type(job))
    p = _verb(cpsub, "add", _checkpoint_add, "checkpoint_add", "add a checkpoint")
    p.add_argument(
        "--type", required=True, help="plan | progress | decision-needed | blocked | completed"
    )
    p.add_argument("--summary", required=True, help="≤ 512 bytes")
    p.add_argument(
        "--required-action", dest="required_action", help="for decision-needed checkpoints"
    )
    p.add_argument("--reason-code", dest="reason_code")
    p.add_argument("--actor")
    _verb(cpsub, "list", _checkpoint_list, "checkpoint_list", "list checkpoints")
    p = _verb(cpsub, "show", _checkpoint_show, "checkpoint_show", "show one checkpoint")
    p.add_argument("--checkpoint", required=True, help="checkpoint id, e.g. cp_0001")

    for name, help in [
        ("pause", "pause at the next step boundary"),
        ("stop", "emergency stop: preempt the running step and block later dispatches"),
        ("approve", "approve what the job waits on (its approval request, or its decision)"),
        ("reject", "reject what the job waits on (the job becomes blocked)"),
        ("cancel", "cancel the job"),
        ("retry", "retry a failed job from the failed step"),
    ]:
        p = _verb(sub, name, _control(name), name, help)
        p.add_argument("--actor")
        p.add_argument("--reason", default="")

    p = _verb(sub, "resume", _resume, "resume", "resume after the resume checks")
    p.add_argument("--actor")
    p.add_argument("--reason", default="")
    p.add_argument("--identity", help="identity asserting the resume (defaults to --actor)")
    p.add_argument("--policy", help="policy YAML file or managed policy name to re-evaluate")
    p.add_argument(
        "--identity-revocations", dest="identity_revocations", help="revoked identities file"
    )
    p.add_argument(
        "--identity-validation-source",
        dest="identity_validation_source",
        default="revocation_list",
        choices=["revocation_list"],
        help="where identity revocations come from (the file plus gaitweb's own list)",
    )
    p.add_argument("--allow-env-mismatch", dest="allow_env_mismatch", action="store_true")
    p.add_argument(
        "--env-fingerprint", dest="env_fingerprint", help="the current environment's fingerprint"
    )

    _verb(sub, "inspect", _inspect, "inspect", "job, checkpoints, latest events and chain status")
    _verb(sub, "verify-chain", _verify_chain, "verify_chain", "recompute the journal's hash chain")

    register_job_verbs(sub)
