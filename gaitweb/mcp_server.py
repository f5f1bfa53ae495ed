"""gaitweb's tools for agents over the Model Context Protocol (docs/recurring.md).

Built on the official ``mcp`` SDK (``MCPServer``, formerly FastMCP) and started by
``python manage.py gait mcp`` on stdio. The server acts as ONE actor for its whole life: an API
key (``--api-key`` / ``GAIT_MCP_API_KEY``, with that key's identity and scopes) or a local
identity (``--identity``, with ``--scopes``). Every tool calls the same services as the API and
the CLI, so it checks the same scopes and refuses with the same reason codes.

A refusal is an MCP *error result* (``isError: true``) whose text and structured content are
``{ok: false, error_code, error, retryable, hint, details}``; an unexpected exception is an error
result with ``error_code: internal_error``. A tool never takes the server down.

The tools are plain synchronous functions: the SDK runs them in worker threads, which is what
the Django ORM needs (it refuses to run inside an event loop).

An MCP session is its identity, like an API key: the tools read through the selectors
(jobs/selectors.py, approvals/selectors.py), so another identity's jobs, templates and
approvals answer exactly as unknown ones do, unless the session has ``cross_identity``. An
argument a tool does not declare is refused with ``unknown_field`` (the SDK would drop it).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections

from approvals.gate import gate_dispatch
from approvals.models import ApprovalStatus
from approvals.policies import policy_request_resolve
from approvals.selectors import approval_get, approval_list
from gaitweb.api import unknown_fields_check
from gaitweb.apikeys import apikey_actor, apikey_authenticate, scopes_parse
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.canonical import iso_utc
from gaitweb.lib.errors import (
    GaitError,
    Interface,
    InvalidInput,
    LimitExceeded,
    refusal_payload,
)
from jobs import selectors, services  # selectors.job_list: an MCP tool has the same name
from jobs.models import FINISHED_STATUSES, StepRun, StepRunStatus, TemplateFire
from jobs.recurring import _jobs_enabled_check, template_run_now, template_snapshot
from jobs.selectors import checkpoint_list, job_filter, job_get, job_snapshot

log = logging.getLogger("gaitweb.mcp")

SERVER_NAME = "gaitweb"
INSTRUCTIONS = (
    "gaitweb is the control plane for your long-running work. Create a job (job_create) for a "
    "piece of work, report milestones with job_update, and ask gate_evaluate before every tool "
    "call you make for that job: if the verdict is not allow, do not make the call. When the "
    "gate asks for approval, poll approval_wait. Refusals come back as error results with a "
    "stable error_code."
)
APPROVAL_WAIT_MAX_SECONDS = 30.0


# --- results -----------------------------------------------------------------------------------


def _result(payload: dict[str, Any], *, error: bool = False, text: str = "") -> Any:
    from mcp.types import CallToolResult, TextContent

    body = json.dumps(payload, sort_keys=True, default=str)
    content: list[Any] = [TextContent(type="text", text=f"{text}\n{body}" if text else body)]
    return CallToolResult(content=content, structured_content=payload, is_error=error)


def _refusal(exc: GaitError, text: str = "") -> Any:
    """A refusal as an error result (gaitweb.lib.errors.refusal_payload)."""
    payload = refusal_payload(exc, Interface.MCP)
    return _result(payload, error=True, text=text or f"refused: {exc.code}: {exc.message}")


def _tool(fn: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    """Wrap a tool body: fresh database connections like a request, refusals and crashes as
    error results. The wrapper keeps ``fn``'s signature, from which the SDK derives the input
    schema."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            payload = fn(*args, **kwargs)
        except GaitError as exc:
            return _refusal(exc)
        except Exception:
            log.exception("MCP tool %s failed", fn.__name__)
            internal = GaitError(
                reasons.INTERNAL_ERROR, "internal error (see the server log)", retryable=True
            )
            return _refusal(internal, text=f"refused: {reasons.INTERNAL_ERROR}")
        finally:
            # tools run on the SDK's worker threads, each with its own connection: close it
            # rather than leave one idle connection per thread the pool ever used
            connections.close_all()
        payload.setdefault("ok", True)
        return _result(payload, text=payload.pop("_text", ""))

    return wrapper


# --- the acting identity -----------------------------------------------------------------------


