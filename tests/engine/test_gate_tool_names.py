"""The gate sees what a step does, not what it is called: the engine derives the tool name of a
python, command or http step from the step itself (jobs.spec.step_gate_tool), and a caller's
``tool`` label is only a label. Runs the real engine loop in-process on either database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from approvals.gate import gate_evaluate
from approvals.identities import identity_policy_set
from approvals.policies import policy_save
from approvals.policy_format import policy_parse
from gaitweb.lib.actors import Actor
from jobs.engine import gate
from jobs.engine.runner import advance
from jobs.models import Checkpoint, Job, StepRun
from jobs.services import job_submit
from jobs.spec import spec_load, spec_validate, step_gate_tool

pytestmark = pytest.mark.django_db(transaction=True)

ADMIN = Actor.system("ada")
AGENT = Actor(name="agent-7", scopes=frozenset({"submit", "read", "control"}), identity="agent-7")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# the policy an admin wrote to keep agent-7 from running commands (any executable, shell or
# not), recording files and POSTing anywhere: reads are fine
NO_COMMANDS = """\
default_verdict: allow
rules:
  - name: no-commands
    priority: 10
    effect: block
    match: {tool_names: [command, python:record, "http:post"]}
    reason_codes: [command_blocked]
  - name: reads
    priority: 20
    effect: allow
    match: {tool_names: [tool.read]}
