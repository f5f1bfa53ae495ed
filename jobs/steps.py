"""Step executors: what running one attempt of one step means for each kind (docs/engine.md).

The engine (jobs/engine.py) owns the job: leases, checkpoints, retries and parking. This module
only runs an attempt and describes how it ended, as a ``StepResult``: ``succeeded`` with an
output, or ``failed`` / ``timed_out`` / ``cancelled`` with an error ``{type, message,
retryable}``. ``sleep``, ``wait_event`` and ``approval`` never run here: they park the job, which
the engine does itself.

Python steps call only functions registered with ``@step_function("name")``; the modules that
register them are listed in ``settings.GAIT["STEP_MODULES"]`` and imported on first use.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

StepFunction = Callable[..., Any]
_REGISTRY: dict[str, StepFunction] = {}


def _gait(name: str, default: Any = None) -> Any:
    return settings.GAIT.get(name, default)  # type: ignore[attr-defined]


_modules_loaded = False
_load_lock = threading.Lock()


def step_function(name: str) -> Callable[[StepFunction], StepFunction]:
    """Register ``fn`` as the python step ``name``. It is called as ``fn(ctx, **args)`` with a
    ``StepContext`` and the step's ``with.args``, and returns a JSON-serializable output."""

    def register(fn: StepFunction) -> StepFunction:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not fn and existing.__qualname__ != fn.__qualname__:
            raise ValueError(
                f"python step function {name!r} is already registered by {existing.__module__}"
            )
        _REGISTRY[name] = fn
        return fn

    return register


def _load_step_modules() -> None:
    global _modules_loaded
    if _modules_loaded:
        return
    with _load_lock:
        if not _modules_loaded:
            for module in _gait("STEP_MODULES", ["jobs.stepfns"]):
                importlib.import_module(module)
            _modules_loaded = True


def step_function_get(name: str) -> StepFunction | None:
    _load_step_modules()
    return _REGISTRY.get(name)


def step_function_names() -> list[str]:
    _load_step_modules()
    return sorted(_REGISTRY)


class StepError(Exception):
    """Raise from a python step to fail the attempt with a chosen error name; ``retryable=False``
    fails the job at once (reason ``step_non_retryable``)."""

    def __init__(self, message: str, *, type: str = "StepError", retryable: bool = True) -> None:
        super().__init__(message)
        self.type = type
        self.retryable = retryable


@dataclass
class StepContext:
    """What a python step sees. ``stopped`` turns true when the job is stopped, cancelled or the
    attempt timed out: long-running steps should check it and return early."""

    job: Any  # jobs.models.Job (a snapshot: do not save it)
    step: dict[str, Any]
    step_index: int
    attempt: int
    idempotency_key: str
    outputs: dict[str, Any]
    stop_event: threading.Event = field(default_factory=threading.Event)
    checkpoint_hook: Callable[[str, str], None] | None = None

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    @property
    def step_name(self) -> str:
        return str(self.step["name"])

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.step["with"].get("args", {}))

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    def checkpoint(self, summary: str, *, type: str = "progress") -> None:
        """Record a progress (or plan) checkpoint on the job's timeline."""
        if self.checkpoint_hook is not None:
            self.checkpoint_hook(type, summary)


@dataclass
class StepResult:
    status: str  # succeeded | failed | timed_out | cancelled
    output: Any = None
    error: dict[str, Any] | None = None
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def _error(type: str, message: str, retryable: bool, **extra: Any) -> dict[str, Any]:
    return {"type": type, "message": message[:2000], "retryable": retryable, **extra}


def _cancelled(message: str = "the attempt was preempted") -> StepResult:
    return StepResult("cancelled", error=_error("cancelled", message, False))