def mcp_actor(*, api_key: str = "", identity: str = "", scopes: str = "") -> Actor:
    """The actor the server runs as. An API key wins over an identity; one of them is needed."""
    if api_key:
        row = apikey_authenticate(api_key.strip())
        if row is None:
            raise GaitError(
                reasons.INVALID_API_KEY,
                "the API key is unknown, revoked or malformed",
                http_status=401,
                hint="create one with: gait apikey create …",
            )
        return apikey_actor(row)
    identity = (identity or "").strip()
    if not identity:
        raise InvalidInput(
            reasons.MCP_IDENTITY_REQUIRED,
            "the MCP server acts as an API key (--api-key or GAIT_MCP_API_KEY) or an identity "
            "(--identity)",
        )
    if len(identity) > 256:
        raise InvalidInput(reasons.INVALID_IDENTITY, "identity is longer than 256 characters")

    granted = frozenset(scopes_parse(scopes or "read,submit,control"))
    return Actor(name=identity, scopes=granted, identity=identity, kind="system")


# --- helpers -----------------------------------------------------------------------------------


def _page_size(limit: int | None) -> int:
    gait: dict[str, Any] = settings.GAIT
    default = int(gait["LIST_DEFAULT_PAGE_SIZE"])
    maximum = int(gait["LIST_MAX_PAGE_SIZE"])
    if limit is None:
        return default
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(reasons.INVALID_LIMIT, "limit must be a positive integer")
    if limit > maximum:
        raise LimitExceeded(
            reasons.PAGE_SIZE_TOO_LARGE,
            f"limit {limit} is larger than the maximum page size {maximum}",
            details={"limit": "LIST_MAX_PAGE_SIZE", "max": maximum, "requested": limit},
        )
    return limit


def _pending_approvals(actor: Actor, job_id: str) -> list[dict[str, Any]]:
    rows = approval_list(actor=actor, job_id=job_id).filter(status=ApprovalStatus.PENDING)
    return [_approval_dict(r) for r in rows]


def _approval_dict(r: Any) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "job_id": r.job.job_id,
        "status": r.status,
        "summary": r.summary,
        "tool_name": r.tool_name,
        "step_name": r.step_name,
        "required_approvals": r.required_approvals,
        "approvals": r.approvals_count,
        "expires_at": iso_utc(r.expires_at),
        "resolved_at": iso_utc(r.resolved_at),
    }


def _template_of(job: Any) -> dict[str, Any] | None:
    fire = TemplateFire.objects.filter(job=job).select_related("template", "previous_job").first()
    if fire is None:
        return None
    return {
        "template_id": fire.template.template_id,
        "trigger": fire.trigger,
        "slot": iso_utc(fire.slot),
        "previous_job_id": fire.previous_job.job_id if fire.previous_job else None,
        "continuity": fire.continuity,
    }


# --- the server --------------------------------------------------------------------------------


@functools.cache
def _server_class() -> type:
    """``MCPServer`` that refuses undeclared arguments. The SDK validates arguments with a
    pydantic model that ignores extra keys, so ``{"polcy": "strict"}`` would reach the tool
    as if it had not been sent; the check runs before that, on the call as the client sent it.
    """
    from mcp.server.mcpserver import MCPServer

    class StrictMCPServer(MCPServer):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.tool_arguments: dict[str, frozenset[str]] = {}

        async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
            allowed = self.tool_arguments.get(name)
            if allowed is not None:
                try:
                    unknown_fields_check((arguments or {}).keys(), allowed, "arguments")
                except GaitError as exc:
                    return _refusal(exc)
            return await super().call_tool(name, arguments, context)

    return StrictMCPServer


