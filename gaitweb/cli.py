"""Plumbing shared by every `gait` CLI verb: JSON output, exit codes, error rendering.

Each app contributes a module with ``register(subparsers)`` (jobs/cli.py, approvals/cli.py,
packs/cli.py); the management command ``gait`` wires them together. A verb's handler takes the
parsed args and returns ``(exit_code, payload_dict)``; ``run_handler`` prints it (JSON with
``--json``, a short text line otherwise) and maps ``GaitError`` to the CLI error shape.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from gaitweb.lib import reasons
from gaitweb.lib.errors import EXIT_INTERNAL, EXIT_OK, GaitError, Interface, refusal_payload

log = logging.getLogger("gaitweb.cli")

Handler = Callable[[Any], tuple[int, dict[str, Any]]]


def add_json_flag(parser: Any) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def emit(payload: dict[str, Any], *, as_json: bool, stream: Any = None) -> None:
    stream = stream or sys.stdout
    if as_json:
        stream.write(json.dumps(payload, sort_keys=True, default=str) + "\n")
        return
    if not payload.get("ok", False):
        stream.write(f"error: {payload.get('error_code')}: {payload.get('error')}\n")
        if payload.get("hint"):
            stream.write(f"hint: {payload['hint']}\n")
        return
    summary = payload.get("summary")
    if summary:
        stream.write(f"{summary}\n")
    else:
        stream.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def error_payload(operation: str | None, exc: GaitError, **extra: Any) -> dict[str, Any]:
    """The CLI's refusal (gaitweb.lib.errors.refusal_payload) of ``operation``; an argument
    error has none (no verb ran)."""
    head = {"operation": operation} if operation else {}
    return {**head, **refusal_payload(exc, Interface.CLI), **extra}


def run_handler(handler: Handler, args: Any, operation: str) -> int:
    as_json = bool(getattr(args, "json", False))
    try:
        code, payload = handler(args)
    except GaitError as exc:
        extra = {"job_id": getattr(args, "id", None)} if getattr(args, "id", None) else {}
        emit(error_payload(operation, exc, **extra), as_json=as_json)
        return exc.exit_code
    except Exception as exc:  # the CLI's last resort: report, never a traceback on stdout
        log.exception("internal error in %s", operation)
        internal = GaitError(
            reasons.INTERNAL_ERROR,
            f"internal error: {type(exc).__name__}",
            hint="see the server log",
            retryable=True,
        )
        emit(error_payload(operation, internal), as_json=as_json)
        return EXIT_INTERNAL
    payload.setdefault("ok", code == EXIT_OK)
    payload.setdefault("operation", operation)
    emit(payload, as_json=as_json)
    return code
