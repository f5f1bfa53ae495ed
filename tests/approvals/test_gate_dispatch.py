"""External agents' dispatch checks against a job, and their journal (approvals.gate)."""

from __future__ import annotations

from typing import Any

import pytest

from approvals.gate import gate_dispatch, gate_evaluate, job_policy
from approvals.identities import identity_revoke
from approvals.policies import policy_binding_resolve, policy_save
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import Forbidden, InvalidInput
from jobs import services as jobs
from jobs.journal import chain_verify
from jobs.models import Job, JobEvent

pytestmark = pytest.mark.django_db

AGENT = Actor.system("agent-runner", identity="agent.billing")
ADMIN = Actor.system("secops")
POLICY = """\
default_verdict: allow
rules:
  - name: block-delete
    priority: 10
    effect: block
    match: {tool_names: [tool.delete]}
    reason_codes: [destructive_tool_blocked]
  - name: approve-write
    priority: 20
    effect: require_approval
    match: {tool_names: [tool.write]}
  - name: dry-run-deploy
    priority: 20
    effect: dry_run
    match: {tool_names: [tool.deploy]}
"""


def job_with_policy(job_id: str = "job_d1") -> Job:
    policy_save(actor=ADMIN, name="billing", source=POLICY)
    return jobs.job_submit(actor=AGENT, job_id=job_id, policy=policy_binding_resolve(ref="billing"))


def dispatch(tool: str, job_id: str = "job_d1", **kw: Any) -> Any:
    return gate_dispatch(
        job_id=job_id,
        intent={"tool_name": tool, "targets": [{"kind": "path", "value": "/tmp/x"}]},
        actor=kw.pop("actor", AGENT),
        path=kw.pop("path", "api"),
    )


def last_event(job_id: str = "job_d1") -> JobEvent:
    return JobEvent.objects.filter(job__job_id=job_id).order_by("-revision").first()


@pytest.mark.parametrize(
    ("tool", "verdict", "event", "reason_code"),
    [
        ("tool.read", "allow", "dispatch_allowed", "policy_allowed"),
        ("tool.deploy", "dry_run", "dispatch_allowed", "policy_dry_run"),
        ("tool.write", "require_approval", "dispatch_blocked", "approval_required"),
        ("tool.delete", "block", "dispatch_blocked", "policy_blocked"),
    ],
)
def test_every_dispatch_is_journaled_with_its_path_tool_and_verdict(
    tool: str, verdict: str, event: str, reason_code: str
) -> None:
    job = job_with_policy()
    result = dispatch(tool, path="mcp")
    assert result.verdict == verdict
    ev = last_event()
    assert (ev.type, ev.reason_code, ev.actor) == (event, reason_code, "agent-runner")
    assert (ev.payload["path"], ev.payload["tool"], ev.payload["verdict"]) == ("mcp", tool, verdict)
    assert ev.payload["policy_digest"] == job.policy_digest == result.policy_digest
    assert chain_verify(Job.objects.get(job_id="job_d1")).ok


def test_an_emergency_stopped_job_blocks_every_dispatch_even_allowed_tools() -> None:
    job_with_policy()
    jobs.job_stop(actor=ADMIN, job_id="job_d1", reason="runaway")
    result = dispatch("tool.read")
    assert (result.verdict, result.reason_codes) == ("block", ("emergency_stop_preempted",))
    ev = last_event()
    assert (ev.type, ev.reason_code, ev.payload["tool"]) == (
        "dispatch_blocked",
        "emergency_stop_preempted",
        "tool.read",
    )
    assert Job.objects.get(job_id="job_d1").status == "emergency_stopped"


def test_an_unknown_job_blocks_with_state_unavailable_and_writes_nothing() -> None:
    before = JobEvent.objects.count()
    result = dispatch("tool.read", job_id="job_nobody")
    assert (result.verdict, result.reason_codes) == ("block", ("emergency_stop_state_unavailable",))
    assert JobEvent.objects.count() == before


def test_a_revoked_identity_blocks_dispatch_and_is_journaled() -> None:
    job_with_policy()
    identity_revoke(actor=ADMIN, identity="agent.billing", reason="key leaked")
    result = dispatch("tool.read")
    assert (result.verdict, result.reason_codes) == ("block", ("identity_revoked",))
    assert (last_event().type, last_event().reason_code) == ("dispatch_blocked", "identity_revoked")


def test_a_finished_job_blocks_dispatch() -> None:
    job_with_policy()
    jobs.job_cancel(actor=ADMIN, job_id="job_d1")
    assert dispatch("tool.read").reason_codes == ("job_not_active",)


def test_a_job_without_a_policy_is_not_gated_but_still_journaled() -> None:
    jobs.job_submit(actor=AGENT, job_id="job_free")
    result = dispatch("tool.delete", job_id="job_free")
    assert (result.verdict, result.reason_codes) == ("allow", ("no_policy_bound",))
    assert last_event("job_free").type == "dispatch_allowed"


def test_the_job_policy_identity_fills_the_intent_and_its_digest() -> None:
    job_with_policy()
    result = dispatch("tool.read")
    alone = gate_evaluate(
        intent={
            "tool_name": "tool.read",
            "targets": [{"kind": "path", "value": "/tmp/x"}],
            "context": {"identity": "agent.billing", "job_id": "job_d1"},
        },
        policy=None,
    )
    assert result.intent_digest == alone.intent_digest


def test_bad_dispatch_input_is_refused_before_anything_is_written() -> None:
    job_with_policy()
    before = JobEvent.objects.count()
    with pytest.raises(InvalidInput) as info:
        gate_dispatch(job_id="job_d1", intent={"tool_name": ""}, actor=AGENT)
    assert info.value.code == "intent_invalid"
    with pytest.raises(InvalidInput) as info:
        gate_dispatch(
            job_id="job_d1",
            intent={"tool_name": "t", "context": {"job_id": "job_other"}},
            actor=AGENT,
        )
    assert info.value.code == "intent_job_mismatch"
    assert JobEvent.objects.count() == before


def test_dispatch_needs_the_submit_scope() -> None:
    job_with_policy()
    with pytest.raises(Forbidden):
        dispatch("tool.read", actor=Actor(name="reader", scopes=frozenset({"read"})))


@pytest.mark.django_db(transaction=True)
def test_concurrent_dispatches_keep_the_journal_gapless(db: None) -> None:
    import threading

    from django.db import connection

    job_with_policy()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                dispatch("tool.read")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    revisions = list(
        JobEvent.objects.filter(job__job_id="job_d1")
        .order_by("revision")
        .values_list("revision", flat=True)
    )
    assert revisions == list(range(1, len(revisions) + 1))
    assert JobEvent.objects.filter(job__job_id="job_d1", type="dispatch_allowed").count() == 40
    assert chain_verify(Job.objects.get(job_id="job_d1")).ok


def test_job_policy_gives_the_engine_the_bound_policy_from_the_cache() -> None:
    job = job_with_policy()
    assert job_policy(job).digest == job.policy_digest
    assert job_policy(jobs.job_submit(actor=AGENT, job_id="job_none")) is None
