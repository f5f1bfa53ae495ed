"""Workflows of the test suite (GAIT_STEP_MODULES in tests/settings.py; jobs.durable).

Side effects are counted outside the database: each call that has one appends a line
``<job> <call> <position> <attempt> <pid>`` to a file the test names, with one ``write`` on an
O_APPEND file, so a worker killed with -9 never leaves half a line.
"""

from __future__ import annotations

import os
import time
from typing import Any

from jobs.durable import CallFailed, ToolBlocked, ToolRejected, WorkflowContext, workflow


def effect(path: str, ctx: WorkflowContext, call: str, seconds: float = 0.0) -> str:
    key = ctx.idempotency_key
    line = f"{ctx.job_id} {call} {key.rsplit('/', 1)[-1]} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ctx.stopped:
        time.sleep(0.01)
    return key


@workflow("calls")
def calls(
    ctx: WorkflowContext, *, path: str, n: int = 50, seconds: float = 0.0, idempotent: bool = False
) -> dict[str, Any]:
    """``n`` calls, alternating steps and tools, each a counted side effect."""
    total = 0
    for i in range(n):
        name = f"c{i}"
        if i % 2:
            ctx.tool(
                "records.write",
                {"i": i},
                run=lambda i, name=name: effect(path, ctx, name, seconds) and i,
                idempotent=idempotent,
            )
        else:
            ctx.step(name, effect, path, ctx, name, seconds, idempotent=idempotent)
        total += i
    return {"total": total, "calls": n}


@workflow("calls-group-commit", group_commit=True)
def calls_group_commit(ctx: WorkflowContext, **kwargs: Any) -> dict[str, Any]:
    """``calls``, opted into group commit of its idempotent calls."""
    return calls(ctx, **kwargs)


@workflow("trivial")
def trivial(ctx: WorkflowContext, *, n: int = 2000, stop_at: int = 0) -> int:
    """``n`` trivial memoized steps (the benchmark's workload)."""
    total = 0
    for i in range(n):
        if stop_at and i == stop_at:
            ctx.wait_event("go")
        total += ctx.step(f"s{i}", int, i)
    return total


@workflow("trivial-group-commit", group_commit=True)
def trivial_group_commit(ctx: WorkflowContext, *, n: int = 2000) -> int:
    """The same, opted into group commit (idempotent calls written in batches)."""
    return sum(ctx.step(f"s{i}", int, i) for i in range(n))


@workflow("refund")
def refund(ctx: WorkflowContext, *, path: str, invoice: str, amount: int) -> dict[str, Any]:
    """Lookup, a plan, a refund the policy sends to approval (a rejection is answered), then
    a signal."""
    inv = ctx.step("lookup", lambda: effect(path, ctx, "lookup") and {"total": amount})
    ctx.checkpoint("plan", f"refund {inv['total']} EUR")
    try:
        receipt = ctx.tool(
            "payments.refund",
            {"invoice": invoice, "amount": inv["total"]},
            run=lambda invoice, amount: effect(path, ctx, "refund") and f"r-{invoice}-{amount}",
            targets=[{"kind": "account", "value": "DE02"}],
        )
    except ToolRejected as exc:
        return {"rejected": exc.reason, "by": exc.by}
    return {"receipt": receipt}


@workflow("blocked-tool")
def blocked_tool(ctx: WorkflowContext, *, path: str, catch: bool = True) -> dict[str, Any]:
    try:
        ctx.tool("shell.rm", {"path": "/"}, run=lambda path: effect(path, ctx, "rm"))
    except ToolBlocked as exc:
        if not catch:
            raise
        ctx.step("fallback", effect, path, ctx, "fallback")
        return {"blocked": exc.reasons}
    return {"blocked": []}


@workflow("flaky")
def flaky(ctx: WorkflowContext, *, path: str, fail: int, max_attempts: int = 3) -> Any:
    def attempt() -> str:
        effect(path, ctx, "flaky")
        with open(path) as f:
            if sum(1 for line in f if " flaky " in line) <= fail:
                raise RuntimeError("not yet")
        return "ok"

    try:
        return ctx.step(
            "flaky",
            attempt,
            retry={"max_attempts": max_attempts, "initial_interval": 0.1, "backoff": 1.0},
        )
    except CallFailed as exc:
        return {"gave_up": exc.type}


@workflow("sleeper")
def sleeper(ctx: WorkflowContext, *, path: str, seconds: float = 0.5) -> dict[str, Any]:
    ctx.step("before", effect, path, ctx, "before")
    t0 = ctx.now()
    ctx.sleep("nap", seconds)
    reply = ctx.wait_event("reply", timeout="1h")
    ctx.step("after", effect, path, ctx, "after")
    return {"reply": reply, "t0": t0.isoformat(), "uuid": ctx.uuid(), "r": ctx.random()}


@workflow("changes")
def changes(ctx: WorkflowContext, *, path: str) -> str:
    """Its second call's name depends on a file: the test changes "the code" under a parked job."""
    ctx.step("first", effect, path, ctx, "first")
    ctx.wait_event("go")
    second = open(path + ".name").read().strip() if os.path.exists(path + ".name") else "second"
    ctx.step(second, effect, path, ctx, second)
    return "done"


@workflow("versioned", version="1")
def versioned_v1(ctx: WorkflowContext) -> str:
    ctx.wait_event("go")
    return "v1"


@workflow("versioned", version="2")
def versioned_v2(ctx: WorkflowContext) -> str:
    ctx.wait_event("go")
    return "v2"
