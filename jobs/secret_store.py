"""Secrets by reference (docs/security.md, "Secrets by reference").

A spec never holds a secret value: an http header or a command's env variable says
``{"secret": "BILLING_TOKEN"}``, and the worker resolves it when the step runs from its own
environment variable ``GAIT_SECRET_BILLING_TOKEN`` (the admin's store: set on the workers, never
on the spec's side). The value lives only in the executor's memory for that attempt: the
``Redactor`` that resolved it replaces it with ``[secret:BILLING_TOKEN]`` in everything the
attempt stores (stdout/stderr tails, output, error), and the StepRun's ``input`` keeps the
reference.

This module is a leaf: no models, no settings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

SECRET_ENV_PREFIX = "GAIT_SECRET_"
SECRET_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")

# reason codes (docs/security.md)

# Header names that carry credentials whatever their suffix; other names are judged by their
# words (``credential_like``).
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_CREDENTIAL_WORDS = frozenset(
    {
        "auth",
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "credential",
        "credentials",
        "apikey",
        "cookie",
        "session",
    }
)
_CREDENTIAL_SUFFIXES = ("token", "secret", "password", "passwd", "apikey")
# Part of a value registered for redaction on its own: the token of ``Bearer <token>``.
_TOKEN_PART_MIN = 8


def credential_like(name: str) -> bool:
    """Whether a header or environment variable named ``name`` carries a credential:
    ``Authorization``, ``Proxy-Authorization``, ``Cookie``, and names whose words (split at
    ``-`` and ``_``) include token, secret, password, auth, credential(s), apikey, session or
    cookie, or end in ``key`` (``X-Api-Key``, ``GITHUB_TOKEN``, ``AWS_SECRET_ACCESS_KEY``)."""
    low = name.lower()
    if low in _CREDENTIAL_HEADERS:
        return True
    words = [w for w in re.split(r"[-_]", low) if w]
    if not words:
        return False
    return (
        any(w in _CREDENTIAL_WORDS for w in words)
        or words[-1] == "key"
        or words[-1].endswith(_CREDENTIAL_SUFFIXES)
    )


def secret_ref(value: Any) -> str | None:
    """The secret name of a reference ``{"secret": NAME}``, or None for anything else."""
    if isinstance(value, Mapping) and set(value) == {"secret"}:
        name = value["secret"]
        return name if isinstance(name, str) else None
    return None


class SecretMissing(Exception):
    """A referenced secret is not set on this worker (the message names it, never a value)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"secret {name!r} is not in this worker's store (set {SECRET_ENV_PREFIX}{name})"
        )
        self.name = name


def secret_read(name: str) -> str:
    """The value of secret ``name`` from the worker's environment; an empty value is missing."""
    value = os.environ.get(f"{SECRET_ENV_PREFIX}{name}", "")
    if not SECRET_NAME_RE.match(name) or not value:
        raise SecretMissing(name)
    return value


class Redactor:
    """Resolves the references of one attempt and hides their values in what it stores."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # value -> secret name
        self._ordered: list[tuple[str, bytes, str, bytes]] = []

    def resolve(self, value: str | Mapping[str, Any]) -> str:
        """A literal as it is; a reference as its value, remembered for redaction."""
        name = secret_ref(value)
        if name is None:
            return str(value)
        secret = secret_read(name)
        self._remember(secret, name)
        parts = secret.split()
        if len(parts) > 1 and len(parts[-1]) >= _TOKEN_PART_MIN:
            self._remember(parts[-1], name)  # "Bearer <token>": the token alone is secret too
        return secret

    def resolve_map(self, values: Mapping[str, Any]) -> dict[str, str]:
        return {k: self.resolve(v) for k, v in values.items()}

    def _remember(self, secret: str, name: str) -> None:
        if secret in self._names:
            return
        self._names[secret] = name
        marker = f"[secret:{name}]"
        self._ordered.append((secret, secret.encode(), marker, marker.encode()))
        # longest first: a value that contains another is replaced whole
        self._ordered.sort(key=lambda item: -len(item[1]))

    def __bool__(self) -> bool:
        return bool(self._ordered)

    @property
    def margin_bytes(self) -> int:
        """The longest value in bytes: a tail kept this much longer than its limit can be
        redacted before it is cut, so no cut leaves half a secret behind."""
        return max((len(b) for _, b, _, _ in self._ordered), default=0)

    def text(self, text: str) -> str:
        for secret, _, marker, _ in self._ordered:
            if secret in text:
                text = text.replace(secret, marker)
        return text

    def raw(self, data: bytes) -> bytes:
        for _, secret, _, marker in self._ordered:
            if secret in data:
                data = data.replace(secret, marker)
        return data

    def data(self, value: Any) -> Any:
        """``value`` (JSON data) with every string, keys included, redacted."""
        if not self._ordered:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value
