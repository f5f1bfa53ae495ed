"""Durable workflows in code: a registered function that runs as a job (docs/workflows.md).

::

    from jobs.durable import workflow

    @workflow("refund-agent")
    def refund_agent(ctx, *, invoice: str) -> dict:
        inv = ctx.step("fetch-invoice", fetch_invoice, invoice)      # runs once, memoized
        receipt = ctx.tool("payments.refund", {"invoice": invoice}, run=do_refund)  # gated
        ctx.sleep("cool-off", "10m")                                  # parks, no worker held
        return {"receipt": receipt, "reply": ctx.wait_event("customer-reply", timeout="2d")}

A job whose spec is ``{"workflow": "refund-agent", "input": {"invoice": "42"}}`` is normalized
(jobs.spec) to one step of kind ``workflow``; the engine (jobs.engine) claims, leases, parks,
wakes and recovers it like any job and hands that step to ``workflow_advance``, which runs the
function from the top with the job's recorded calls loaded in one query (jobs.replay decides
what each call does). Each call is a StepRun at its position (1, 2, 3 …; the workflow's own
result is the StepRun of step 0) and a ``step_succeeded`` event on the job's journal.

Parking unwinds the function with ``_Suspend`` (a ``BaseException``, so an agent's ``except
Exception`` does not swallow it); the next claim replays up to the call that parked.
"""

from __future__ import annotations

import json
import random as _random
import time
import uuid as _uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from approvals.gate import gate_evaluate, job_policy
from approvals.models import ApprovalRequest, ApprovalStatus, DecisionKind, PolicyVersion
from approvals.services import approval_request_create
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor
from gaitweb.lib.canonical import iso_utc
from gaitweb.lib.errors import GaitError, InvalidInput
from jobs.engine.attempts import record_started
from jobs.engine.lease import ENGINE_ACTOR, _Attempt, _LeaseLost, _preempt_reason
from jobs.engine.retries import _error_summary
from jobs.journal import event_append, event_build
from jobs.models import CheckpointType, Job, JobEvent, JobStatus, StepRun, StepRunStatus
from jobs.replay import (
    CallLog,
    CallRecord,
    Decision,
    nondeterminism_message,
    record_kind,
)
from jobs.services import checkpoint_write
from jobs.spec import (
    RETRY_DEFAULTS,
    SIGNAL_NAME_RE,
    _retry,
    duration_parse,
    step_backoff_seconds,
)
from jobs.states import FAIL_NON_RETRYABLE, FAIL_RUNTIME, FAIL_TIMEOUT
from jobs.steps import StepContext, StepError, StepResult, output_check

# workflow authors write `from jobs.durable import workflow` (docs/workflows.md)
from jobs.workflow_registry import workflow as workflow
from jobs.workflow_registry import workflow_versions

if TYPE_CHECKING:
    from jobs.engine.runner import _Runner  # the runner imports this module

S = JobStatus
R = StepRunStatus
# the most calls one job may record (each is a row and an event)
MAX_CALLS = 100_000
# group commit of idempotent calls: at most this many records wait for one statement
FLUSH_MAX = 500
# the latest replay in this process: calls replayed and the time.monotonic() at which the first
# new call was reached (bench/workflow_bench.py reads it; nothing else depends on it)
REPLAY_STATS: dict[str, float] = {}


def _gait(name: str) -> Any:
    return settings.GAIT[name]  # type: ignore[index]


# --- what the workflow sees ------------------------------------------------------------------------


class CallFailed(Exception):
    """A ``ctx.step`` / ``ctx.tool`` that gave up (its retries used up, or a non-retryable
    error), raised into the workflow. ``error`` is the recorded ``{type, message, …}``; it is
    the same exception on every replay, whatever the original exception's class was."""

    def __init__(self, name: str, error: Mapping[str, Any]) -> None:
        self.name = name
        self.error = dict(error)
        self.type = str(error.get("type", "error"))
        super().__init__(f"call {name} failed: {self.type}: {error.get('message', '')}")


class EventTimeout(CallFailed):
    """``ctx.wait_event`` saw no signal before its timeout."""


class ToolBlocked(Exception):
    """The policy gate blocked a tool call. ``reasons`` are the gate's reason codes."""

    def __init__(self, tool: str, gate: Mapping[str, Any]) -> None:
        self.tool = tool
        self.gate = dict(gate)
        self.reasons = [str(r) for r in gate.get("reason_codes") or []]
        super().__init__(f"the policy blocked tool {tool}: {', '.join(self.reasons)}")


class ToolRejected(Exception):
    """A reviewer rejected the approval a tool call needed. ``reason`` is the reviewer's."""

    def __init__(self, tool: str, reason: str, request_id: str = "", by: str = "") -> None:
        self.tool = tool
        self.reason = reason
        self.request_id = request_id
        self.by = by
        super().__init__(f"tool {tool} was rejected{f' by {by}' if by else ''}: {reason}")


