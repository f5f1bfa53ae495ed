"""Step executors: what running one attempt of one step means for each kind (docs/engine.md).

The engine (jobs/engine/) owns the job: leases, checkpoints, retries and parking. This module
only runs an attempt and describes how it ended, as a ``StepResult``: ``succeeded`` with an
output, or ``failed`` / ``timed_out`` / ``cancelled`` with an error ``{type, message,
retryable}``. ``sleep``, ``wait_event`` and ``approval`` never run here: they park the job, which
the engine does itself.

Python steps call only functions registered with ``@step_function("name")``; the modules that
register them are listed in ``settings.GAIT["STEP_MODULES"]`` and imported on first use.

Command and http steps touch the machine (docs/security.md): just before an attempt, the
executor checks the deployment's switches and the admin's allow-lists again (jobs.allowlists),
resolves secret references (jobs.secret_store), and every string the attempt stores passes
through the attempt's ``Redactor``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings

from gaitweb.lib import reasons
from gaitweb.lib.errors import GaitError
from jobs import egress
from jobs.allowlists import allowlists_load, command_authorize
from jobs.procwatch import GroupWatchdog, die_with_parent
from jobs.secret_store import Redactor, SecretMissing, credential_like

log = logging.getLogger("gaitweb.engine")

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
            for module in _gait("STEP_MODULES", []):
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
    # set by a running command: its stdout/stderr tails so far (redacted)
    live_output: Callable[[], tuple[str, str]] | None = None

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


def run_python(ctx: StepContext, *, timeout: float, secrets: Redactor) -> StepResult:
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
    """Reads a pipe to the end, keeping only the last ``limit`` bytes (plus ``margin``: the
    longest secret, so that redaction sees whole values before the tail is cut)."""

    def __init__(self, pipe: Any, limit: int, margin: int = 0) -> None:
        self.pipe = pipe
        self.limit = limit
        self.keep = limit + margin
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
                if len(self.buf) > 2 * self.keep:
                    del self.buf[: len(self.buf) - self.keep]
        except (OSError, ValueError):
            pass

    def text(self, secrets: Redactor) -> str:
        self.thread.join(timeout=1.0)
        return self.snapshot(secrets)

    def snapshot(self, secrets: Redactor) -> str:
        """The tail so far, redacted like the final one (callable while the pipe is read)."""
        data = secrets.raw(bytes(self.buf[-self.keep :])) if self.keep else b""
        data = data[-self.limit :] if self.limit else b""
        return data.decode("utf-8", errors="replace")


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _refused(code: str, message: str, **extra: Any) -> StepResult:
    """An attempt the deployment does not allow (now): failed, never retried, and the job's
    ``failed`` event carries ``code`` as its reason (jobs.engine)."""
    return StepResult("failed", error=_error(code, message, False, refused=True, **extra))


def command_env(ctx: StepContext, secrets: Redactor) -> dict[str, str]:
    """The environment of a command: an allow-list, never the worker's own environment.
    ``COMMAND_PATH``, the worker's values of ``COMMAND_ENV_PASSTHROUGH`` (locale, time zone),
    the ``GAIT_*`` step variables, then the spec's ``env`` with its references resolved."""
    env = {"PATH": str(_gait("COMMAND_PATH"))}
    for name in _gait("COMMAND_ENV_PASSTHROUGH", []):
        if name in os.environ:
            env[name] = os.environ[name]
    env.setdefault("LANG", "C.UTF-8")
    env.update(
        {
            "GAIT_JOB_ID": ctx.job_id,
            "GAIT_STEP_NAME": ctx.step_name,
            "GAIT_STEP_INDEX": str(ctx.step_index),
            "GAIT_ATTEMPT": str(ctx.attempt),
            "GAIT_IDEMPOTENCY_KEY": ctx.idempotency_key,
        }
    )
    env.update(secrets.resolve_map(ctx.step["with"].get("env") or {}))
    return env


def run_command(ctx: StepContext, *, timeout: float, secrets: Redactor) -> StepResult:
    """Run argv (or ``sh -c command`` when ``shell`` is true) in its own process group, so a stop
    or a timeout kills the whole tree. Non-zero exit and timeout fail the attempt. The file run
    is the allow-listed one, read from the table now (``argv[0]`` stays what the spec says)."""
    w = ctx.step["with"]
    try:
        executable = command_authorize(w, lists=allowlists_load())
    except GaitError as exc:
        return _refused(
            exc.code, exc.message, **{k: v for k, v in exc.details.items() if k != "path"}
        )
    argv = ["sh", "-c", w["command"]] if w.get("shell") else list(w["argv"])
    env = command_env(ctx, secrets)
    tail_limit = int(_gait("LOG_TAIL_MAX_BYTES"))
    if ctx.stopped:
        return _cancelled()
    watchdog = GroupWatchdog()  # up before the command starts: no unguarded moment
    try:
        proc = subprocess.Popen(
            argv,
            executable=executable,
            cwd=w.get("cwd") or None,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own session and process group: killpg reaches the tree
            preexec_fn=die_with_parent(os.getpid()),  # and it dies with its worker (procwatch)
        )
    except (OSError, ValueError) as exc:
        watchdog.release()
        return StepResult(
            "failed",
            error=_error(
                "spawn_failed", f"cannot start {argv[0]!r}: {exc}", False, spawn_failed=True
            ),
        )
    watchdog.watch(proc.pid)  # the command's own session: its pid is its group
    margin = secrets.margin_bytes
    out, err = _Tail(proc.stdout, tail_limit, margin), _Tail(proc.stderr, tail_limit, margin)
    # what the engine's heartbeat saves on the StepRun while the command runs
    ctx.live_output = lambda: (out.snapshot(secrets), err.snapshot(secrets))
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
        ctx.live_output = None
        watchdog.release()
    stdout, stderr = out.text(secrets), err.text(secrets)
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


