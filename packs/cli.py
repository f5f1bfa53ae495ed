"""`gait pack …` and `gait keys …` verbs (Gait-compatible flags, exit codes and JSON output).

pack verify: 0 verified (signed by a trusted key, or accepted with --allow-unsigned), 2 verification
failed, 6 bad input (not a zip, hostile zip, bad flags).
pack diff: 0 identical, 2 different, 6 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gaitweb.cli import add_json_flag, run_handler
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import EXIT_OK, EXIT_VERIFY_FAILED, InvalidInput
from packs import keys, services


def _actor(args: Any) -> Actor:
    return Actor.system(getattr(args, "actor", None) or "cli")


def _public_keys(paths: list[str] | None) -> list[Any]:
    out = []
    for path in paths or []:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise InvalidInput(
                reasons.PUBLIC_KEY_FILE_NOT_FOUND, f"no such file: {path}", details={"path": path}
            ) from None
        except OSError as exc:
            raise InvalidInput(
                reasons.PUBLIC_KEY_FILE_UNREADABLE,
                f"cannot read {path}: {exc}",
                details={"path": path},
            ) from None
        out.append(keys.public_key_parse(data, source=path))
    return out


def _build(args: Any) -> tuple[int, dict[str, Any]]:
    if args.type != services.PACK_TYPE_JOB:
        raise InvalidInput(
            reasons.PACK_TYPE_UNSUPPORTED, f"gaitweb builds job packs, not {args.type!r} packs"
        )
    result = services.pack_build(actor=_actor(args), job_id=args.source)
    pack = result.pack
    out = Path(args.out) if args.out else Path(f"pack_{pack.pack_id}.zip")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(bytes(pack.data))
    except OSError as exc:
        raise InvalidInput(
            reasons.PACK_OUTPUT_UNWRITABLE, f"cannot write {out}: {exc}", details={"path": str(out)}
        ) from None
    signed = f"signed by {pack.key_id[:16]}" if pack.key_id else "unsigned"
    return EXIT_OK, {
        "job_id": pack.job.job_id,
        "pack": services.pack_as_dict(pack),
        "created": result.created,
        "path": str(out),
        "summary": f"pack {pack.pack_id} ({pack.size} bytes, {signed}) written to {out}",
    }


def _verify(args: Any) -> tuple[int, dict[str, Any]]:
    if args.allow_unsigned and args.require_signature:
        raise InvalidInput(
            reasons.VERIFY_OPTIONS_CONFLICT,
            "--require-signature and --allow-unsigned contradict each other",
        )
    public_keys = _public_keys(args.public_key)
    result = services.pack_verify(
        source=args.file, allow_unsigned=args.allow_unsigned, public_keys=public_keys
    )
    payload = {"path": args.file, **result.as_dict()}
    if result.accepted_unsigned:
        verdict = f"ACCEPTED UNSIGNED ({'; '.join(result.notes)})"
    else:
        verdict = "verified" if result.ok else "FAILED"
    problems = "" if result.ok else ": " + ", ".join(e["code"] for e in result.errors)
    payload["summary"] = (
        f"{verdict}: pack {result.pack_id or '?'} of {result.source_ref or '?'} (signature {result.signature_status}, chain {'ok' if result.chain_ok else 'broken'}){problems}"
    )
    return (EXIT_OK if result.ok else EXIT_VERIFY_FAILED), payload


def _inspect(args: Any) -> tuple[int, dict[str, Any]]:
    info = services.pack_inspect(source=args.file)
    return EXIT_OK, {
        "path": args.file,
        **info,
        "summary": f"{info['pack_type']} pack {info['pack_id']} of {info['source_ref']}",
    }


def _diff(args: Any) -> tuple[int, dict[str, Any]]:
    diff = services.pack_diff(left=args.left, right=args.right)
    if diff["identical"]:
        summary = "identical"
    else:
        events = diff.get("events") or {}
        summary = (
            f"changed: +{len(diff['added_files'])} -{len(diff['removed_files'])} "
            f"~{len(diff['changed_files'])} files"
            + (f", ~{events['changed_count']} events" if events.get("changed_count") else "")
        )
    failing = [
        f"{side} ({', '.join(diff[f'{side}_verify']['reasons'][:3])})"
        for side in diff["failing_verification"]
    ]
    if failing:
        summary += "; fails verification: " + "; ".join(failing)
    # ok means the comparison ran; the exit code says whether the packs differ (0 only when
    # identical, content included)
    return (EXIT_OK if diff["identical"] else EXIT_VERIFY_FAILED), {
        "ok": True,
        **diff,
        "summary": summary,
    }


def _keys_init(args: Any) -> tuple[int, dict[str, Any]]:
    row = keys.key_init(actor=_actor(args), from_env=args.from_env)
    return EXIT_OK, {
        "key": keys.key_as_dict(row),
        "summary": f"signing key {row.key_id} is active ({row.private_location})",
    }


def _keys_rotate(args: Any) -> tuple[int, dict[str, Any]]:
    rotation = keys.key_rotate(actor=_actor(args))
    return EXIT_OK, {
        "key": keys.key_as_dict(rotation.active),
        "retired": [keys.key_as_dict(r) for r in rotation.retired],
        "summary": f"signing key {rotation.active.key_id} is active; {len(rotation.retired)} retired",
    }


def _keys_list(args: Any) -> tuple[int, dict[str, Any]]:
    rows = [keys.key_as_dict(r) for r in keys.key_list()]
    lines = [f"{r['key_id']} {r['status']}" for r in rows] or ["no signing keys (gait keys init)"]
    return EXIT_OK, {"keys": rows, "summary": "\n".join(lines)}


def _keys_export(args: Any) -> tuple[int, dict[str, Any]]:
    row = keys.key_get(key_id=args.key_id)
    text = keys.key_export_public(key_id=row.key_id, fmt=args.format)
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as exc:
            raise InvalidInput(
                reasons.KEY_OUTPUT_UNWRITABLE, f"cannot write {args.out}: {exc}"
            ) from None
    return EXIT_OK, {
        "key_id": row.key_id,
        "format": args.format,
        "public_key": text,
        "path": args.out,
        "summary": text.rstrip("\n"),
    }


def _verb(sub: Any, name: str, handler: Any, operation: str, help: str) -> Any:
    p = sub.add_parser(name, help=help)
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(handler, args, operation))
    return p


def register(groups: Any) -> None:
    pack = groups.add_parser("pack", help="build, verify, inspect and diff evidence packs")
    sub = pack.add_subparsers(dest="verb", required=True, parser_class=type(pack))

    p = _verb(
        sub, "build", _build, "pack_build", "build, store and write the evidence pack of a job"
    )
    p.add_argument("--type", default="job", help="pack type (job)")
    p.add_argument("--from", dest="source", required=True, help="job id")
    p.add_argument("--out", help="output file (default pack_<pack_id>.zip)")
    p.add_argument("--actor", help="who builds the pack (journaled)")

    p = _verb(sub, "verify", _verify, "pack_verify", "verify a pack offline")
    p.add_argument("file")
    p.add_argument(
        "--require-signature",
        dest="require_signature",
        action="store_true",
        help="the default (kept for Gait compatibility): only a trusted signature verifies",
    )
    p.add_argument(
        "--allow-unsigned",
        dest="allow_unsigned",
        action="store_true",
        help="accept a pack no trusted key signed; the result says so (accepted_unsigned)",
    )
    p.add_argument(
        "--public-key",
        dest="public_key",
        action="append",
        help="also trust this Ed25519 public key (PEM, base64 or hex; repeatable)",
    )

    p = _verb(sub, "inspect", _inspect, "pack_inspect", "summarize a pack without verifying it")
    p.add_argument("file")

    p = _verb(sub, "diff", _diff, "pack_diff", "compare two packs (exit 0 identical, 2 changed)")
    p.add_argument("left")
    p.add_argument("right")

    group = groups.add_parser("keys", help="manage the Ed25519 keys that sign packs")
    ksub = group.add_subparsers(dest="verb", required=True, parser_class=type(group))
    p = _verb(ksub, "init", _keys_init, "keys_init", "create the first signing key")
    p.add_argument(
        "--from-env",
        dest="from_env",
        action="store_true",
        help="register the key in $GAIT_SIGNING_KEY instead",
    )
    p.add_argument("--actor")
    p = _verb(
        ksub, "rotate", _keys_rotate, "keys_rotate", "retire the active key and create a new one"
    )
    p.add_argument("--actor")
    _verb(ksub, "list", _keys_list, "keys_list", "list signing keys")
    p = _verb(ksub, "export-public", _keys_export, "keys_export_public", "print a public key")
    p.add_argument(
        "--key-id", dest="key_id", help="key id or a unique prefix (default: the active key)"
    )
    p.add_argument("--format", default="base64", choices=["base64", "pem", "hex"])
    p.add_argument("--out", help="write it to this file too")