class _Suspend(BaseException):
    """Unwinds the workflow when the job parks, yields or stops: ``outcome`` is what the
    engine's loop returns (``waiting``, ``decision_needed``, ``parked:paused`` …)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class _Nondeterministic(BaseException):
    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def _exception_from(record: CallRecord) -> Exception:
    error = record.error or {}
    kind = error.get("raised")
    if kind == "ToolBlocked":
        return ToolBlocked(record.name, error.get("gate") or {})
    if kind == "ToolRejected":
        return ToolRejected(
            record.name,
            str(error.get("message", "")),
            str(error.get("approval_request", "")),
            str(error.get("by", "")),
        )
    if kind == "EventTimeout":
        return EventTimeout(record.name, error)
    return CallFailed(record.name, error)


class WorkflowContext:
    """The ``ctx`` a workflow function receives. Every method is a durable call at the next
    position; on replay it returns (or raises) what was recorded."""

    def __init__(self, run: _WorkflowRun) -> None:
        self._run = run

    @property
    def job_id(self) -> str:
        return self._run.job.job_id

    @property
    def identity(self) -> str:
        return self._run.job.identity

    @property
    def idempotency_key(self) -> str:
        """The running call's key, ``<job_id>/<call name>/<position>``: the same on every
        retry and replay; pass it to the service the call talks to."""
        return self._run.current_key

    @property
    def stopped(self) -> bool:
        """True once the job is stopped or cancelled, or the running call passed its timeout."""
        attempt = self._run.runner.attempt
        return attempt is not None and attempt.ctx.stopped

    @property
    def replaying(self) -> bool:
        """True while the function is re-running calls it already recorded."""
        return self._run.position < self._run.log.last_position

    def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: Mapping[str, Any] | None = None,
        timeout: Any = None,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` once and memoize its JSON result. Idempotent by default
        (a crash before the result is recorded runs it again); ``idempotent=False`` records a
        ``started`` row first, and a crash mid-call asks a person instead."""
        return self._run.call(
            name,
            "step",
            {"args": _jsonable(list(args)), "kwargs": _jsonable(kwargs)},
            run=lambda: fn(*args, **kwargs),
            retry=retry,
            timeout=timeout,
            idempotent=idempotent,
        )

    def tool(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        run: Callable[..., Any],
        targets: Iterable[Mapping[str, Any]] = (),
        idempotent: bool = False,
        retry: Mapping[str, Any] | None = None,
        timeout: Any = None,
        approval: bool = False,
        risk_class: str = "",
    ) -> Any:
        """Ask the policy gate about tool ``name`` with ``args`` and ``targets`` (as this job's
        identity), then run ``run(**args)`` once and memoize its result. ``block`` raises
        ``ToolBlocked``; ``require_approval`` parks the job until a reviewer decides (a
        rejection raises ``ToolRejected``). ``approval=True`` asks a reviewer even when the
        policy allows the call; ``risk_class`` is the intent's ``context.risk_class``. Not idempotent by default: a crash mid-call asks a person
        whether to run it again."""
        call_args = dict(args or {})
        return self._run.call(
            name,
            "tool",
            {
                "args": _jsonable(call_args),
                "targets": _targets(targets),
                **({"risk_class": str(risk_class)[:64]} if risk_class else {}),
            },
            run=lambda: run(**call_args),
            retry=retry,
            timeout=timeout,
            idempotent=idempotent,
            approval=approval,
        )

    def checkpoint(self, type: str, summary: str) -> None:
        """A plan or progress checkpoint on the job's timeline, written once."""
        if type not in (CheckpointType.PLAN, CheckpointType.PROGRESS):
            raise InvalidInput(
                reasons.INVALID_CHECKPOINT_TYPE,
                "a workflow may add plan or progress checkpoints",
                details={"field": "type"},
            )
        self._run.checkpoint(type, str(summary)[:512])

    def sleep(self, name: str, duration: Any) -> None:
        """A durable timer: the job parks as ``waiting`` (no worker held) until it is due."""
        self._run.sleep(name, duration_parse(duration, f"sleep {name}", allow_zero=True))

    def wait_event(self, name: str, *, timeout: Any = None, signal: str | None = None) -> Any:
        """Park until ``job_signal`` delivers signal ``signal`` (default: ``name``); returns its
        payload. With a ``timeout``, raises ``EventTimeout`` when none arrived in time."""
        signal = signal or name
        if not SIGNAL_NAME_RE.match(signal):
            raise InvalidInput(reasons.INVALID_SIGNAL_NAME, f"{signal!r} is not a signal name")
        seconds = duration_parse(timeout, f"wait_event {name}") if timeout is not None else None
        return self._run.wait_event(name, signal, seconds)

    def now(self) -> datetime:
        """The current time, recorded: the same value on every replay."""
        return datetime.fromisoformat(self._run.value("now", lambda: iso_utc(timezone.now())))

    def uuid(self) -> str:
        return str(self._run.value("uuid", lambda: str(_uuid.uuid4())))

    def random(self) -> float:
        return float(self._run.value("random", _random.random))


