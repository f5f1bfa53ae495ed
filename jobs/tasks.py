"""django-q2 task entry points: thin wrappers over jobs.engine (docs/engine.md).

Enqueue them through ``jobs.enqueue.advance_enqueue`` / ``jobs.engine.sweep.sweep_kick`` rather
than directly: those pick the delayed broker and switch off result saving for the hot path.
"""

from __future__ import annotations

from typing import Any

from jobs.engine.runner import advance as engine_advance
from jobs.engine.sweep import sweep_kick as engine_sweep_kick
from jobs.engine.sweep import sweep_run


def advance(job_id: str, broker_row: int | None = None) -> str:
    return engine_advance(job_id, broker_row=broker_row)


def sweep(token: str, seq: int = 0) -> dict[str, Any]:
    return sweep_run(token, seq)


def sweep_kick() -> bool:
    return engine_sweep_kick()


def noop() -> None:
    """A task that does nothing: the benchmark's raw django-q2 baseline."""
    return None
