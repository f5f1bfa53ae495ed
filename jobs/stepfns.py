"""The demo's python step functions (`make run`, examples/, docs/engine.md).

Registered only in demo mode (``GAIT_DEMO``, which `make run` / `manage.py up` turn on): a
deployment registers its own with ``@step_function("name")`` in a module listed in
``GAIT_STEP_MODULES``, and nothing else is callable. These are deliberately small and touch
nothing outside the job: each shows one behaviour of the engine.
"""

from __future__ import annotations

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
