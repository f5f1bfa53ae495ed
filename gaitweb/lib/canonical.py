"""Canonical JSON (RFC 8785 / JCS) and hashing, shared by the journal, the gate and packs."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import rfc8785

ZERO_HASH = "0" * 64

_ENCODE = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False, check_circular=False
).encode
_INT_LIMIT = 2**53 - 1


def _stdlib_exact(value: Any) -> bool:
    """True when the C ``json`` encoder writes ``value`` byte for byte as RFC 8785 does: no
    floats (ES6 number form differs), integers within +-(2**53 - 1), only str/int/bool/None/
    dict/list, and dict keys without characters above U+FFFF (JCS sorts keys by UTF-16 code
    units, Python by code points; the two orders agree on the BMP). String escaping is the same
    in both (checked against rfc8785 in tests/packs/test_spec.py)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_INT_LIMIT <= value <= _INT_LIMIT
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (not key.isascii() and any(ord(c) > 0xFFFF for c in key)):
                return False
            if not _stdlib_exact(item):
                return False
        return True
    if kind is list:
        return all(_stdlib_exact(item) for item in value)
    return False


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value`` (sorted keys, no whitespace, ES6 number form).

    The C encoder when it provably gives the same bytes (about ten times faster on journal
    events: this is on the checkpoint hot path and in every pack verify), rfc8785 otherwise."""
    if _stdlib_exact(value):
        try:
            return _ENCODE(value).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: rfc8785 refuses it with its own error
            pass
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
