"""Canonical JSON (RFC 8785 / JCS) and hashing, shared by the journal, the gate and packs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import rfc8785

ZERO_HASH = "0" * 64


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value`` (sorted keys, no whitespace, ES6 number form)."""
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """sha256 hex of the canonical JSON of ``value``."""
    return sha256_hex(canonical_json(value))


def iso_utc(moment: datetime | None) -> str | None:
    """A timestamp as it appears in hashed records: UTC, microseconds, trailing ``Z``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
