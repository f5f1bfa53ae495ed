"""Pydantic AI agents inside a workflow, durable and governed (``pip install gaitweb[agents]``;
docs/workflows.md, "Pydantic AI agents").

::

    from jobs.agents import agent_run
    from jobs.durable import workflow

    agent = Agent(model, tools=[lookup, refund])

    @workflow("refund-agent")
    def refund_agent(ctx, *, invoice: str) -> str:
        return agent_run(ctx, agent, f"Refund invoice {invoice}", idempotent_tools={"lookup"})

Each model request is a memoized ``ctx.step`` (named ``<name>.model``): on replay the recorded
response is returned and the model is not asked again. Each tool call goes through
``ctx.tool`` with the tool's name (or ``tool_names[name]``) as the name the policy gate sees:
``allow`` runs it once, ``require_approval`` parks the job until a reviewer decides, ``block`` and
a rejection are told to the model as the tool's result. A tool registered with
``requires_approval=True`` (Pydantic AI's human-in-the-loop tools) always needs a gaitweb
approval, whatever the policy says.

It is built on Pydantic AI's public capability hooks (``wrap_model_request``,
``wrap_tool_execute``, ``handle_deferred_tool_calls``), as its own durable integrations are. The
agent runs on a thread of its own with its own event loop; every model request and tool call is
handed to the workflow's thread, which records it (the ORM is never used from the agent's
event loop) and hands the result back. Values cross as JSON, so a replayed run sees exactly what
the first one did.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ModelMessagesTypeAdapter
from pydantic_core import to_jsonable_python

from jobs.durable import ToolBlocked, ToolRejected, WorkflowContext


class _Aborted(BaseException):
    """Unwinds the agent's thread when the workflow parks (the next replay runs it again)."""


@dataclass
class _Bridge:
    """Requests from the agent's thread to the workflow's, one at a time."""

    to_workflow: queue.Queue[tuple[Any, ...]] = field(default_factory=queue.Queue)

    async def call(
        self, kind: str, name: str, args: Any, execute: Callable[[], Awaitable[Any]]
    ) -> Any:
        """On the agent's thread: ask the workflow to record ``name``; run ``execute`` in this
        loop when the workflow says so (the call is new), and return what was recorded."""
        reply: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.to_workflow.put(("call", kind, name, args, reply))
        while True:
            msg = reply.get()
            if msg[0] == "execute":
                try:
                    msg[1].put(("ok", await execute()))
                except Exception as exc:
                    msg[1].put(("error", exc))
            elif msg[0] == "result":
                return msg[1]
            elif msg[0] == "raise":
                raise msg[1]
            else:
                raise _Aborted


class GaitDurability(AbstractCapability[Any]):
    """The capability that routes an agent's model requests and tool calls to the bridge."""

    def __init__(self, bridge: _Bridge, name: str) -> None:
        self.bridge = bridge
        self.name = name

    async def wrap_model_request(self, ctx: Any, *, request_context: Any, handler: Any) -> Any:
        async def execute() -> Any:
            response = await handler(request_context)
            return ModelMessagesTypeAdapter.dump_python([response], mode="json")[0]

        recorded = await self.bridge.call("model", f"{self.name}.model", None, execute)
        return ModelMessagesTypeAdapter.validate_python([recorded])[0]

    async def wrap_tool_execute(
        self, ctx: Any, *, call: Any, tool_def: Any, args: Any, handler: Any
    ) -> Any:
        async def execute() -> Any:
            return to_jsonable_python(await handler(args))

        plain = to_jsonable_python(args)
        info = {
            "tool": tool_def.name,
            "args": plain if isinstance(plain, dict) else {"args": plain},
            "approval": bool(getattr(ctx, "tool_call_approved", False)),
        }
        return await self.bridge.call("tool", tool_def.name, info, execute)

    async def handle_deferred_tool_calls(self, ctx: Any, *, requests: Any) -> Any:
        """Pydantic AI's approval-required tools: let them through to ``wrap_tool_execute``,
        where gaitweb asks for the approval (``approval=True``) before the tool runs."""
        from pydantic_ai.tools import DeferredToolResults

        if not requests.approvals:
            return None
        return DeferredToolResults(approvals={c.tool_call_id: True for c in requests.approvals})


def _refusal_text(exc: ToolBlocked | ToolRejected) -> str:
    if isinstance(exc, ToolBlocked):
        return f"The policy blocked this tool call ({', '.join(exc.reasons)})."
    return f"A reviewer rejected this tool call: {exc.reason}"


def agent_run(
    ctx: WorkflowContext,
    agent: Any,
    prompt: str,
    *,
    name: str = "agent",
    tool_names: Mapping[str, str] | None = None,
    idempotent_tools: Iterable[str] = (),
    targets: Callable[[str, dict[str, Any]], list[dict[str, str]]] | None = None,
    risk_classes: Mapping[str, str] | None = None,
    **run_kwargs: Any,
) -> Any:
    """Run ``agent`` on ``prompt`` inside workflow ``ctx``; returns the run's ``output``.

    ``tool_names`` maps a tool's name to the name the policy gate sees (default: the same);
    tools in ``idempotent_tools`` are retried after a crash instead of asking a person;
    ``targets(tool, args)`` gives the targets the gate sees for a call and ``risk_classes``
    the risk class of a tool (by its gate name)."""
    names = dict(tool_names or {})
    idempotent = set(idempotent_tools)
    bridge = _Bridge()
    box: dict[str, Any] = {}

    def agent_main() -> None:
        try:
            box["result"] = agent.run_sync(
                prompt, capabilities=[GaitDurability(bridge, name)], **run_kwargs
            )
        except BaseException as exc:  # handed to the workflow's thread
            box["error"] = exc
        finally:
            bridge.to_workflow.put(("done",))

    thread = threading.Thread(target=agent_main, name=f"gaitweb-agent-{name}", daemon=True)
    thread.start()
    try:
        while True:
            msg = bridge.to_workflow.get()
            if msg[0] == "done":
                break
            _, kind, call_name, info, reply = msg

            def execute(reply: queue.Queue[tuple[Any, ...]] = reply, **_: Any) -> Any:
                done: queue.Queue[tuple[str, Any]] = queue.Queue()
                reply.put(("execute", done))
                status, value = done.get()
                if status == "error":
                    raise value
                return value

            try:
                if kind == "model":
                    value = ctx.step(call_name, execute, idempotent=True)
                else:
                    tool = names.get(info["tool"], info["tool"])
                    value = ctx.tool(
                        tool,
                        info["args"],
                        run=execute,
                        targets=targets(tool, info["args"]) if targets else (),
                        idempotent=info["tool"] in idempotent,
                        approval=info["approval"],
                        risk_class=(risk_classes or {}).get(tool, ""),
                    )
            except (ToolBlocked, ToolRejected) as exc:
                reply.put(("result", _refusal_text(exc)))
                continue
            except Exception as exc:
                reply.put(("raise", exc))
                continue
            except BaseException:  # the job parks or stops: unwind the agent, then the workflow
                reply.put(("abort",))
                raise
            reply.put(("result", value))
    finally:
        thread.join(timeout=30)
    if "error" in box:
        error = box["error"]
        if isinstance(error, _Aborted):  # pragma: no cover - the workflow re-raised already
            raise RuntimeError("the agent's run was aborted")
        raise error
    return box["result"].output
