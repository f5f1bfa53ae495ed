"""Hostile inputs shared by the tests of "every input is bounded" (docs/security.md)."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

# The "billion laughs" YAML alias bomb: 9**7 = 4.8 million strings from a few hundred bytes.
# Before aliases were refused, a spec like this took 2.5 s and ~290 MB to refuse.
_LEVELS = "abcdefg"


def alias_bomb(indent: str = "") -> str:
    lines = [f'{indent}a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip(_LEVELS, _LEVELS[1:], strict=False):
        lines.append(f"{indent}{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def policy_alias_bomb() -> str:
    return (
        "schema_id: gait.gate.policy\nschema_version: 1.0.0\ndefault_verdict: allow\n"
        + alias_bomb()
    )


def spec_alias_bomb() -> str:
    return (
        "steps:\n  - name: boom\n    kind: python\n    with:\n      function: echo\n"
        "      args:\n" + alias_bomb(indent="        ")
    )


def deep_json(levels: int = 20_000) -> str:
    return "[" * levels + "]" * levels


# What refusing hostile input may cost, measured as memory (machine-independent, unlike time):
# the alias bomb expanded took ~290 MB; refused, a whole request stays far below this.
REFUSAL_PEAK_BYTES = 64 * 1024 * 1024


def cheaply(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """(result or the exception raised, seconds, peak bytes allocated while it ran). Tests bound
    the peak, not the seconds: a busy machine makes any time bound flaky."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result: Any = fn()
    except Exception as exc:  # the refusal is the result
        result = exc
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak
