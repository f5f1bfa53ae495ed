"""Python steps for the recurring-job tests (listed in GAIT_STEP_MODULES for the workers)."""

from __future__ import annotations

import os
import time
from typing import Any

from jobs.recurring import continuity_for
from jobs.steps import StepContext, step_function


@step_function("recurring_counter")
def recurring_counter(ctx: StepContext) -> dict[str, Any]:
    """Counts runs of a ``resume`` template: the previous run's count plus one."""
    previous = continuity_for(ctx.job).get("previous_outputs", {}).get("count", {})
    return {"count": int(previous.get("count", 0)) + 1}


@step_function("recurring_record")
def recurring_record(ctx: StepContext, path: str, seconds: float = 0.0) -> dict[str, Any]:
    """Appends ``job start_time`` to ``path`` (one O_APPEND write), then sleeps ``seconds``."""
    line = f"{ctx.job_id} {time.time():.6f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.stopped:
        time.sleep(0.02)
    return {"done_at": time.time()}
