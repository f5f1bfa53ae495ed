"""A Pydantic AI agent as a workflow, with a scripted offline model (FunctionModel; no network):
it asks for a lookup, then a refund that needs an approval, then answers (jobs.agents).

Every model request and every tool run appends a line to the file the test names, so the test
counts them outside the database."""

from __future__ import annotations

import time
from typing import Any

from pydantic_ai import Agent, RunContext, Tool
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from jobs.agents import agent_run
from jobs.durable import WorkflowContext, workflow


def _note(path: str, what: str) -> None:
    with open(path, "a") as f:
        f.write(what + "\n")


def scripted(path: str, invoice: str) -> FunctionModel:
    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = [
            p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)
        ]
        _note(path, f"model {len(returns)}")
        if not returns:
            return ModelResponse(parts=[ToolCallPart("lookup", {"invoice": invoice})])
        if len(returns) == 1:
            total = returns[0].content["total"]
            return ModelResponse(
                parts=[ToolCallPart("refund", {"invoice": invoice, "amount": total})]
            )
        return ModelResponse(parts=[TextPart(f"Done: {returns[-1].content}")])

    return FunctionModel(model)


def lookup(ctx: RunContext[dict[str, Any]], invoice: str) -> dict[str, Any]:
    _note(ctx.deps["path"], "tool lookup")
    time.sleep(ctx.deps.get("seconds", 0))
    return {"invoice": invoice, "total": 420}


def refund(ctx: RunContext[dict[str, Any]], invoice: str, amount: int) -> str:
    _note(ctx.deps["path"], "tool refund")
    return f"refund {invoice} {amount} sent"


@workflow("refund-agent-test")
def refund_agent(
    ctx: WorkflowContext, *, path: str, invoice: str, seconds: float = 0.0, hitl: bool = False
) -> str:
    agent = Agent(
        scripted(path, invoice),
        deps_type=dict,
        tools=[Tool(lookup), Tool(refund, requires_approval=hitl)],
    )
    return agent_run(
        ctx,
        agent,
        f"Refund invoice {invoice}",
        tool_names={"refund": "payments.refund"},
        idempotent_tools={"lookup"},
        deps={"path": path, "seconds": seconds},
    )