def _jsonable(value: Any) -> Any:
    """What a call's arguments look like on its record: JSON, or their repr."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:2000]


def _targets(targets: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    out = []
    for t in targets:
        if not isinstance(t, Mapping) or not isinstance(t.get("value"), str):
            raise InvalidInput(
                reasons.INTENT_INVALID, "targets are objects with a kind and a value"
            )
        out.append({str(k): str(v) for k, v in t.items()})
    return out


# --- one run of the function (one slice of the job) -------------------------------------------------


class _WorkflowRun:
    """The function's run inside one engine slice, holding the engine runner's lease."""

    def __init__(self, runner: _Runner, step: dict[str, Any], log: CallLog) -> None:
        self.runner = runner
        self.step = step
        self.log = log
        self.position = 0
        self.current_key = ""
        self.slice_end = time.monotonic() + float(_gait("SLICE_SECONDS"))
        self.live_calls = 0  # calls run for real in this slice
        self.raised: tuple[Exception, CallRecord] | None = None
        self.policy: Any = None
        # idempotent calls recorded but not yet written (flush): group commit
        self.buffer: list[tuple[Any, ...]] = []
        self.flushed_at = 0.0  # time.monotonic() of the last write of the job's row
        self.flush_window = 0.0  # workflow_advance sets it (GAIT_WORKFLOW_FLUSH_SECONDS)
        runner.before_write = self.flush  # every other write of the runner flushes first

    @property
    def job(self) -> Job:
        job = self.runner.job
        assert job is not None
        return job

    # -- per call --

    def _next(self, name: str, kind: str, idempotent: bool) -> tuple[int, Decision]:
        if not isinstance(name, str) or not SIGNAL_NAME_RE.match(name):
            raise InvalidInput(
                reasons.INVALID_CALL_NAME,
                f"call names are 1-128 letters, digits and . _ : - (got {str(name)[:64]!r})",
            )
        self.position += 1
        n = self.position
        if n > MAX_CALLS:
            raise InvalidInput(
                reasons.WORKFLOW_TOO_MANY_CALLS, f"a workflow makes at most {MAX_CALLS} calls"
            )
        decision = self.log.decide(n, name, kind, idempotent=idempotent)
        if decision.action == "mismatch":
            recorded = decision.record
            assert recorded is not None
            raise _Nondeterministic(
                nondeterminism_message(n, recorded, name, kind),
                {
                    "position": n,
                    "recorded": recorded.name,
                    "recorded_kind": recorded.kind,
                    "called": name,
                    "called_kind": kind,
                },
            )
        if decision.action == "raise":
            assert decision.record is not None
            exc = _exception_from(decision.record)
            self.raised = (exc, decision.record)
            raise exc
        if decision.action not in ("replay",):
            if not self.live_calls and "first_new_at" not in REPLAY_STATS:
                REPLAY_STATS.update(replayed=n - 1, first_new_at=time.monotonic())
            self.current_key = f"{self.job.job_id}/{name}/{n}"
            self._boundary(name)
        return n, decision

    def _boundary(self, name: str) -> None:
        """Before a call runs for real: the checks the engine makes between spec steps."""
        runner = self.runner
        if runner.lease_lost:
            raise _LeaseLost
        status = runner.preempted or self.job.status
        if status != S.RUNNING:
            raise _Suspend(runner._blocked_by_control(status))
        job = self.job
        if job.deadline is not None and timezone.now() >= job.deadline:
            self._fail_job(
                FAIL_TIMEOUT,
                {"type": "deadline_exceeded", "message": "the job's deadline passed"},
                name,
            )
            raise _Suspend("failed")
        if self.live_calls and time.monotonic() >= self.slice_end:
            runner.release(reenqueue=True)
            raise _Suspend("yielded")

    def call(
        self,
        name: str,
        kind: str,
        input: dict[str, Any],
        *,
        run: Callable[[], Any],
        retry: Mapping[str, Any] | None,
        timeout: Any,
        idempotent: bool,
        approval: bool = False,
    ) -> Any:
        n, decision = self._next(name, kind, idempotent)
        if decision.action == "replay":
            return decision.output
        if decision.action == "in_doubt":
            self._in_doubt(n, name, decision)
        retry_opts = _retry(retry, f"call {name}.retry") if retry else dict(RETRY_DEFAULTS)
        max_timeout = float(_gait("STEP_TIMEOUT_MAX"))
        seconds = (
            duration_parse(timeout, f"call {name}.timeout", max_seconds=max_timeout)
            if timeout is not None
            else float(_gait("STEP_TIMEOUT_DEFAULT"))
        )
        record_input = {"kind": kind, **input}
        if kind == "tool":
            # what led to a tool call is on record before the tool runs (group commit)
            self.flush()
            gate = self._gate(n, name, input)
            if approval and gate["verdict"] == "allow":  # the code asks for a person anyway
                gate = {**gate, "verdict": "require_approval"}
                gate["reason_codes"] = [*gate.get("reason_codes", []), "tool_requires_approval"]
            record_input["gate"] = _gate_brief(gate)
            if gate["verdict"] == "block":
                self._tool_blocked(n, name, record_input, gate, decision.attempt)
            if gate["verdict"] == "require_approval":
                self._tool_approval(n, name, input, gate, record_input, decision.attempt)
            record_input["idempotent"] = idempotent
        return self._execute(n, name, record_input, run, decision, retry_opts, seconds, idempotent)

    def _execute(
        self,
        n: int,
        name: str,
        record_input: dict[str, Any],
        run: Callable[[], Any],
        decision: Decision,
        retry: dict[str, Any],
        timeout: float,
        idempotent: bool,
    ) -> Any:
        runner = self.runner
        job = self.job
        attempt = decision.attempt
        started_at = timezone.now()
        if job.deadline is not None:
            timeout = max(min(timeout, (job.deadline - started_at).total_seconds()), 0.001)
        run_id = (
            None if idempotent else self._record_started(n, name, attempt, record_input, started_at)
        )
        ctx = StepContext(
            job=job,
            step={"name": name, "kind": "python", "with": {}},
            step_index=n,
            attempt=attempt,
            idempotency_key=self.current_key,
            outputs={},
        )
        runner.attempt = _Attempt(ctx=ctx, deadline=time.monotonic() + timeout, run_id=run_id)
        self.live_calls += 1
        t0 = time.monotonic()
        error: dict[str, Any] | None = None
        status = R.FAILED
        try:
            output = run()
        except (_Suspend, _Nondeterministic, _LeaseLost):
            raise
        except GaitError as exc:
            error = {"type": exc.code, "message": exc.message[:2000], "retryable": False}
        except Exception as exc:
            retryable = exc.retryable if isinstance(exc, StepError) else True
            etype = exc.type if isinstance(exc, StepError) else type(exc).__name__
            error = {
                "type": etype,
                "message": (str(exc) or repr(exc))[:2000],
                "retryable": retryable,
            }
        finally:
            runner.attempt = None
        if runner.lease_lost:
            raise _LeaseLost
        if error is None:
            error = output_check(output)
            if error is None and time.monotonic() - t0 > timeout:
                error = {
                    "type": "timeout",
                    "message": f"the call ran longer than its {timeout:g}s timeout",
                    "retryable": True,
                }
                status = R.TIMED_OUT
        if error is None:
            self._write_success(n, name, attempt, record_input, output, started_at, run_id)
            return output
        if runner.preempted:
            self._preempted(n, name, attempt, record_input, started_at, run_id, error)
        return self._attempt_failed(
            n, name, attempt, record_input, started_at, run_id, error, status, decision, retry
        )

    # -- the hot path: one statement per recorded call --

    def _write_success(
        self,
        n: int,
        name: str,
        attempt: int,
        record_input: dict[str, Any],
        output: Any,
        started_at: datetime,
        run_id: int | None,
    ) -> None:
        """Record the call's success, its event and the job's new chain head in one statement
        guarded by the lease token and the revision (PostgreSQL: a data-modifying CTE that
        returns the job's status, so a pause or stop is seen without another query)."""
        job = self.job
        now = timezone.now()
        payload = {
            "step": name,
            "step_index": n,
            "call": record_input["kind"],
            "attempt": attempt,
            "duration_ms": int((now - started_at).total_seconds() * 1000),
        }
        key = f"{job.job_id}/{name}/{n}"
        window = self.flush_window
        if run_id is None and window > 0:
            # group commit: an idempotent call's record may wait a few milliseconds for the
            # next ones (a crash before the flush runs them again, as it would run the one in
            # flight); anything that is not an idempotent call flushes first (before_write)
            self.buffer.append(
                (n, name, attempt, key, record_input, output, started_at, now, payload)
            )
            self._remember(n, name, attempt, record_input, output, started_at, now, run_id)
            # a call that took longer than the window is written at once (as is the first
            # after a pause in calls): the status the flush returns is then never older than
            # the window at the next call's boundary
            if len(self.buffer) >= FLUSH_MAX or time.monotonic() - self.flushed_at >= window:
                self.flush()
            return
        self.flush()
        for _ in range(20):
            prev_rev, prev_hash = job.revision, job.last_event_hash
            event = event_build(
                job,
                type="step_succeeded",
                actor=ENGINE_ACTOR,
                reason_code="step_succeeded",
                payload=payload,
            )
            write = self._write_pg if connection.vendor == "postgresql" else self._write_orm
            status = write(
                job,
                prev_rev,
                event,
                n,
                name,
                attempt,
                key,
                record_input,
                output,
                started_at,
                now,
                run_id,
            )
            if status is not None:
                job.status = status
                self.flushed_at = time.monotonic()
                self._remember(n, name, attempt, record_input, output, started_at, now, run_id)
                return
            job.revision, job.last_event_hash = prev_rev, prev_hash
            self._refresh_head()
        raise _LeaseLost  # pragma: no cover - 20 concurrent journal writes in a row

    def _remember(
        self, n: int, name: str, attempt: int, record_input: dict[str, Any], output: Any,
        started_at: datetime, now: datetime, run_id: int | None,
    ) -> None:  # fmt: skip
        self.log.add(
            CallRecord(
                id=run_id or 0, position=n, name=name, attempt=attempt, status=R.SUCCEEDED,
                kind=record_input["kind"], input=record_input, output=output,
                started_at=started_at, finished_at=now,
            )
        )  # fmt: skip

    def _refresh_head(self) -> None:
        """After a refused guarded write: the job's chain head as it is now (a lifecycle service
        journaled meanwhile), or ``_LeaseLost`` if another worker holds the job."""
        job = self.job
        fresh = (
            Job.objects.filter(pk=job.pk)
            .values("lease_token", "revision", "last_event_hash", "status")
            .first()
        )
        if fresh is None or fresh["lease_token"] != self.runner.token:
            self.runner.lease_lost = True
            raise _LeaseLost
        job.revision, job.last_event_hash, job.status = (
            fresh["revision"],
            fresh["last_event_hash"],
            fresh["status"],
        )

    def flush(self) -> None:
        """Write the buffered idempotent calls: their StepRuns, their events and the new chain
        head in one statement guarded by the lease token and the revision."""
        if not self.buffer:
            return
        items, self.buffer = self.buffer, []
        self.flushed_at = time.monotonic()
        job = self.job
        for _ in range(20):
            prev_rev, prev_hash = job.revision, job.last_event_hash
            events = [
                event_build(
                    job, type="step_succeeded", actor=ENGINE_ACTOR, reason_code="step_succeeded",
                    payload=item[8],
                )
                for item in items
            ]  # fmt: skip
            if connection.vendor == "postgresql":
                status = self._flush_pg(job, prev_rev, events, items)
            else:
                status = self._flush_orm(job, prev_rev, events, items)
            if status is not None:
                job.status = status
                return
            job.revision, job.last_event_hash = prev_rev, prev_hash
            self._refresh_head()
        raise _LeaseLost  # pragma: no cover - 20 concurrent journal writes in a row

    def _flush_pg(
        self, job: Job, prev_rev: int, events: list[JobEvent], items: list[tuple[Any, ...]]
    ) -> str | None:
        jt, st, et = Job._meta.db_table, StepRun._meta.db_table, JobEvent._meta.db_table
        runs = [
            {
                "step_index": n, "step_name": name, "attempt": attempt, "idempotency_key": key,
                "input": record_input, "output": output, "started_at": started_at.isoformat(),
                "finished_at": finished_at.isoformat(),
            }
            for n, name, attempt, key, record_input, output, started_at, finished_at, _ in items
        ]  # fmt: skip
        evs = [
            {
                "revision": e.revision, "type": e.type, "actor": e.actor, "reason_code": e.reason_code,
                "payload": e.payload, "created_at": e.created_at.isoformat(), "prev_hash": e.prev_hash,
                "hash": e.hash,
            }
            for e in events
        ]  # fmt: skip
        last = events[-1]
        sql = (
            f'WITH j AS (UPDATE "{jt}" SET "revision" = %s, "last_event_hash" = %s, "updated_at" = %s '
            'WHERE "id" = %s AND "lease_token" = %s AND "revision" = %s RETURNING "id", "status"), '
            f's AS (INSERT INTO "{st}" ("job_id", "step_index", "step_name", "attempt", "status", '
            '"idempotency_key", "input", "output", "error", "stdout", "stderr", "worker", "started_at", '
            "\"finished_at\") SELECT j.id, r.step_index, r.step_name, r.attempt, 'succeeded', "
            "r.idempotency_key, r.input, r.output, NULL, '', '', %s, r.started_at, r.finished_at "
            "FROM j, jsonb_to_recordset(%s::jsonb) AS r(step_index int, step_name text, attempt int, "
            "idempotency_key text, input jsonb, output jsonb, started_at timestamptz, finished_at timestamptz)), "
            f'e AS (INSERT INTO "{et}" ("job_id", "revision", "type", "actor", "reason_code", "payload", '
            '"created_at", "prev_hash", "hash") SELECT j.id, x.revision, x.type, x.actor, x.reason_code, '
            "x.payload, x.created_at, x.prev_hash, x.hash FROM j, jsonb_to_recordset(%s::jsonb) AS "
            "x(revision int, type text, actor text, reason_code text, payload jsonb, created_at timestamptz, "
            'prev_hash text, hash text)) SELECT "status" FROM j'
        )
        params: list[Any] = [
            last.revision, last.hash, timezone.now(), job.pk, self.runner.token, prev_rev,
            self.runner.owner[:128], json.dumps(runs), json.dumps(evs),
        ]  # fmt: skip
        with connection.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def _flush_orm(
        self, job: Job, prev_rev: int, events: list[JobEvent], items: list[tuple[Any, ...]]
    ) -> str | None:
        now = timezone.now()
        lease = now + timedelta(seconds=float(_gait("LEASE_SECONDS")))
        last = events[-1]
        with transaction.atomic():
            updated = Job.objects.filter(
                pk=job.pk, lease_token=self.runner.token, revision=prev_rev
            ).update(
                revision=last.revision,
                last_event_hash=last.hash,
                updated_at=now,
                lease_expires_at=lease,
            )
            if updated != 1:
                return None
            StepRun.objects.bulk_create(
                StepRun(
                    job=job, step_index=n, step_name=name, attempt=attempt, status=R.SUCCEEDED,
                    idempotency_key=key, input=record_input, output=output,
                    worker=self.runner.owner[:128], started_at=started_at, finished_at=finished_at,
                )
                for n, name, attempt, key, record_input, output, started_at, finished_at, _ in items
            )  # fmt: skip
            JobEvent.objects.bulk_create(events)
            return str(Job.objects.filter(pk=job.pk).values_list("status", flat=True).get())

    # One call's record with plain parameters, not through flush(): the flush's
    # jsonb_to_recordset costs about 20 % more per call (bench/workflow_bench.py, measured side
    # by side), and one commit per call is the default.
    def _write_pg(
        self, job: Job, prev_rev: int, event: JobEvent, n: int, name: str, attempt: int, key: str,
        record_input: dict[str, Any], output: Any, started_at: datetime, now: datetime,
        run_id: int | None,
    ) -> str | None:  # fmt: skip
        jt, st, et = Job._meta.db_table, StepRun._meta.db_table, JobEvent._meta.db_table
        output_json = json.dumps(output)
        params: list[Any] = [event.revision, event.hash, now, job.pk, self.runner.token, prev_rev]
        if run_id is None:
            step_sql = (
                f'INSERT INTO "{st}" ("job_id", "step_index", "step_name", "attempt", "status", "idempotency_key", '
                '"input", "output", "error", "stdout", "stderr", "worker", "started_at", "finished_at") '
                "SELECT j.id, %s, %s, %s, 'succeeded', %s, %s::jsonb, %s::jsonb, NULL, '', '', %s, %s, %s FROM j"
            )
            params += [
                n, name, attempt, key, json.dumps(record_input), output_json,
                self.runner.owner[:128], started_at, now,
            ]  # fmt: skip
        else:
            step_sql = (
                f'UPDATE "{st}" SET "status" = \'succeeded\', "output" = %s::jsonb, "finished_at" = %s '
                f'FROM j WHERE "{st}"."id" = %s'
            )
            params += [output_json, now, run_id]
        sql = (
            f'WITH j AS (UPDATE "{jt}" SET "revision" = %s, "last_event_hash" = %s, "updated_at" = %s '
            'WHERE "id" = %s AND "lease_token" = %s AND "revision" = %s RETURNING "id", "status"), '
            f"s AS ({step_sql}), "
            f'e AS (INSERT INTO "{et}" ("job_id", "revision", "type", "actor", "reason_code", "payload", '
            '"created_at", "prev_hash", "hash") SELECT j.id, %s, %s, %s, %s, %s::jsonb, %s, %s, %s FROM j) '
            'SELECT "status" FROM j'
        )
        params += [
            event.revision, event.type, event.actor, event.reason_code, json.dumps(event.payload),
            event.created_at, event.prev_hash, event.hash,
        ]  # fmt: skip
        with connection.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def _write_orm(
        self, job: Job, prev_rev: int, event: JobEvent, n: int, name: str, attempt: int, key: str,
        record_input: dict[str, Any], output: Any, started_at: datetime, now: datetime,
        run_id: int | None,
    ) -> str | None:  # fmt: skip
        lease = now + timedelta(seconds=float(_gait("LEASE_SECONDS")))
        with transaction.atomic():
            updated = Job.objects.filter(
                pk=job.pk, lease_token=self.runner.token, revision=prev_rev
            ).update(
                revision=event.revision,
                last_event_hash=event.hash,
                updated_at=now,
                lease_expires_at=lease,
            )
            if updated != 1:
                return None
            if run_id is None:
                StepRun.objects.create(
                    job=job, step_index=n, step_name=name, attempt=attempt, status=R.SUCCEEDED,
                    idempotency_key=key, input=record_input, output=output,
                    worker=self.runner.owner[:128], started_at=started_at, finished_at=now,
                )  # fmt: skip
            else:
                StepRun.objects.filter(pk=run_id).update(
                    status=R.SUCCEEDED, output=output, finished_at=now
                )
            event.save(force_insert=True)
            return str(Job.objects.filter(pk=job.pk).values_list("status", flat=True).get())

    def _record_started(
        self, n: int, name: str, attempt: int, record_input: dict[str, Any], started_at: datetime
    ) -> int:
        """Commit the ``started`` record of a non-idempotent call before it runs (one statement
        guarded by the lease token), after the calls that came before it."""
        self.flush()
        return record_started(
            self.runner, index=n, name=name, attempt=attempt, key=self.current_key,
            input=record_input, started_at=started_at,
        )  # fmt: skip

    # -- locked writes (not the hot path) --

    def _finish(
        self, job: Job, n: int, name: str, attempt: int, record_input: dict[str, Any],
        started_at: datetime, run_id: int | None, status: str, error: dict[str, Any] | None,
        output: Any = None,
    ) -> None:  # fmt: skip
        """Write (or finish) one attempt's record; a ``started`` one stays open."""
        now = None if status == R.STARTED else timezone.now()
        if run_id is not None:
            StepRun.objects.filter(pk=run_id).update(
                status=status, error=error, output=output, finished_at=now
            )
        else:
            run_id = StepRun.objects.create(
                job=job, step_index=n, step_name=name, attempt=attempt, status=status,
                idempotency_key=f"{job.job_id}/{name}/{n}", input=record_input, output=output, error=error,
                worker=self.runner.owner[:128], started_at=started_at, finished_at=now,
            ).pk  # fmt: skip
        self.log.add(
            CallRecord(
                id=run_id, position=n, name=name, attempt=attempt, status=status,
                kind=record_input["kind"], input=record_input, output=output, error=error,
                started_at=started_at, finished_at=now,
            )
        )  # fmt: skip

    def _preempted(
        self, n: int, name: str, attempt: int, record_input: dict[str, Any], started_at: datetime,
        run_id: int | None, error: dict[str, Any],
    ) -> None:  # fmt: skip
        runner = self.runner
        preempted = runner.preempted
        err = {
            "type": "preempted",
            "message": f"the job was {preempted} while the call ran",
            "retryable": False,
        }
        self.runner._transition(
            status=None,
            event_type="step_cancelled",
            reason=_preempt_reason(preempted),
            payload={"step": name, "step_index": n, "attempt": attempt, "status": preempted},
            before_event=lambda job: self._finish(
                job, n, name, attempt, record_input, started_at, run_id, R.CANCELLED, err
            ),
        )
        raise _Suspend(f"preempted:{preempted}")

    def _attempt_failed(
        self, n: int, name: str, attempt: int, record_input: dict[str, Any], started_at: datetime,
        run_id: int | None, error: dict[str, Any], status: str, decision: Decision,
        retry: dict[str, Any],
    ) -> Any:  # fmt: skip
        names = set(retry.get("non_retryable") or [])
        etype = str(error.get("type", ""))
        listed = etype in names or etype.rsplit(".", 1)[-1] in names
        retryable = bool(error.get("retryable")) and not listed
        failures = decision.failures + 1
        if retryable and failures < int(retry["max_attempts"]):
            delay = step_backoff_seconds(retry, failures)
            self.runner._transition(
                status=S.WAITING,
                event_type="step_retry_scheduled",
                reason="step_retry_scheduled",
                payload={
                    "step": name,
                    "step_index": n,
                    "attempt": attempt,
                    "error": _error_summary(error),
                    "delay_s": round(delay, 3),
                },  # fmt: skip
                wake_at=timezone.now() + timedelta(seconds=delay),
                before_event=lambda job: self._finish(
                    job, n, name, attempt, record_input, started_at, run_id, status, error
                ),
            )
            raise _Suspend("retry_scheduled")
        if not retryable:
            reason = FAIL_NON_RETRYABLE
        elif status == R.TIMED_OUT:
            reason = FAIL_TIMEOUT
        else:
            reason = FAIL_RUNTIME
        final = {**error, "gave_up": True, "final": True, "reason": reason}
        with transaction.atomic():
            self.runner._locked()
            self._finish(
                self.job, n, name, attempt, record_input, started_at, run_id, status, final
            )
        record = self.log.attempts(n)[-1]
        exc = CallFailed(name, final)
        self.raised = (exc, record)
        raise exc

    def _in_doubt(self, n: int, name: str, decision: Decision) -> None:
        """A non-idempotent call left ``started`` by a dead worker may have had its effect: ask
        a person (the engine's in-doubt question for spec steps)."""
        record = decision.record
        assert record is not None
        runner = self.runner
        with transaction.atomic():
            job = runner._locked()
            now = timezone.now()
            error = {
                "type": "in_doubt",
                "message": "the worker running this call stopped before recording its outcome",
                "retryable": False,
                "worker": StepRun.objects.filter(pk=record.id)
                .values_list("worker", flat=True)
                .first()
                or "",
            }
            StepRun.objects.filter(pk=record.id).update(
                status=R.IN_DOUBT, finished_at=now, error=error
            )
            runner._park_with_checkpoint(
                job,
                type=CheckpointType.DECISION_NEEDED,
                summary=f"Call {n} {name} may have run (attempt {record.attempt}); its worker stopped before recording the outcome."[
                    :512
                ],
                required_action=f"Check whether {name} took effect; approve and resume to run it again, or cancel the job."[
                    :512
                ],
                reason_code="step_in_doubt",
                new_status=S.DECISION_NEEDED,
                payload={
                    "step": name,
                    "step_index": n,
                    "attempt": record.attempt,
                    "call": record.kind,
                },
            )
        raise _Suspend("decision_needed")

    # -- the gate --

    def _gate(self, n: int, name: str, input: dict[str, Any]) -> dict[str, Any]:
        """The gate's verdict on tool ``name``: the name comes from the code, the identity and
        the job from the server (never from the workflow's input)."""

        job = self.job
        intent = _tool_intent(job, name, input)
        try:
            result = gate_evaluate(intent=intent, policy=job_policy(job)).as_dict()
        except InvalidInput as exc:
            result = {"verdict": "block", "reason_codes": [exc.code], "violations": [exc.message]}
        except PolicyVersion.DoesNotExist:
            result = {"verdict": "block", "reason_codes": ["policy_unavailable"], "violations": []}
        if result.get("verdict") == "dry_run":
            result["verdict"] = "allow"
        return result

    def _tool_blocked(
        self, n: int, name: str, record_input: dict[str, Any], gate: dict[str, Any], attempt: int
    ) -> None:
        error = {
            "type": "ToolBlocked", "raised": "ToolBlocked", "message": ", ".join(gate.get("reason_codes") or []),
            "retryable": False, "gave_up": True, "final": True, "gate": _gate_brief(gate),
        }  # fmt: skip
        now = timezone.now()
        with transaction.atomic():
            job = self.runner._locked()
            self._finish(job, n, name, attempt, record_input, now, None, R.FAILED, error)
            event_append(
                job,
                type="dispatch_blocked",
                actor=ENGINE_ACTOR,
                reason_code="policy_blocked",
                payload={"path": "workflow", "tool": name, "step_index": n, **_gate_brief(gate)},
            )
        exc = ToolBlocked(name, _gate_brief(gate))
        self.raised = (exc, self.log.attempts(n)[-1])
        raise exc

    def _tool_approval(
        self, n: int, name: str, input: dict[str, Any], gate: dict[str, Any],
        record_input: dict[str, Any], attempt: int,
    ) -> None:  # fmt: skip
        """``require_approval``: approved → return (the call runs); pending → park; rejected →
        ``ToolRejected``; none yet → open a request with the call's arguments and park."""

        runner = self.runner
        with transaction.atomic():
            job = runner._locked()
            latest = (
                ApprovalRequest.objects.filter(job=job, step_index=n)
                .order_by("-created_at", "-id")
                .first()
            )
            if latest is not None and latest.status == ApprovalStatus.APPROVED:
                return
            if (
                latest is not None
                and latest.status == ApprovalStatus.REJECTED
                and not self._rejection_used(n, latest.request_id)
            ):
                decision = (
                    latest.decisions.filter(decision=DecisionKind.REJECT).order_by("-id").first()
                )
                reason = decision.reason if decision else "rejected"
                by = decision.actor if decision else ""
                error = {
                    "type": "ToolRejected", "raised": "ToolRejected", "message": reason, "by": by,
                    "approval_request": latest.request_id, "retryable": False, "gave_up": True, "final": True,
                }  # fmt: skip
                self._finish(
                    job, n, name, attempt, record_input, timezone.now(), None, R.FAILED, error
                )
                exc: Exception = ToolRejected(name, reason, latest.request_id, by)
                self.raised = (exc, self.log.attempts(n)[-1])
                raise exc
            job.status, job.status_reason_code = S.DECISION_NEEDED, "approval_requested"
            fields = ["status", "status_reason_code", "outputs", *runner._release_fields(job)]
            if latest is not None and latest.status == ApprovalStatus.PENDING:
                event_append(
                    job, type="waiting", actor=ENGINE_ACTOR, reason_code="approval_pending",
                    payload={"step": name, "step_index": n, "approval_request": latest.request_id},
                    update_fields=fields,
                )  # fmt: skip
            else:
                why = ", ".join(gate.get("reason_codes") or []) or "policy"
                approval_request_create(
                    actor=Actor.system(ENGINE_ACTOR),
                    job=job,
                    summary=f"Tool call {name} (call {n}) needs approval: {why}"[:512],
                    step_index=n,
                    step_name=name,
                    intent=_tool_intent(job, name, input),
                    gate_result=gate,
                )
                job.save(update_fields=fields)
        raise _Suspend("decision_needed")

    def _rejection_used(self, n: int, request_id: str) -> bool:
        """A rejection already raised into the workflow (and later retried by an operator) does
        not raise again: the retry asks for a new approval."""
        return any(
            (r.error or {}).get("approval_request") == request_id for r in self.log.attempts(n)
        )

    # -- checkpoints, timers, values --

    def checkpoint(self, type: str, summary: str) -> None:
        n, decision = self._next(type, "checkpoint", True)
        if decision.action == "replay":
            return
        record_input = {"kind": "checkpoint", "type": type, "summary": summary}
        with transaction.atomic():
            job = self.runner._locked()
            cp = checkpoint_write(
                job, actor=ENGINE_ACTOR, type=type, summary=summary, reason_code=""
            )
            self._finish(
                job,
                n,
                type,
                decision.attempt,
                record_input,
                timezone.now(),
                None,
                R.SUCCEEDED,
                None,
                {"checkpoint_id": cp.checkpoint_id},
            )

    def value(self, name: str, make: Callable[[], Any]) -> Any:
        n, decision = self._next(name, "value", True)
        if decision.action == "replay":
            return decision.output
        value = make()
        self._write_success(
            n, name, decision.attempt, {"kind": "value"}, value, timezone.now(), None
        )
        return value

    def sleep(self, name: str, seconds: float) -> None:
        n, decision = self._next(name, "sleep", True)
        if decision.action == "replay":
            return
        now = timezone.now()
        if decision.action == "open":
            assert decision.record is not None
            until = datetime.fromisoformat(decision.record.input["until"])
            run_id: int | None = decision.record.id
        else:
            until, run_id = now + timedelta(seconds=seconds), None
        if until <= now:
            self._write_success(
                n,
                name,
                decision.attempt,
                {"kind": "sleep", "until": iso_utc(until)},
                {"slept_until": iso_utc(until)},
                now,
                run_id,
            )
            return
        record_input: dict[str, Any] = {
            "kind": "sleep",
            "until": iso_utc(until),
            "seconds": seconds,
        }

        def open_timer(job: Job) -> None:
            if run_id is None:
                self._finish(
                    job, n, name, decision.attempt, record_input, now, None, R.STARTED, None
                )

        self.runner._transition(
            status=S.WAITING,
            event_type="waiting",
            reason="step_sleeping",
            payload={"step": name, "step_index": n, "until": iso_utc(until)},
            wake_at=until,
            before_event=open_timer,
        )
        raise _Suspend("waiting")

    def wait_event(self, name: str, signal: str, timeout: float | None) -> Any:
        n, decision = self._next(name, "wait_event", True)
        if decision.action == "replay":
            return (decision.output or {}).get("payload")
        now = timezone.now()
        if decision.action == "open":
            assert decision.record is not None
            timeout_at = decision.record.input.get("timeout_at")
            run_id: int | None = decision.record.id
        else:
            timeout_at = iso_utc(now + timedelta(seconds=timeout)) if timeout else None
            run_id = None
        record_input = {"kind": "wait_event", "signal": signal, "timeout_at": timeout_at}
        consumed = [
            r.output.get("signal_revision")
            for attempts in self.log.by_position.values()
            for r in attempts
            if r.kind == "wait_event" and r.status == R.SUCCEEDED and isinstance(r.output, dict)
            and r.output.get("signal") == signal
        ]  # fmt: skip
        found = (
            JobEvent.objects.filter(
                job_id=self.job.pk, type="signal_received", payload__name=signal
            )
            .exclude(revision__in=[c for c in consumed if c is not None])
            .order_by("revision")
            .values_list("revision", "payload")
            .first()
        )
        if found is not None:
            output = {
                "signal": signal,
                "payload": found[1].get("payload"),
                "signal_revision": found[0],
            }
            self._write_success(n, name, decision.attempt, record_input, output, now, run_id)
            return output["payload"]
        due = datetime.fromisoformat(timeout_at) if timeout_at else None
        if due is not None and due <= now:
            error = {
                "type": "timeout", "raised": "EventTimeout", "message": f"no {signal!r} signal before {timeout_at}",
                "retryable": False, "gave_up": True, "final": True, "reason": FAIL_TIMEOUT,
            }  # fmt: skip
            with transaction.atomic():
                job = self.runner._locked()
                self._finish(
                    job, n, name, decision.attempt, record_input, now, run_id, R.TIMED_OUT, error
                )
            exc = EventTimeout(name, error)
            self.raised = (exc, self.log.attempts(n)[-1])
            raise exc

        def open_wait(job: Job) -> None:
            if run_id is None:
                self._finish(
                    job, n, name, decision.attempt, record_input, now, None, R.STARTED, None
                )

        self.runner._transition(
            status=S.WAITING,
            event_type="waiting",
            reason="step_waiting_for_signal",
            payload={"step": name, "step_index": n, "signal": signal, "timeout_at": timeout_at},
            wake_at=due,
            before_event=open_wait,
        )
        raise _Suspend("waiting")

    # -- the end --

    def _fail_job(self, reason: str, error: dict[str, Any], name: str = "", **extra: Any) -> None:
        raised = self.raised

        def unfinalize(job: Job) -> None:
            # the failure that ended the job runs again if an operator retries it
            if raised is not None and raised[1].id:
                err = dict(raised[1].error or {})
                err["final"] = False
                StepRun.objects.filter(pk=raised[1].id).update(error=err)

        self.runner._transition(
            status=S.FAILED,
            event_type="failed",
            reason=reason,
            payload={
                "step": name or self.step["name"],
                "step_index": self.position,
                "error": _error_summary(error),
                **extra,
            },
            before_event=unfinalize,
        )

    def blocked(self, exc: ToolBlocked | ToolRejected, record: CallRecord) -> None:
        """An uncaught ToolBlocked / ToolRejected blocks the job with the gate's reasons (or
        the reviewer's); a retry asks the gate (or a reviewer) again."""
        runner = self.runner
        with transaction.atomic():
            job = runner._locked()
            err = dict(record.error or {})
            err["final"] = False
            StepRun.objects.filter(pk=record.id).update(error=err)
            if isinstance(exc, ToolBlocked):
                summary = f"The policy blocked tool call {record.position} {exc.tool}: {', '.join(exc.reasons)}"
                payload = {
                    "step": exc.tool,
                    "step_index": record.position,
                    "tool": exc.tool,
                    "gate": exc.gate,
                }
                reason = "policy_blocked"
            else:
                summary = f"Tool call {record.position} {exc.tool} was rejected: {exc.reason}"
                payload = {
                    "step": exc.tool,
                    "step_index": record.position,
                    "tool": exc.tool,
                    "approval_request": exc.request_id,
                }
                reason = "approval_rejected"
            runner._park_with_checkpoint(
                job,
                type=CheckpointType.BLOCKED,
                summary=summary[:512],
                reason_code=reason,
                new_status=S.BLOCKED,
                payload=payload,
            )


def _gate_brief(gate: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: gate[k]
        for k in ("verdict", "reason_codes", "violations", "matched_rules", "policy_digest")
        if k in gate
    }


def _tool_intent(job: Job, name: str, input: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "tool_name": name,
        "args": input.get("args") if isinstance(input.get("args"), dict) else {},
        "targets": input.get("targets") or [],
        "context": {
            "identity": job.identity,
            "job_id": job.job_id,
            **({"risk_class": input["risk_class"]} if input.get("risk_class") else {}),
        },
    }


# --- loading the log ---------------------------------------------------------------------------


def call_log_load(job_pk: int) -> CallLog:
    """Every recorded call of a job in ONE query (positions ≥ 1; step 0 is the workflow).
    PostgreSQL aggregates the rows into one JSON document (one decode instead of three per
    row) and leaves out what replay does not read: the input of calls other than timers, the
    error of succeeded calls, the timestamps."""
    if connection.vendor == "postgresql":
        st = StepRun._meta.db_table
        sql = (
            "SELECT coalesce(json_agg(json_build_array(id, step_index, step_name, attempt, status, "
            "input->>'kind', CASE WHEN input->>'kind' IN ('sleep', 'wait_event') THEN input END, "
            "output, CASE WHEN status <> 'succeeded' THEN error END)), '[]') "
            f'FROM "{st}" WHERE job_id = %s AND step_index >= 1'
        )
        with connection.cursor() as cur:
            cur.execute(sql, [job_pk])
            raw = cur.fetchone()[0]
        rows = json.loads(raw) if isinstance(raw, str | bytes) else raw
        return CallLog(
            CallRecord(
                id=r[0], position=r[1], name=r[2], attempt=r[3], status=r[4], kind=r[5] or "",
                input=r[6] or {}, output=r[7], error=r[8],
            )
            for r in rows
        )  # fmt: skip
    values = StepRun.objects.filter(job_id=job_pk, step_index__gte=1).values_list(
        "id", "step_index", "step_name", "attempt", "status", "input", "output", "error"
    )
    return CallLog(
        CallRecord(
            id=r[0], position=r[1], name=r[2], attempt=r[3], status=r[4], kind=record_kind(r[5]),
            input=r[5] or {}, output=r[6], error=r[7],
        )
        for r in values.order_by()
    )  # fmt: skip


# --- the engine's hook -------------------------------------------------------------------------


def workflow_advance(runner: _Runner, step: dict[str, Any]) -> str:
    """Run the workflow of ``runner``'s job from the top (replaying recorded calls) until it
    returns, raises or parks; what the engine's loop should do next (``continue`` once the
    workflow's result is checkpointed)."""

    job = runner.job
    assert job is not None
    w = step["with"]
    versions = workflow_versions(w["workflow"])
    REPLAY_STATS.clear()
    run = _WorkflowRun(runner, step, call_log_load(job.pk))
    fn = versions.get(w["version"])
    if fn is not None and getattr(fn, "__gait_group_commit__", False):
        run.flush_window = float(_gait("WORKFLOW_FLUSH_SECONDS"))
    if fn is None:
        code = reasons.WORKFLOW_VERSION_MISMATCH if versions else reasons.WORKFLOW_UNKNOWN
        run._fail_job(
            code,
            {
                "type": code,
                "message": f"workflow {w['workflow']!r} version {w['version']!r} is not registered"
                + (f" (registered: {', '.join(versions)})" if versions else ""),
            },
            version=w["version"],
            registered=list(versions),
        )
        return "failed"
    started_at = timezone.now()
    ctx = WorkflowContext(run)
    try:
        result = fn(ctx, **w["input"])
    except _Suspend as s:
        return s.outcome
    except _Nondeterministic as nd:
        run._fail_job(
            reasons.WORKFLOW_NONDETERMINISTIC,
            {"type": reasons.WORKFLOW_NONDETERMINISTIC, "message": nd.message},
            **nd.details,
        )
        return "failed"
    except _LeaseLost:
        raise
    except (ToolBlocked, ToolRejected) as exc:
        if run.raised is not None and run.raised[0] is exc:
            run.blocked(exc, run.raised[1])
            return "gated"
        return _workflow_error(run, exc)
    except CallFailed as exc:
        if run.raised is not None and run.raised[0] is exc:
            run._fail_job(str(exc.error.get("reason") or FAIL_RUNTIME), exc.error, exc.name)
            return "failed"
        return _workflow_error(run, exc)
    except Exception as exc:
        return _workflow_error(run, exc)
    if run.position < run.log.last_position:
        recorded = run.log.attempts(run.position + 1)[0]
        message = (
            f"the workflow returned after {run.position} calls, but call {run.position + 1} "
            f"({recorded.kind} {recorded.name!r}) was recorded: the code changed under a running job"
        )
        run._fail_job(
            reasons.WORKFLOW_NONDETERMINISTIC,
            {"type": reasons.WORKFLOW_NONDETERMINISTIC, "message": message},
            position=run.position + 1,
            recorded=recorded.name,
            called="",
        )
        return "failed"
    error = output_check(result)
    if error is not None:
        run._fail_job(FAIL_NON_RETRYABLE, error)
        return "failed"
    if runner.preempted or job.status != S.RUNNING:
        status = runner.preempted or job.status
        return runner._blocked_by_control(status)
    runner.checkpoint_success(step, 1, StepResult("succeeded", output=result), started_at, None)
    runner.outputs[step["name"]] = result
    return "continue"


def _workflow_error(run: _WorkflowRun, exc: Exception) -> str:
    """The workflow's own code raised: the job fails (``job_runtime_error``, or the code of a
    ``GaitError`` such as an invalid call option)."""
    if isinstance(exc, GaitError):
        reason, error = FAIL_RUNTIME, {"type": exc.code, "message": exc.message}
    else:
        reason, error = (
            FAIL_RUNTIME,
            {"type": type(exc).__name__, "message": (str(exc) or repr(exc))[:2000]},
        )
    run.raised = None
    run._fail_job(reason, error)
    return "failed"


def workflow_timeline(job: Job, *, limit: int = 200) -> tuple[list[dict[str, Any]], int]:
    """The latest ``limit`` call attempts of a workflow (or external agent) job for the
    dashboard, in order, and how many there are in all (selector-shaped: the caller has already
    read ``job`` for its actor)."""
    qs = StepRun.objects.filter(job=job, step_index__gte=1)
    total = qs.count()
    rows = list(qs.order_by("-step_index", "-attempt")[:limit])[::-1]
    out = []
    for r in rows:
        inp = r.input if isinstance(r.input, dict) else {}
        gate = inp.get("gate") or (r.error or {}).get("gate") or {}
        preview = r.output if r.status == R.SUCCEEDED else (r.error or {}).get("message", "")
        text = preview if isinstance(preview, str) else json.dumps(preview, default=str)
        out.append(
            {
                "position": r.step_index,
                "name": r.step_name,
                "kind": inp.get("kind", ""),
                "attempt": r.attempt,
                "status": r.status,
                "duration_ms": r.duration_ms,
                "preview": "" if preview in (None, "") else text[:200],
                "verdict": gate.get("verdict", ""),
                "reasons": gate.get("reason_codes", []),
                "args": inp.get("args"),
                "error_type": (r.error or {}).get("type", ""),
                "started_at": r.started_at,
            }
        )
    return out, total


def workflow_parked(job: Job) -> str:
    """Why a workflow job is not running now, in words (empty while it runs or once done)."""
    if job.status in (S.RUNNING, S.QUEUED, S.COMPLETED, S.CANCELLED):
        return ""
    last = (
        JobEvent.objects.filter(
            job=job,
            type__in=["waiting", "approval_requested", "checkpoint_added", "step_retry_scheduled"],
        )
        .order_by("-revision")
        .values_list("type", "reason_code", "payload")
        .first()
    )
    p = (last[2] if last else None) or {}
    name = p.get("step") or p.get("step_name") or ""
    index = f"{p['step_index']} " if isinstance(p.get("step_index"), int) else ""
    call = f"call {index}{name}" if name else "a call"
    if job.status == S.WAITING and last is not None:
        if last[1] == "step_sleeping":
            return f"Sleeping at {call} until {p.get('until')} (no worker held)."
        if last[1] == "step_waiting_for_signal":
            until = f", or until {p['timeout_at']}" if p.get("timeout_at") else ""
            return f"Waiting at {call} for signal {p.get('signal')!r}{until} (no worker held)."
        if last[0] == "step_retry_scheduled":
            return f"Waiting to retry {call} after a failure (backoff {p.get('delay_s')} s)."
    if job.status == S.DECISION_NEEDED:
        if last is not None and last[1] == "step_in_doubt":
            return f"Waiting for a person: {call} may have run before its worker stopped."
        request = p.get("approval_request") or ""
        return f"Waiting for a reviewer to approve {call}{f' ({request})' if request else ''}."
    if job.status == S.BLOCKED:
        return f"Blocked ({job.status_reason_code}): {p.get('summary') or call}."
    return f"{job.status.replace('_', ' ').capitalize()} ({job.status_reason_code})."
