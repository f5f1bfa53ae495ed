"""Input checks shared by every service: one place for the reason codes of a bad text field."""

from __future__ import annotations

from typing import Any

from gaitweb.lib import reasons
from gaitweb.lib.errors import InvalidInput


def text_field(
    value: Any,
    field: str,
    *,
    max_len: int,
    bytes_: bool = False,
    required: bool = False,
    code: str = "",
) -> str:
    """``value`` stripped, or a refusal: ``invalid_field`` (not a string), ``missing_<field>``
    (empty but required), ``<field>_too_long`` (over ``max_len`` characters, or UTF-8 bytes
    with ``bytes_``, as Gait counts checkpoint summaries)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(
            reasons.INVALID_FIELD, f"{field} must be a string", details={"field": field}
        )
    value = value.strip()
    if required and not value:
        raise InvalidInput(
            reasons.for_field(reasons.FIELD_MISSING, field),
            f"{field} is required",
            details={"field": field},
        )
    size = len(value.encode("utf-8")) if bytes_ else len(value)
    if size > max_len:
        unit = "bytes" if bytes_ else "characters"
        raise InvalidInput(
            code or reasons.for_field(reasons.FIELD_TOO_LONG, field),
            f"{field} is longer than {max_len} {unit}",
            details={"field": field, f"max_{unit}": max_len},
        )
    return value
