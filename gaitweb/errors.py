"""One error type for every refusal, with a stable reason code.

Services raise ``GaitError``; the CLI turns it into ``{ok: false, error_code, …}`` and an exit
code, the API into the error envelope and an HTTP status, the dashboard into an inline message.
The reason code is the contract: messages may change, codes may not.
"""

from __future__ import annotations

from typing import Any

# CLI exit codes (docs/cli.md)
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_VERIFY_FAILED = 2
EXIT_POLICY_BLOCKED = 3
EXIT_APPROVAL_REQUIRED = 4
EXIT_INVALID_INPUT = 6


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
        hint: str = "",
        http_status: int | None = None,
        exit_code: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.hint = hint
        if http_status is not None:
            self.http_status = http_status
        if exit_code is not None:
            self.exit_code = exit_code
        if retryable is not None:
            self.retryable = retryable

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
