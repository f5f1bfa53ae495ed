"""Built-in python step functions for demos, examples and tests.

Real deployments register their own with ``@step_function("name")`` in a module listed in
``GAIT_STEP_MODULES``. These are deliberately small: each shows one behaviour of the engine.
"""

from __future__ import annotations

import os
import time
from typing import Any

from jobs.steps import StepContext, StepError, step_function


@step_function("noop")
def noop(ctx: StepContext) -> None:
    """Does nothing: the benchmark's trivial step."""
    return None


@step_function("echo")
def echo(ctx: StepContext, **kwargs: Any) -> dict[str, Any]:
    """Returns its arguments."""
    return kwargs


@step_function("add")
def add(ctx: StepContext, a: float = 0, b: float = 0) -> dict[str, Any]:
    return {"sum": a + b}


@step_function("sum_outputs")
def sum_outputs(ctx: StepContext, key: str = "sum") -> dict[str, Any]:
    """Adds ``key`` over the outputs of every earlier step: later steps read earlier outputs."""
    total = sum(
        o[key]
        for o in ctx.outputs.values()
        if isinstance(o, dict) and isinstance(o.get(key), int | float)
    )
    return {"sum": total, "steps_seen": sorted(ctx.outputs)}


@step_function("fail_n_times")
def fail_n_times(ctx: StepContext, n: int = 1, error: str = "TransientError") -> dict[str, Any]:
    """Fails its first ``n`` attempts (a flaky dependency), then succeeds."""
    if ctx.attempt <= n:
        raise StepError(f"attempt {ctx.attempt} of {n} planned failures", type=error)
    return {"attempt": ctx.attempt}


@step_function("fail")
def fail(ctx: StepContext, error: str = "BadRequest", retryable: bool = False) -> None:
    raise StepError(f"{ctx.step_name} failed on purpose", type=error, retryable=retryable)


@step_function("record")
def record(
    ctx: StepContext, path: str, seconds: float = 0.0, slow_attempts: int = 0
) -> dict[str, Any]:
    """A side effect the tests can count: appends ``job step attempt pid time`` to ``path`` (one
    ``write`` on an O_APPEND file, so concurrent writers never interleave), then sleeps
    ``seconds`` (only on the first ``slow_attempts`` attempts, when that is set)."""
    if slow_attempts and ctx.attempt > slow_attempts:
        seconds = 0.0
    line = f"{ctx.job_id} {ctx.step_name} {ctx.attempt} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.stopped:
        time.sleep(min(0.02, max(deadline - time.monotonic(), 0)))
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
