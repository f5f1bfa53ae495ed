"""One error type for every refusal, with a stable reason code (gaitweb.lib.reasons).

Services raise ``GaitError``; each interface shows it in its own shape, all built here on
``GaitError.as_dict()`` (code, message, details) with the interface's own hint:

- ``api_body``: the REST API's error envelope ``{"error": {code, message, details, hint}}``
  (with ``http_status``);
- ``refusal_payload``: ``{ok: false, error_code, error, retryable, hint, details}``, what the
  CLI prints (with ``operation`` and an exit code) and what an MCP tool returns;
- ``dashboard_refusal``: ``{code, message, details, hint}`` for an inline message.

The reason code is the contract: messages may change, codes may not.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# CLI exit codes (docs/cli.md)
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_VERIFY_FAILED = 2
EXIT_POLICY_BLOCKED = 3
EXIT_APPROVAL_REQUIRED = 4
EXIT_INVALID_INPUT = 6


class Interface(StrEnum):
    """Where a refusal is shown. Each interface names its own way out: the CLI its flags, the
    API its fields and endpoints, the dashboard its buttons, MCP its tools."""

    CLI = "cli"
    API = "api"
    DASHBOARD = "dashboard"
    MCP = "mcp"


@dataclass(frozen=True)
class Hints:
    """A hint per interface. ``default`` is for an interface without its own (or for a hint
    that is the same everywhere); an interface with no way out gets no hint rather than
    another interface's."""

    default: str = ""
    cli: str = ""
    api: str = ""
    dashboard: str = ""
    mcp: str = ""

    def for_(self, interface: Interface | str) -> str:
        return str(getattr(self, Interface(interface).value) or self.default)


class GaitError(Exception):
    http_status = 400
    exit_code = EXIT_INVALID_INPUT
    retryable = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        hint: str | Hints = "",
        http_status: int | None = None,
        exit_code: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.hints = Hints(default=hint) if isinstance(hint, str) else hint
        if http_status is not None:
            self.http_status = http_status
        if exit_code is not None:
            self.exit_code = exit_code
        if retryable is not None:
            self.retryable = retryable

    def hint_for(self, interface: Interface | str) -> str:
        """The hint as ``interface`` shows it (each renderer asks for its own)."""
        return self.hints.for_(interface)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class InvalidInput(GaitError):
    """Malformed or missing input (400)."""


class NotFound(GaitError):
    http_status = 404


class Conflict(GaitError):
    """The state does not allow this now: invalid transition, lost race, duplicate (409)."""

    http_status = 409


class Forbidden(GaitError):
    http_status = 403


class PolicyRefused(GaitError):
    """The policy or approval rules refuse the action (422)."""

    http_status = 422


class LimitExceeded(GaitError):
    http_status = 400


# --- one renderer per interface -------------------------------------------------------------------


def api_body(exc: GaitError) -> dict[str, Any]:
    """The REST API's error envelope (docs/api.md, "Errors")."""
    return {"error": {**exc.as_dict(), "hint": exc.hint_for(Interface.API)}}


def refusal_payload(exc: GaitError, interface: Interface) -> dict[str, Any]:
    """A refusal as the CLI prints it (``--json``) and an MCP tool returns it."""
    error = exc.as_dict()
    return {
        "ok": False,
        "error_code": error["code"],
        "error": error["message"],
        "retryable": exc.retryable,
        "hint": exc.hint_for(interface),
        "details": error["details"],
    }


def dashboard_refusal(exc: GaitError) -> dict[str, Any]:
    """A refusal as the dashboard's templates show it inline."""
    return {**exc.as_dict(), "hint": exc.hint_for(Interface.DASHBOARD)}