"""


def steps(*raw: dict[str, Any]) -> list[dict[str, Any]]:
    return spec_validate({"steps": list(raw)})["steps"]


def test_each_step_kind_gets_a_name_derived_from_what_it_runs() -> None:
    python, command, shell, http = steps(
        {"name": "p", "kind": "python", "with": {"function": "echo"}, "tool": "tool.read"},
        {"name": "c", "kind": "command", "with": {"argv": ["/usr/bin/rm", "-rf", "/"]}, "tool": "tool.read"},
        {"name": "s", "kind": "command", "with": {"shell": True, "command": "ls"}, "tool": "tool.read"},
        {"name": "h", "kind": "http", "with": {"method": "post", "url": "https://Pay.Example.test:8443/x"}, "tool": "tool.read"},
    )  # fmt: skip
    assert [step_gate_tool(s) for s in (python, command, shell, http)] == [
        "python:echo",
        "command:/usr/bin/rm",
        "shell",
        "http:post:pay.example.test",
    ]
    job = Job(job_id="j", identity="agent-7")
    intent = gate.intent(job, command)
    assert intent["tool_name"] == "command:/usr/bin/rm"
    assert intent["context"] == {"identity": "agent-7", "job_id": "j"}
    assert "tool.read" not in str(intent)  # the label is nowhere in what the gate sees


def test_a_command_step_labelled_tool_read_is_blocked_by_a_policy_that_blocks_it(
    tmp_path: Path, allow_commands: Any
) -> None:
    allow_commands("touch")  # the deployment lets it run: the policy must still stop it
    policy_save(actor=ADMIN, name="no-commands", source=NO_COMMANDS)
    identity_policy_set(actor=ADMIN, identity="agent-7", policy="no-commands")
    marker = tmp_path / "ran"
    # the attack: call the command "tool.read", which the policy allows
    job = job_submit(
        actor=AGENT,
        spec={
            "steps": [
                {"name": "look", "kind": "python", "with": {"function": "echo"}, "tool": "tool.read"},
                {"name": "sneak", "kind": "command", "with": {"argv": ["touch", str(marker)]}, "tool": "tool.read"},
            ]
        },
    )  # fmt: skip
    assert job.policy_ref == "policy:no-commands"  # bound by the admin, not by the submit
    assert advance(job.job_id) == "gated"
    job.refresh_from_db()
    assert (job.status, job.cursor) == ("blocked", 1)
    assert not marker.exists()
    assert not StepRun.objects.filter(job=job, step_name="sneak").exists()
    checkpoint = Checkpoint.objects.get(job=job, type="blocked")
    assert "command_blocked" in checkpoint.summary
    assert "command:touch, labelled tool.read" in checkpoint.summary


@pytest.mark.parametrize(
    "step",
    [
        {"name": "s", "kind": "python", "with": {"function": "record", "args": {"path": "/nonexistent/x"}}},
        {"name": "s", "kind": "http", "with": {"method": "POST", "url": "http://payments.example.test/charge"}},
        {"name": "s", "kind": "command", "with": {"shell": True, "command": "touch /tmp/x"}},
    ],
    ids=["python", "http", "shell"],
)  # fmt: skip
def test_python_http_and_shell_steps_cannot_hide_behind_a_label(
    step: dict[str, Any], allow_commands: Any
) -> None:
    allow_commands("sh", shell=True)
    policy_save(actor=ADMIN, name="no-commands", source=NO_COMMANDS)
    identity_policy_set(actor=ADMIN, identity="agent-7", policy="no-commands")
    job = job_submit(actor=AGENT, spec={"steps": [{**step, "tool": "tool.read"}]})
    assert advance(job.job_id) == "gated"
    job.refresh_from_db()
    assert job.status == "blocked" and not StepRun.objects.filter(job=job).exists()


def test_a_rule_naming_a_step_kind_matches_every_step_of_that_kind() -> None:
    policy = policy_parse(NO_COMMANDS)
    job = Job(job_id="j", identity="agent-7")

    def verdict(raw: dict[str, Any]) -> str:
        (step,) = steps({"name": "s", **raw, "tool": "tool.read"})
        return gate_evaluate(intent=gate.intent(job, step), policy=policy).verdict

    for argv in (["/tmp/evil/ls"], ["sh", "-c", "id"], ["python3", "-c", "print(1)"]):
        assert verdict({"kind": "command", "with": {"argv": argv}}) == "block", argv
    assert verdict({"kind": "command", "with": {"shell": True, "command": "ls"}}) == "block"
    for url in ("https://payments.example.test/x", "http://10.0.0.1:8080/y"):
        assert verdict({"kind": "http", "with": {"method": "POST", "url": url}}) == "block"
        assert verdict({"kind": "http", "with": {"method": "GET", "url": url}}) == "allow"
    assert verdict({"kind": "python", "with": {"function": "echo"}}) == "allow"
    # a family is a gaitweb step kind: agents' own tool names still match exactly, as in Gait
    for name in ("command", "shell", "http:post:x.example"):
        assert gate_evaluate(intent={"tool_name": name}, policy=policy).verdict == "block"
    for name in ("tool.command", "commander", "command.run", "httpx:post:x", "tool.read"):
        assert gate_evaluate(intent={"tool_name": name}, policy=policy).verdict == "allow"


def test_the_example_policy_decides_the_example_specs_steps_by_their_derived_names() -> None:
    policy = policy_parse((EXAMPLES / "policy.yaml").read_text())
    job = Job(job_id="example", identity="agent.billing")
    seen = []
    for path in sorted((EXAMPLES / "specs").glob("*.yaml")):
        for step in spec_validate(spec_load(path.read_text()))["steps"]:
            if step["kind"] in ("python", "command", "http"):
                result = gate_evaluate(intent=gate.intent(job, step), policy=policy)
                seen.append((step_gate_tool(step), result.verdict))
    assert seen and all(verdict == "allow" for _, verdict in seen), seen
    shell, delete = steps(
        {"name": "x", "kind": "command", "with": {"shell": True, "command": "id"}},
        {"name": "y", "kind": "http", "with": {"method": "DELETE", "url": "https://a.example/1"}},
    )
    assert gate_evaluate(intent=gate.intent(job, shell), policy=policy).reason_codes == (
        "shell_step_blocked",
    )
    assert gate_evaluate(intent=gate.intent(job, delete), policy=policy).reason_codes == (
        "http_delete_blocked",
    )
