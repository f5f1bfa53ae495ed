"""The replay rules of durable workflows, with no database in sight (docs/workflows.md).

A workflow's calls (``ctx.step``, ``ctx.tool``, ``ctx.sleep``, ``ctx.wait_event``,
``ctx.checkpoint``, ``ctx.now`` …) are StepRuns of the job keyed by their position (1, 2, 3 …,
in the order the code makes them) and their name. When the job resumes, the function runs again
from the top and every call asks ``CallLog.decide`` what to do:

- a succeeded record at that position → return its output without running (``replay``);
- a final failure (the call gave up, or the gate blocked it, or a reviewer rejected it, and the
  exception was raised into the workflow) → raise it again (``raise``);
- a record of another name or kind → the code changed under a running job (``mismatch``: the job
  fails with ``workflow_nondeterministic``);
- a ``started`` record of a step or tool → its worker died while it ran (``in_doubt``), unless the
  call is idempotent (then it simply runs again);
- a ``started`` record of a sleep or wait_event → the durable timer it opened (``open``);
- nothing final → run it for real as attempt ``attempt`` (``run``).

The in-worker context (jobs.durable) and the API that external agents record their calls
through (jobs.durable_api) both use this module, so both follow the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# call kinds; the ones the engine resolves itself (timers) keep a ``started`` record open
CALL_KINDS = ("step", "tool", "checkpoint", "sleep", "wait_event", "value")
TIMER_KINDS = frozenset({"sleep", "wait_event"})


@dataclass
class CallRecord:
    """One attempt of one call (a StepRun at ``position``)."""

    id: int
    position: int
    name: str
    attempt: int
    status: str
    kind: str
    input: dict[str, Any]
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: Any = None
    finished_at: Any = None


@dataclass
class Decision:
    action: str  # replay | raise | mismatch | in_doubt | open | run
    record: CallRecord | None = None
    attempt: int = 1
    failures: int = 0  # failed attempts in the current retry round (for the retry budget)
    attempts: list[CallRecord] = field(default_factory=list)

    @property
    def output(self) -> Any:
        return self.record.output if self.record is not None else None


def record_kind(input: Any) -> str:
    return str(input.get("kind", "")) if isinstance(input, dict) else ""


def nondeterminism_message(position: int, recorded: CallRecord, name: str, kind: str) -> str:
    return (
        f"call {position} is {kind} {name!r} in the code but was recorded as "
        f"{recorded.kind} {recorded.name!r}: the workflow's code changed under a running job"
    )


class CallLog:
    """The recorded calls of one job, loaded at once, grouped by position."""

    def __init__(self, records: Iterable[CallRecord]) -> None:
        self.by_position: dict[int, list[CallRecord]] = {}
        for r in records:
            self.by_position.setdefault(r.position, []).append(r)
        for attempts in self.by_position.values():
            attempts.sort(key=lambda r: r.attempt)

    @property
    def last_position(self) -> int:
        return max(self.by_position, default=0)

    def attempts(self, position: int) -> list[CallRecord]:
        return self.by_position.get(position, [])

    def add(self, record: CallRecord) -> None:
        attempts = self.by_position.setdefault(record.position, [])
        attempts[:] = [r for r in attempts if r.id != record.id or not record.id]
        attempts.append(record)
        attempts.sort(key=lambda r: r.attempt)

    def decide(self, position: int, name: str, kind: str, *, idempotent: bool) -> Decision:
        attempts = self.attempts(position)
        if not attempts:
            return Decision("run", attempt=1)
        first = attempts[0]
        if first.name != name or first.kind != kind:
            return Decision("mismatch", record=first, attempts=attempts)
        for r in attempts:
            if r.status == "succeeded":
                return Decision("replay", record=r, attempts=attempts)
        last = attempts[-1]
        if last.status in ("failed", "timed_out") and (last.error or {}).get("final"):
            return Decision("raise", record=last, attempts=attempts)
        if last.status == "started":
            if kind in TIMER_KINDS:
                return Decision("open", record=last, attempt=last.attempt, attempts=attempts)
            if not idempotent:
                return Decision("in_doubt", record=last, attempt=last.attempt, attempts=attempts)
        return Decision(
            "run", attempt=last.attempt + 1, failures=round_failures(attempts), attempts=attempts
        )


def round_failures(attempts: list[CallRecord]) -> int:
    """Failed attempts since the retry budget was last reset (a give-up that was later retried
    by an operator, a preemption, an in-doubt decision): the engine's rule for spec steps."""
    n = 0
    for r in attempts:
        error = r.error or {}
        if r.status in ("cancelled", "in_doubt") or error.get("gave_up"):
            n = 0
        elif r.status in ("failed", "timed_out"):
            n += 1
    return n