def build_server(actor: Actor) -> Any:
    """An ``MCPServer`` with gaitweb's tools, every call made as ``actor``."""

    server = _server_class()(name=SERVER_NAME, instructions=INSTRUCTIONS, version="1.0.0")

    def add(fn: Callable[..., dict[str, Any]], description: str) -> None:
        server.add_tool(
            _tool(fn), name=fn.__name__, description=description, structured_output=False
        )
        tool = server._tool_manager.get_tool(fn.__name__)
        # publish it too: a client that validates against the schema refuses extra arguments
        tool.parameters["additionalProperties"] = False
        server.tool_arguments[fn.__name__] = frozenset(inspect.signature(fn).parameters)

    def job_create(
        spec: dict[str, Any] | None = None,
        template_id: str | None = None,
        job_id: str | None = None,
        policy: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if spec is not None and template_id:
            raise InvalidInput(
                reasons.SPEC_OR_TEMPLATE,
                "give a spec or a template_id, not both",
                details={"fields": ["spec", "template_id"]},
            )
        if template_id:
            if policy:
                raise InvalidInput(
                    reasons.POLICY_FROM_TEMPLATE,
                    "a job created from a template uses the template's policy",
                    details={"field": "policy"},
                )
            fire = template_run_now(
                actor=actor, template_id=template_id, job_id=job_id, labels=labels
            )
            out: dict[str, Any] = {
                "template_id": template_id,
                "fire_status": fire.status,
                "job_id": fire.job.job_id if fire.job else None,
            }
            if fire.job:
                out["job"] = job_snapshot(fire.job)
            return out

        _jobs_enabled_check()
        binding = None
        if policy:
            # managed policies only, never a server file; job_submit applies the assignment
            binding = policy_request_resolve(ref=policy)
        job = services.job_submit(
            actor=actor,
            job_id=job_id,
            identity=actor.identity or "",
            policy=binding,
            spec=spec,
            labels=labels,
        )
        return {"job_id": job.job_id, "job": job_snapshot(job)}

    add(
        job_create,
        "Create a job bound to your identity: from a spec ({steps: [...]}, run by gaitweb's "
        "workers), from a template (template_id), or with neither for work you drive yourself "
        "and report with job_update.",
    )

    def job_list(
        status: str | None = None,
        identity: str | None = None,
        label: list[str] | None = None,
        q: str | None = None,
        template_id: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        limit: int | None = None,
        before_job_id: str | None = None,
    ) -> dict[str, Any]:
        actor.require(Scope.READ)
        size = _page_size(limit)
        filters = job_filter(
            status=status,
            identity=identity,
            label=label,
            q=q,
            template_id=template_id,
            created_after=created_after,
            created_before=created_before,
        )
        after = None
        if before_job_id:
            anchor = job_get(actor=actor, job_id=before_job_id)
            after = (anchor.created_at, anchor.pk)
        qs = selectors.job_list(actor=actor, filters=filters, after=after).select_related(
            "retry_of"
        )
        rows = list(qs[: size + 1])
        items = [job_snapshot(j) for j in rows[:size]]
        return {
            "jobs": items,
            "next_before_job_id": items[-1]["job_id"] if len(rows) > size else None,
        }

    add(
        job_list,
        "List jobs, newest first. Filters as the API's: status (one or comma-separated), "
        "identity, label (key=value or key, all must match), q (job id prefix), template_id, "
        "created_after / created_before (ISO 8601); page with before_job_id.",
    )

    def job_status(job_id: str) -> dict[str, Any]:
        actor.require(Scope.READ)
        job = job_get(actor=actor, job_id=job_id)
        snap = job_snapshot(job)
        return {
            "job_id": job.job_id,
            "status": job.status,
            "status_reason_code": job.status_reason_code,
            "job": snap,
            "_text": f"{job.job_id}: {job.status} ({job.status_reason_code})",
        }

    add(job_status, "A job's status and reason code.")

    def job_show(job_id: str) -> dict[str, Any]:
        actor.require(Scope.READ)
        report = services.job_inspect(actor=actor, job_id=job_id, events_limit=20)
        job = job_get(actor=actor, job_id=job_id)
        report["pending_approvals"] = _pending_approvals(actor, job_id)
        report["template"] = _template_of(job)
        report["job_id"] = job_id
        return report

    add(
        job_show,
        "A job in full: state, checkpoints, latest journal events (with chain check), pending "
        "approvals and, for template runs, the template and the continuity the run received.",
    )

    def job_update(
        job_id: str,
        summary: str,
        type: str = "progress",
        required_action: str | None = None,
        reason_code: str | None = None,
    ) -> dict[str, Any]:
        cp = services.job_checkpoint_add(
            actor=actor,
            job_id=job_id,
            type=type,
            summary=summary,
            required_action=required_action or "",
            reason_code=reason_code or "",
        )
        job = job_get(actor=actor, job_id=job_id)
        return {"job_id": job_id, "checkpoint": cp.as_dict(), "job": job_snapshot(job)}

    add(
        job_update,
        "Add a checkpoint to a job: type plan | progress | decision-needed | blocked | "
        "completed, a summary (at most 512 bytes), required_action for decision-needed.",
    )

    def job_result(job_id: str) -> dict[str, Any]:
        actor.require(Scope.READ)
        job = job_get(actor=actor, job_id=job_id)
        steps = {
            name: output
            for name, output in StepRun.objects.filter(
                job=job, status=StepRunStatus.SUCCEEDED
            ).values_list("step_name", "output")
        }
        checkpoints = checkpoint_list(job=job)
        final = next((c for c in reversed(checkpoints) if c.type == "completed"), None)
        return {
            "job_id": job.job_id,
            "status": job.status,
            "finished": job.status in FINISHED_STATUSES,
            "status_reason_code": job.status_reason_code,
            "outputs": job.outputs or steps,
            "final_checkpoint": final.as_dict() if final else None,
            "finished_at": iso_utc(job.finished_at),
        }

    add(job_result, "A job's outcome: whether it finished, its outputs and final checkpoint.")

    def job_cancel(job_id: str, reason: str = "") -> dict[str, Any]:
        job = services.job_cancel(actor=actor, job_id=job_id, reason=reason)
        return {"job_id": job_id, "job": job_snapshot(job)}

    add(job_cancel, "Cancel a job (needs the control scope).")

    def gate_evaluate(
        job_id: str,
        tool_name: str,
        args: dict[str, Any] | None = None,
        targets: list[dict[str, Any]] | None = None,
        risk_class: str | None = None,
        workspace: str | None = None,
    ) -> dict[str, Any]:
        # no identity: the gate takes it from the job (approvals.gate.gate_dispatch)
        context: dict[str, Any] = {"job_id": job_id}
        if risk_class:
            context["risk_class"] = risk_class
        if workspace:
            context["workspace"] = workspace
        intent = {
            "tool_name": tool_name,
            "args": args or {},
            "targets": targets or [],
            "context": context,
        }
        result = gate_dispatch(job_id=job_id, intent=intent, actor=actor, path="mcp")
        out = result.as_dict()
        out["job_id"] = job_id
        out["allowed"] = result.allowed
        why = ", ".join(result.reason_codes)
        out["_text"] = f"verdict: {result.verdict} ({why})" + (
            "" if result.allowed else " — do not make this call"
        )
        return out

    add(
        gate_evaluate,
        "Ask the policy gate before making a tool call for a job. verdict allow/dry_run: go "
        "ahead; block: do not make the call; require_approval: wait (approval_wait). Every "
        "call is journaled on the job (dispatch_allowed / dispatch_blocked).",
    )

    def approval_wait(
        job_id: str | None = None,
        request_id: str | None = None,
        timeout_seconds: float = 0.0,
    ) -> dict[str, Any]:
        actor.require(Scope.READ)
        if not job_id and not request_id:
            raise InvalidInput(reasons.MISSING_JOB_ID, "give a job_id or a request_id")
        if (
            isinstance(timeout_seconds, bool)
            or not 0 <= timeout_seconds <= APPROVAL_WAIT_MAX_SECONDS
        ):
            raise InvalidInput(
                reasons.INVALID_TIMEOUT,
                f"timeout_seconds must be from 0 to {APPROVAL_WAIT_MAX_SECONDS:g}",
                details={"field": "timeout_seconds", "max": APPROVAL_WAIT_MAX_SECONDS},
            )
        qs = approval_list(actor=actor, job_id=job_id)
        if request_id:
            qs = qs.filter(pk=approval_get(actor=actor, request_id=request_id).pk)
        deadline = time.monotonic() + float(timeout_seconds)
        while True:
            requests = [_approval_dict(r) for r in qs[:20]]
            pending = [r for r in requests if r["status"] == "pending"]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
            close_old_connections()
        return {
            "pending": bool(pending),
            "requests": requests,
            "_text": f"{len(pending)} pending approval request(s)",
        }

    add(
        approval_wait,
        "Status of a job's approval requests (or one request); waits up to timeout_seconds "
        "(at most 30) while one is still pending.",
    )

    def template_list_tool(enabled: bool | None = None) -> dict[str, Any]:
        return {
            "templates": [
                template_snapshot(t) for t in selectors.template_list(actor=actor, enabled=enabled)
            ]
        }

    template_list_tool.__name__ = "template_list"
    add(template_list_tool, "Job templates you can create jobs from (job_create template_id=…).")
    return server


def serve_stdio(actor: Actor) -> None:
    """Run the server on stdin/stdout until the client closes the stream."""
    build_server(actor).run("stdio")
