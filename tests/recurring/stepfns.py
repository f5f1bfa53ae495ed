"""Python steps for the recurring-job tests (listed in GAIT_STEP_MODULES for the workers)."""

from __future__ import annotations

import time
from typing import Any

from jobs.recurring import continuity_for
from jobs.steps import StepContext, step_function
from tests.stepfns import append_then_sleep


@step_function("recurring_counter")
def recurring_counter(ctx: StepContext) -> dict[str, Any]:
    """Counts runs of a ``resume`` template: the previous run's count plus one."""
    previous = continuity_for(ctx.job).get("previous_outputs", {}).get("count", {})
    return {"count": int(previous.get("count", 0)) + 1}


@step_function("recurring_record")
def recurring_record(ctx: StepContext, path: str, seconds: float = 0.0) -> dict[str, Any]:
    """Appends ``job start_time`` to ``path`` (one O_APPEND write), then sleeps ``seconds``."""
    append_then_sleep(ctx, path, f"{ctx.job_id} {time.time():.6f}\n", seconds)
    return {"done_at": time.time()}
