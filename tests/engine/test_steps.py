"""Step executors on their own: commands (exit codes, output tails, timeouts, process groups),
http (Idempotency-Key, which statuses retry) and python (registered functions only). What
commands and http steps may touch is tested in test_step_security.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from jobs.models import AllowedExecutable
from jobs.spec import spec_validate
from jobs.steps import StepContext, step_execute, step_function, step_function_get


def ctx_for(
    step_raw: dict[str, Any], attempt: int = 1, outputs: dict[str, Any] | None = None
) -> StepContext:
    step = spec_validate({"steps": [step_raw]})["steps"][0]
    return StepContext(
        job=SimpleNamespace(job_id="job-1"),
        step=step,
        step_index=0,
        attempt=attempt,
        idempotency_key=f"job-1/{step['name']}",
        outputs=outputs or {},
    )


def cmd(argv: list[str] | None = None, **w: Any) -> dict[str, Any]:
    with_ = {"argv": argv} if argv is not None else {}
    return {"name": "c", "kind": "command", "with": {**with_, **w}}


@pytest.fixture
def commands(allow_commands: Any) -> None:
    allow_commands("sh", "echo", "sleep", shell=True)


def test_a_command_that_exits_zero_succeeds_with_its_stdout(commands: None) -> None:
    r = step_execute(ctx_for(cmd(["sh", "-c", "echo out; echo err >&2"])), timeout=5)
    assert r.ok and r.output == {"exit_code": 0, "stdout": "out\n"} and r.stderr == "err\n"


def test_a_non_zero_exit_fails_the_attempt_as_retryable(commands: None) -> None:
    r = step_execute(ctx_for(cmd(["sh", "-c", "exit 3"])), timeout=5)
    assert (
        r.status == "failed"
        and r.error["type"] == "non_zero_exit"
        and r.error["exit_code"] == 3
        and r.error["retryable"]
    )


def test_argv_runs_without_a_shell_unless_asked(commands: None) -> None:
    r = step_execute(ctx_for(cmd(["echo", "$HOME", ";", "id"])), timeout=5)
    assert r.output["stdout"] == "$HOME ; id\n"
    r = step_execute(
        ctx_for(cmd(shell=True, command="echo $GAIT_IDEMPOTENCY_KEY | tr a-z A-Z")), timeout=5
    )
    assert r.output["stdout"] == "JOB-1/C\n"


def test_output_is_capped_keeping_the_tail(settings: Any, commands: None) -> None:
    settings.GAIT = {**settings.GAIT, "LOG_TAIL_MAX_BYTES": 1000}
    r = step_execute(ctx_for(cmd(["sh", "-c", "seq 1 100000"])), timeout=10)
    assert r.ok and len(r.stdout) == 1000 and r.stdout.endswith("99999\n100000\n")


def test_a_command_past_its_timeout_is_killed_with_its_children(commands: None) -> None:
    started = time.monotonic()
    r = step_execute(ctx_for(cmd(shell=True, command="sleep 30 & sleep 30; wait")), timeout=0.5)
    assert r.status == "timed_out" and r.error["retryable"]
    assert time.monotonic() - started < 3  # the backgrounded sleep held the pipe: it died too


def test_a_missing_executable_is_a_spawn_failure_that_does_not_retry(commands: None) -> None:
    AllowedExecutable.objects.create(name="tool", path="/nonexistent/tool")  # listed, since gone
    r = step_execute(ctx_for(cmd(["tool"])), timeout=5)
    assert r.error["type"] == "spawn_failed" and not r.error["retryable"]


def test_setting_stopped_kills_a_running_command_quickly(commands: None) -> None:
    ctx = ctx_for(cmd(["sleep", "60"]))
    threading.Timer(0.2, ctx.stop_event.set).start()
    started = time.monotonic()
    r = step_execute(ctx, timeout=60)
    assert r.status == "cancelled" and time.monotonic() - started < 1.0


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []
    status = 200

    def _answer(self) -> None:
        type(self).seen.append((self.command, self.headers.get("Idempotency-Key")))
        body = b'{"ok": true}'
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server(allow_http_host: Any) -> Iterator[tuple[str, type[_Recorder]]]:
    """A local server on the loopback, allow-listed (as an admin allow-lists an internal
    service: http steps may not reach the loopback otherwise)."""
    handler = type("Handler", (_Recorder,), {"seen": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    allow_http_host("127.0.0.1", server.server_address[1])
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def test_http_sends_the_same_idempotency_key_on_every_attempt(http_server: Any) -> None:
    url, handler = http_server
    step = {
        "name": "charge",
        "kind": "http",
        "with": {"method": "POST", "url": f"{url}/charge", "json": {"amount": 42}},
    }
    for attempt in (1, 2, 3):
        r = step_execute(ctx_for(step, attempt=attempt), timeout=5)
        assert r.ok and r.output == {"status_code": 200, "json": {"ok": True}}
    assert handler.seen == [("POST", "job-1/charge")] * 3


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (404, False), (400, False)]
)
def test_http_retries_5xx_and_429_but_not_other_4xx(
    http_server: Any, status: int, retryable: bool
) -> None:
    url, handler = http_server
    handler.status = status
    r = step_execute(ctx_for({"name": "h", "kind": "http", "with": {"url": url}}), timeout=5)
    assert (
        r.status == "failed"
        and r.error["type"] == f"http_{status}"
        and r.error["retryable"] is retryable
    )


def test_http_network_errors_are_retryable(allow_http_host: Any) -> None:
    allow_http_host("127.0.0.1", 9)  # the discard port: nothing listens
    r = step_execute(
        ctx_for({"name": "h", "kind": "http", "with": {"url": "http://127.0.0.1:9/"}}), timeout=2
    )
    assert r.status == "failed" and r.error["type"] == "network_error" and r.error["retryable"]


def test_python_steps_see_arguments_attempt_and_earlier_outputs() -> None:
    r = step_execute(
        ctx_for(
            {"name": "s", "kind": "python", "with": {"function": "sum_outputs"}},
            outputs={"a": {"sum": 2}, "b": {"sum": 5}},
        ),
        timeout=5,
    )
    assert r.output == {"sum": 7, "steps_seen": ["a", "b"]}
    r = step_execute(
        ctx_for(
            {"name": "f", "kind": "python", "with": {"function": "fail_n_times", "args": {"n": 2}}},
            attempt=2,
        ),
        timeout=5,
    )
    assert r.status == "failed" and r.error["type"] == "TransientError" and r.error["retryable"]
    r = step_execute(
        ctx_for(
            {"name": "f", "kind": "python", "with": {"function": "fail_n_times", "args": {"n": 2}}},
            attempt=3,
        ),
        timeout=5,
    )
    assert r.output == {"attempt": 3}


def test_a_python_output_that_is_not_json_fails_without_retry() -> None:
    @step_function("tests.returns_a_set")
    def returns_a_set(ctx: StepContext) -> Any:
        return {1, 2}

    assert step_function_get("tests.returns_a_set") is returns_a_set
    r = step_execute(
        ctx_for({"name": "p", "kind": "python", "with": {"function": "tests.returns_a_set"}}),
        timeout=5,
    )
    assert r.error["type"] == "output_not_json" and not r.error["retryable"]
