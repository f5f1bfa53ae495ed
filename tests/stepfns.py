"""Python step functions of the test suite (GAIT_STEP_MODULES in tests/settings.py).

The demo's functions (jobs.stepfns) are registered here too, since examples/ and the demo seed
use them; the ones below exist only for tests: ``record`` writes to any path it is given, which
no deployment (nor the demo) should offer to whoever submits a spec.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jobs.stepfns  # noqa: F401  (registers the demo's functions)
from jobs.hardening import process_dumpable
from jobs.steps import StepContext, step_function


def append_then_sleep(ctx: StepContext, path: str, line: str, seconds: float) -> None:
    """One ``write`` of ``line`` on an O_APPEND file (concurrent writers never interleave),
    then ``seconds`` of sleep that ends early when the step is stopped."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.stopped:
        time.sleep(min(0.02, max(deadline - time.monotonic(), 0)))


@step_function("record")
def record(
    ctx: StepContext, path: str, seconds: float = 0.0, slow_attempts: int = 0
) -> dict[str, Any]:
    """A side effect the tests can count: appends ``job step attempt pid time`` to ``path``,
    then sleeps ``seconds`` (only on the first ``slow_attempts`` attempts, when that is set)."""
    if slow_attempts and ctx.attempt > slow_attempts:
        seconds = 0.0
    line = f"{ctx.job_id} {ctx.step_name} {ctx.attempt} {os.getpid()} {time.time():.6f}\n"
    append_then_sleep(ctx, path, line, seconds)
    return {"pid": os.getpid(), "step": ctx.step_name}


@step_function("wait_until_stopped")
def wait_until_stopped(ctx: StepContext, seconds: float = 60.0) -> dict[str, Any]:
    """Cooperative long step: returns as soon as ``ctx.stopped`` turns true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ctx.stopped:
            return {"stopped": True}
        time.sleep(0.02)
    return {"stopped": False}


@step_function("worker_facts")
def worker_facts(ctx: StepContext) -> dict[str, Any]:
    """What a worker process looks like from inside: its pid and whether it is dumpable."""
    return {"pid": os.getpid(), "dumpable": process_dumpable()}


@step_function("wait_for_file")
def wait_for_file(ctx: StepContext, path: str, seconds: float = 60.0) -> dict[str, Any]:
    """Holds its worker until ``path`` exists (the test decides when the step ends) or the step
    is stopped; ``<path>.started`` says it runs."""
    with open(f"{path}.started", "a"):
        pass
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.stopped:
        if os.path.exists(path):
            return {"released": True}
        time.sleep(0.01)
    return {"released": False, "stopped": ctx.stopped}


@step_function("stop_own_job")
def stop_own_job(ctx: StepContext) -> dict[str, Any]:
    """Stops the job it belongs to, then succeeds: the stop lands between this step and the
    next one."""
    from gaitweb.lib.actors import Actor
    from jobs.services import job_stop

    job_stop(actor=Actor.system("step-operator"), job_id=ctx.job_id, reason="from inside")
    return {"stopped_own_job": True}
