"""A durable, governed refund agent: a Pydantic AI agent run as a gaitweb workflow
(docs/workflows.md). Registered only in demo mode (`make run` lists this module in the step
modules), where the demo seeds one job of it, ``demo-refund-agent``:

1. the scripted model (Pydantic AI's offline ``FunctionModel``: no network, no API key) asks
   for ``invoices.read``, which the demo policy allows (a low-risk read);
2. it then asks for ``invoices.refund``, which the policy sends to two reviewers: the job
   parks in ``decision_needed`` holding no worker, and the approvals queue shows the refund's
   arguments;
3. once two reviewers approve, the job replays (the model is not asked again for the turns it
   answered, the lookup does not run again), the refund runs once, and the model answers.

Outside the demo, register your own workflows in a module listed in ``GAIT_STEP_MODULES`` and
submit them as ``{"workflow": NAME, "input": {...}}`` (API, CLI, dashboard, templates, MCP):

    python manage.py gait job submit --identity agent.billing --spec refund.yaml --json

with ``refund.yaml``::

    workflow: refund-agent
    input: {invoice: INV-42}
"""

from __future__ import annotations

from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from jobs.agents import agent_run
from jobs.durable import WorkflowContext, workflow

INVOICES = {"INV-42": {"customer": "ACME GmbH", "total": 420, "currency": "EUR"}}


def script(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """The scripted model: look the invoice up, refund it, then report."""
    prompt = str(messages[0].parts[-1].content)  # type: ignore[union-attr]
    invoice = prompt.rsplit(" ", 1)[-1]
    returns = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
    if not returns:
        return ModelResponse(parts=[ToolCallPart("lookup", {"invoice": invoice})])
    if len(returns) == 1:
        amount = returns[0].content.get("total", 0) if isinstance(returns[0].content, dict) else 0
        return ModelResponse(parts=[ToolCallPart("refund", {"invoice": invoice, "amount": amount})])
    return ModelResponse(parts=[TextPart(f"Refunded {invoice}: {returns[-1].content}")])


agent = Agent(FunctionModel(script), deps_type=type(None))


@agent.tool
def lookup(ctx: RunContext[None], invoice: str) -> dict[str, Any]:
    """Read an invoice."""
    return INVOICES.get(invoice, {"error": "unknown invoice", "total": 0})


@agent.tool
def refund(ctx: RunContext[None], invoice: str, amount: int) -> dict[str, Any]:
    """Send a refund (here: pretend to)."""
    return {"refund_id": f"rf-{invoice}", "amount": amount, "status": "sent"}


@workflow("refund-agent")
def refund_agent(ctx: WorkflowContext, *, invoice: str) -> dict[str, Any]:
    ctx.checkpoint("plan", f"look up {invoice}, refund it (two reviewers approve), report")
    answer = agent_run(
        ctx,
        agent,
        f"Refund invoice {invoice}",
        tool_names={"lookup": "invoices.read", "refund": "invoices.refund"},
        risk_classes={"invoices.read": "low"},
        idempotent_tools={"lookup"},
    )
    return {"invoice": invoice, "answer": answer}