def output_check(output: Any) -> dict[str, Any] | None:
    """An error if ``output`` cannot be stored (not JSON, or over STEP_OUTPUT_MAX_BYTES)."""
    try:
        size = len(json.dumps(output, separators=(",", ":")).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        return _error(
            "output_not_json", f"the step's output is not JSON-serializable: {exc}", False
        )
    limit = int(_gait("STEP_OUTPUT_MAX_BYTES"))
    if size > limit:
        return _error(
            "output_too_large", f"the step's output is {size} bytes (limit {limit})", False
        )
    return None


# --- python ------------------------------------------------------------------------------------


def run_python(ctx: StepContext, *, timeout: float) -> StepResult:
    fn = step_function_get(ctx.step["with"]["function"])
    if fn is None:  # registered at submit, gone since (code changed): not worth retrying
        return StepResult(
            "failed",
            error=_error(
                "unknown_function",
                f"python step function {ctx.step['with']['function']!r} is not registered",
                False,
            ),
        )
    started = time.monotonic()
    try:
        output = fn(ctx, **ctx.args)
    except StepError as exc:
        return StepResult("failed", error=_error(exc.type, str(exc), exc.retryable))
    except Exception as exc:
        return StepResult("failed", error=_error(type(exc).__name__, str(exc) or repr(exc), True))
    if time.monotonic() - started > timeout:
        return StepResult(
            "timed_out",
            error=_error("timeout", f"the step ran longer than its {timeout:g}s timeout", True),
        )
    problem = output_check(output)
    if problem:
        return StepResult("failed", error=problem)
    return StepResult("succeeded", output=output)


# --- command -----------------------------------------------------------------------------------


class _Tail:
    """Reads a pipe to the end, keeping only the last ``limit`` bytes."""

    def __init__(self, pipe: Any, limit: int) -> None:
        self.pipe = pipe
        self.limit = limit
        self.buf = bytearray()
        self.total = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                chunk = (
                    self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536)
                )
                if not chunk:
                    break
                self.total += len(chunk)
                self.buf += chunk
                if len(self.buf) > 2 * self.limit:
                    del self.buf[: len(self.buf) - self.limit]
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        self.thread.join(timeout=1.0)
        data = bytes(self.buf[-self.limit :]) if self.limit else b""
        return data.decode("utf-8", errors="replace")


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_command(ctx: StepContext, *, timeout: float) -> StepResult:
    """Run argv (or ``sh -c command`` when ``shell`` is true) in its own process group, so a stop
    or a timeout kills the whole tree. Non-zero exit and timeout fail the attempt."""
    w = ctx.step["with"]
    argv = ["/bin/sh", "-c", w["command"]] if w.get("shell") else list(w["argv"])
    env = dict(os.environ)
    env.update(
        {
            "GAIT_JOB_ID": ctx.job_id,
            "GAIT_STEP_NAME": ctx.step_name,
            "GAIT_STEP_INDEX": str(ctx.step_index),
            "GAIT_ATTEMPT": str(ctx.attempt),
            "GAIT_IDEMPOTENCY_KEY": ctx.idempotency_key,
        }
    )
    env.update(w.get("env") or {})
    tail_limit = int(_gait("LOG_TAIL_MAX_BYTES"))
    if ctx.stopped:
        return _cancelled()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=w.get("cwd") or None,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own session and process group: killpg reaches the tree
        )
    except (OSError, ValueError) as exc:
        return StepResult(
            "failed",
            error=_error(
                "spawn_failed", f"cannot start {argv[0]!r}: {exc}", False, spawn_failed=True
            ),
        )
    out, err = _Tail(proc.stdout, tail_limit), _Tail(proc.stderr, tail_limit)
    deadline = time.monotonic() + timeout
    outcome = ""
    try:
        while True:
            if proc.poll() is not None:
                break
            if ctx.stop_event.wait(0.02):
                outcome = "cancelled"
            elif time.monotonic() >= deadline:
                outcome = "timed_out"
            if outcome:
                _killpg(proc)
                proc.wait()
                break
    finally:
        if proc.poll() is None:  # the engine itself is going down: leave nothing behind
            _killpg(proc)
            proc.wait()
    stdout, stderr = out.text(), err.text()
    if outcome == "cancelled":
        r = _cancelled("the command's process group was killed")
    elif outcome == "timed_out":
        r = StepResult(
            "timed_out",
            error=_error("timeout", f"the command ran longer than its {timeout:g}s timeout", True),
        )
    elif proc.returncode != 0:
        r = StepResult(
            "failed",
            error=_error(
                "non_zero_exit",
                f"exit status {proc.returncode}"
                + (f": {stderr.strip()[-300:]}" if stderr.strip() else ""),
                True,
                exit_code=proc.returncode,
            ),
        )
    else:
        r = StepResult("succeeded", output={"exit_code": 0, "stdout": stdout[-4096:]})
    r.stdout, r.stderr = stdout, stderr
    return r


# --- http --------------------------------------------------------------------------------------


def run_http(ctx: StepContext, *, timeout: float) -> StepResult:
    """One request with ``Idempotency-Key: <job_id>/<step_name>`` (the same on every retry).
    5xx, 429 and network errors are retryable; other 4xx are not."""
    import httpx

    w = ctx.step["with"]
    headers = dict(w.get("headers") or {})
    headers["Idempotency-Key"] = ctx.idempotency_key
    kwargs: dict[str, Any] = {"headers": headers}
    if "json" in w:
        kwargs["json"] = w["json"]
    elif "body" in w:
        kwargs["content"] = w["body"].encode("utf-8")
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            resp = client.request(w["method"], w["url"], **kwargs)
    except httpx.TimeoutException as exc:
        return StepResult(
            "timed_out", error=_error("timeout", f"{type(exc).__name__}: {exc}", True)
        )
    except httpx.HTTPError as exc:
        return StepResult(
            "failed", error=_error("network_error", f"{type(exc).__name__}: {exc}", True)
        )
    tail_limit = int(_gait("LOG_TAIL_MAX_BYTES"))
    text = resp.text[-tail_limit:]
    code = resp.status_code
    if code >= 400:
        retryable = code >= 500 or code == 429
        return StepResult(
            "failed",
            error=_error(
                f"http_{code}",
                f"{w['method']} {w['url']} answered {code}",
                retryable,
                status_code=code,
            ),
            stdout=text,
        )
    body: Any
    try:
        body = resp.json()
        if output_check(body) is not None:
            body = None
    except ValueError:
        body = None
    output = (
        {"status_code": code, "json": body}
        if body is not None
        else {"status_code": code, "text": text[-4096:]}
    )
    return StepResult("succeeded", output=output, stdout=text)


EXECUTORS: dict[str, Callable[..., StepResult]] = {
    "python": run_python,
    "command": run_command,
    "http": run_http,
}


def step_execute(ctx: StepContext, *, timeout: float) -> StepResult:
    """Run one attempt of a python, command or http step."""
    return EXECUTORS[ctx.step["kind"]](ctx, timeout=timeout)