def run_http(ctx: StepContext, *, timeout: float, secrets: Redactor) -> StepResult:
    """One request with ``Idempotency-Key: <job_id>/<step_name>`` (the same on every retry),
    to a destination checked after DNS resolution and on every redirect (jobs.egress).
    5xx, 429 and network errors are retryable; other 4xx are not."""
    w = ctx.step["with"]
    headers = secrets.resolve_map(w.get("headers") or {})
    # dropped when a redirect leaves the origin: references and credential-like names
    credential = frozenset(
        k.lower()
        for k, v in (w.get("headers") or {}).items()
        if isinstance(v, Mapping) or credential_like(k)
    )
    for k, v in headers.items():
        if not v.isascii() or any(c in v for c in "\r\n\x00"):
            # only a secret's value can be: literals are checked at submit. The HTTP library's
            # error would quote the value, escaped where redaction cannot recognise it.
            return StepResult(
                "failed",
                error=_error(
                    "request_invalid",
                    f"the value of header {k} is not printable ASCII on one line",
                    False,
                ),
            )
    headers["Idempotency-Key"] = ctx.idempotency_key
    body: bytes | None = None
    if "json" in w:
        body = egress.json_body(w["json"])
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    elif "body" in w:
        body = w["body"].encode("utf-8")
    lists = allowlists_load()
    try:
        fetched = egress.request_checked(
            method=w["method"],
            url=w["url"],
            headers=headers,
            credential_headers=credential,
            body=body,
            timeout=timeout,
            allowed=lists.host_allowed,
            max_redirects=int(_gait("HTTP_MAX_REDIRECTS")),
            max_bytes=int(_gait("HTTP_RESPONSE_MAX_BYTES")),
        )
    except egress.EgressRefused as exc:
        return _refused(exc.code, str(exc), **exc.details)
    except httpx.TimeoutException as exc:
        return StepResult(
            "timed_out", error=_error("timeout", f"{type(exc).__name__}: {exc}", True)
        )
    except httpx.HTTPError as exc:
        return StepResult(
            "failed", error=_error("network_error", f"{type(exc).__name__}: {exc}", True)
        )
    resp = fetched.response()
    tail_limit = int(_gait("LOG_TAIL_MAX_BYTES"))
    text = secrets.text(resp.text)[-tail_limit:]
    code = resp.status_code
    if code >= 400:
        retryable = code >= 500 or code == 429
        return StepResult(
            "failed",
            error=_error(
                f"http_{code}",
                f"{w['method']} {fetched.url} answered {code}",
                retryable,
                status_code=code,
            ),
            stdout=text,
        )
    data: Any
    try:
        data = secrets.data(resp.json())
        if output_check(data) is not None:
            data = None
    except ValueError:
        data = None
    output = (
        {"status_code": code, "json": data}
        if data is not None
        else {"status_code": code, "text": text[-4096:]}
    )
    return StepResult("succeeded", output=output, stdout=text)


EXECUTORS: dict[str, Callable[..., StepResult]] = {
    "python": run_python,
    "command": run_command,
    "http": run_http,
}


def step_execute(ctx: StepContext, *, timeout: float) -> StepResult:
    """Run one attempt of a python, command or http step. Whatever it stores passes through the
    attempt's ``Redactor``; an exception from an executor becomes a failed, retryable attempt
    (its message and traceback redacted too)."""
    secrets = Redactor()
    try:
        result = EXECUTORS[ctx.step["kind"]](ctx, timeout=timeout, secrets=secrets)
    except SecretMissing as exc:
        result = _refused(reasons.SECRET_MISSING, str(exc), secret=exc.name)
    except Exception as exc:
        log.error(
            "step %s of %s raised %s",
            ctx.step_name,
            ctx.job_id,
            secrets.text(traceback.format_exc()),
        )
        result = StepResult("failed", error=_error(type(exc).__name__, str(exc) or repr(exc), True))
    if secrets:
        result.output = secrets.data(result.output)
        result.error = secrets.data(result.error)
        result.stdout, result.stderr = secrets.text(result.stdout), secrets.text(result.stderr)
    return result
