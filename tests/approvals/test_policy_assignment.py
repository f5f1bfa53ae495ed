"""Policies are assigned by admins, not chosen by callers (docs/security.md): the services, the
CLI and the stats. Each bypass that used to work is reproduced and must now fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from approvals.identities import (
    identity_policy_clear,
    identity_policy_set,
    identity_revoke,
    submit_admission,
)
from approvals.models import IdentityPolicy
from approvals.policies import policy_binding_resolve, policy_request_resolve, policy_save
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import Forbidden, GaitError, NotFound, PolicyRefused
from jobs.management.commands.gait import main
from jobs.models import Job, JobEvent
from jobs.services import job_cancel, job_pause, job_resume, job_retry, job_submit

pytestmark = pytest.mark.django_db

ADMIN = Actor.system("ada")
AGENT = Actor(name="agent-7", scopes=frozenset({"submit", "read", "control"}), identity="agent-7")

STRICT = "default_verdict: block\nrules:\n  - {name: reads, effect: allow, match: {tool_names: [tool.read]}}\n"
STRICTER = "default_verdict: block\n"
LENIENT = "default_verdict: allow\n"


@pytest.fixture
def policies() -> dict[str, Any]:
    return {
        name: policy_save(actor=ADMIN, name=name, source=source)
        for name, source in (("strict", STRICT), ("stricter", STRICTER), ("lenient", LENIENT))
    }


@pytest.fixture
def bound(policies: dict[str, Any]) -> IdentityPolicy:
    """agent-7's jobs are bound to strict; it may ask for stricter instead."""
    return identity_policy_set(
        actor=ADMIN, identity="agent-7", policy="strict", may_request=["stricter"]
    )


def submitted_event(job: Job) -> JobEvent:
    return JobEvent.objects.get(job=job, type="submitted")


# --- submit ---------------------------------------------------------------------------------------


def test_a_submit_without_a_policy_is_bound_to_the_identity_policy(
    bound: IdentityPolicy, policies: dict[str, Any]
) -> None:
    job = job_submit(actor=AGENT)
    assert (job.policy_id, job.policy_ref) == (policies["strict"].pk, "policy:strict")
    assert submitted_event(job).payload["policy_assignment"] == "identity"


def test_a_submit_asking_for_a_weaker_policy_is_refused_and_writes_nothing(
    bound: IdentityPolicy,
) -> None:
    # the attack: the caller picks the policy that allows everything
    with pytest.raises(PolicyRefused) as refused:
        job_submit(actor=AGENT, policy=policy_request_resolve(ref="lenient"))
    assert refused.value.code == "policy_not_allowed"
    assert refused.value.details["assigned_policy"] == "strict"
    assert refused.value.details["may_request"] == ["stricter"]
    assert not Job.objects.exists()


def test_a_submit_may_ask_for_a_stricter_policy_the_admin_allowed(
    bound: IdentityPolicy, policies: dict[str, Any]
) -> None:
    job = job_submit(actor=AGENT, policy=policy_request_resolve(ref="stricter"))
    assert job.policy_id == policies["stricter"].pk
    assert submitted_event(job).payload["policy_assignment"] == "request"
    # asking for the assigned policy itself is fine too
    assert job_submit(actor=AGENT, policy=policy_request_resolve(ref="strict")).policy_ref == (
        "policy:strict"
    )


def test_an_old_version_of_the_assigned_policy_is_refused(
    bound: IdentityPolicy, policies: dict[str, Any]
) -> None:
    policy_save(actor=ADMIN, name="strict", source=STRICTER)  # v2: the admin tightened it
    with pytest.raises(PolicyRefused) as refused:
        job_submit(actor=AGENT, policy=policy_request_resolve(ref="strict@1"))
    assert refused.value.code == "policy_not_allowed"
    job = job_submit(actor=AGENT)
    assert job.policy.version == 2


@pytest.mark.parametrize("word", ["none", "None", "null", " off ", "ungated"])
def test_no_caller_can_ask_for_no_policy(word: str, policies: dict[str, Any]) -> None:
    with pytest.raises(PolicyRefused) as refused:
        policy_request_resolve(ref=word)
    assert refused.value.code == "policy_none_refused"
    with pytest.raises(PolicyRefused):
        policy_binding_resolve(ref=word)  # the CLI's --policy


def test_a_policy_cannot_be_stored_under_a_name_that_means_none() -> None:
    with pytest.raises(GaitError) as refused:
        policy_save(actor=ADMIN, name="none", source=LENIENT)
    assert refused.value.code == "invalid_policy_name"


def test_a_policy_file_cannot_replace_the_assigned_policy(
    bound: IdentityPolicy, tmp_path: Path
) -> None:
    path = tmp_path / "allow-all.yaml"
    path.write_text(LENIENT)
    with pytest.raises(PolicyRefused) as refused:
        job_submit(actor=AGENT, policy=policy_binding_resolve(ref=str(path)))
    assert refused.value.code == "policy_not_allowed"


def test_the_default_policy_binds_identities_without_one(
    settings: Any, policies: dict[str, Any]
) -> None:
    settings.GAIT = {**settings.GAIT, "DEFAULT_POLICY": "strict"}
    job = job_submit(actor=AGENT)
    assert job.policy_id == policies["strict"].pk
    assert submitted_event(job).payload["policy_assignment"] == "default"
    # identities on the default may not pick another policy
    with pytest.raises(PolicyRefused):
        job_submit(actor=AGENT, policy=policy_request_resolve(ref="lenient"))
    # a job without any identity gets the default too
    assert job_submit(actor=Actor.system("cron")).policy_id == policies["strict"].pk


def test_an_identity_binding_wins_over_the_default(
    settings: Any, bound: IdentityPolicy, policies: dict[str, Any]
) -> None:
    settings.GAIT = {**settings.GAIT, "DEFAULT_POLICY": "lenient"}
    assert job_submit(actor=AGENT).policy_id == policies["strict"].pk


def test_a_default_naming_no_stored_policy_fails_closed(settings: Any) -> None:
    settings.GAIT = {**settings.GAIT, "DEFAULT_POLICY": "typo"}
    with pytest.raises(GaitError) as refused:
        job_submit(actor=AGENT)
    assert (refused.value.code, refused.value.http_status) == ("policy_assignment_unavailable", 503)
    assert not Job.objects.exists()


def test_with_no_policy_anywhere_jobs_run_as_before(policies: dict[str, Any]) -> None:
    ungated = job_submit(actor=AGENT)
    assert ungated.policy_id is None
    assert submitted_event(ungated).payload["policy_assignment"] == "none"
    chosen = job_submit(actor=AGENT, policy=policy_request_resolve(ref="lenient"))
    assert chosen.policy_id == policies["lenient"].pk


# --- resume and retry ----------------------------------------------------------------------------


def test_a_resume_binds_the_policy_assigned_since_the_submit(policies: dict[str, Any]) -> None:
    job = job_submit(actor=AGENT)  # ungated: nothing assigned yet
    job_pause(actor=AGENT, job_id=job.job_id)
    identity_policy_set(actor=ADMIN, identity="agent-7", policy="strict")
    job = job_resume(actor=AGENT, job_id=job.job_id)
    assert job.policy_id == policies["strict"].pk
    event = JobEvent.objects.filter(job=job, type="resumed").get()
    assert event.reason_code == "resumed_policy_transition"
    assert event.payload["policy_assignment"] == "identity"
    assert event.payload["policy_digest_before"] == ""


def test_a_resume_asking_for_a_weaker_policy_is_refused(
    bound: IdentityPolicy, policies: dict[str, Any]
) -> None:
    job = job_submit(actor=AGENT)
    job_pause(actor=AGENT, job_id=job.job_id)
    with pytest.raises(PolicyRefused) as refused:
        job_resume(actor=AGENT, job_id=job.job_id, policy=policy_request_resolve(ref="lenient"))
    assert refused.value.code == "policy_not_allowed"
    job.refresh_from_db()
    assert (job.status, job.policy_id) == ("paused", policies["strict"].pk)


def test_a_resume_keeps_a_permitted_policy_at_its_current_version(
    bound: IdentityPolicy, policies: dict[str, Any]
) -> None:
    job = job_submit(actor=AGENT, policy=policy_request_resolve(ref="stricter"))
    job_pause(actor=AGENT, job_id=job.job_id)
    job = job_resume(actor=AGENT, job_id=job.job_id)
    assert job.policy_id == policies["stricter"].pk
    assert JobEvent.objects.get(job=job, type="resumed").reason_code == "resumed"


def test_a_retry_binds_the_policy_assigned_since_the_submit(policies: dict[str, Any]) -> None:
    job = job_submit(
        actor=AGENT, spec={"steps": [{"name": "a", "kind": "python", "with": {"function": "noop"}}]}
    )
    job_cancel(actor=AGENT, job_id=job.job_id)
    identity_policy_set(actor=ADMIN, identity="agent-7", policy="strict")
    job = job_retry(actor=AGENT, job_id=job.job_id)
    assert job.policy_id == policies["strict"].pk
    event = JobEvent.objects.get(job=job, type="retried")
    assert (event.payload["policy_assignment"], event.payload["policy_digest"]) == (
        "identity",
        policies["strict"].digest,
    )


# --- who assigns ---------------------------------------------------------------------------------


def test_only_admins_assign_policies(policies: dict[str, Any]) -> None:
    with pytest.raises(Forbidden):
        identity_policy_set(actor=AGENT, identity="agent-7", policy="lenient")
    with pytest.raises(Forbidden):
        identity_policy_clear(actor=AGENT, identity="agent-7")
    assert not IdentityPolicy.objects.exists()


def test_an_assignment_names_stored_policies_only(policies: dict[str, Any]) -> None:
    with pytest.raises(NotFound):
        identity_policy_set(actor=ADMIN, identity="agent-7", policy="nope")
    with pytest.raises(NotFound):
        identity_policy_set(actor=ADMIN, identity="agent-7", policy="strict", may_request=["x"])
    assert not IdentityPolicy.objects.exists()


def test_clearing_a_binding_falls_back_to_the_default(
    settings: Any, bound: IdentityPolicy, policies: dict[str, Any]
) -> None:
    settings.GAIT = {**settings.GAIT, "DEFAULT_POLICY": "stricter"}
    assert identity_policy_clear(actor=ADMIN, identity="agent-7") is True
    assert identity_policy_clear(actor=ADMIN, identity="agent-7") is False
    assert job_submit(actor=AGENT).policy_id == policies["stricter"].pk


# --- CLI --------------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_the_cli_sets_shows_lists_and_clears_identity_policies(
    capsys: pytest.CaptureFixture[str], policies: dict[str, Any]
) -> None:
    code, out = run(capsys, "identity", "policy", "show", "agent-7")
    assert (code, out["source"], out["policy"]) == (0, "none", None)
    assert "UNGATED" in out["summary"]
    code, out = run(
        capsys, "identity", "policy", "set", "agent-7", "strict", "--may-request", "stricter"
    )
    assert (code, out["policy"], out["may_request"]) == (0, "strict", ["stricter"])
    code, out = run(capsys, "identity", "policy", "show", "agent-7")
    assert (out["source"], out["policy"], out["policy_digest"]) == (
        "identity",
        "strict",
        policies["strict"].digest,
    )
    code, out = run(capsys, "identity", "policy", "list")
    assert [r["identity"] for r in out["identity_policies"]] == ["agent-7"]
    assert out["gate"]["mode"] == "partially_gated"
    code, out = run(capsys, "identity", "policy", "clear", "agent-7")
    assert (code, out["cleared"]) == (0, True)
    assert not IdentityPolicy.objects.exists()


def test_cli_job_submit_is_bound_to_the_identity_policy_whatever_it_asks(
    capsys: pytest.CaptureFixture[str], bound: IdentityPolicy, tmp_path: Path
) -> None:
    path = tmp_path / "allow-all.yaml"
    path.write_text(LENIENT)
    code, out = run(capsys, "job", "submit", "--identity", "agent-7", "--policy", str(path))
    assert (code, out["error_code"]) == (6, "policy_not_allowed")
    code, out = run(capsys, "job", "submit", "--identity", "agent-7", "--policy", "none")
    assert out["error_code"] == "policy_none_refused"
    code, out = run(capsys, "job", "submit", "--identity", "agent-7")
    assert (code, out["job"]["policy_ref"]) == (0, "policy:strict")
    assert Job.objects.count() == 1


# --- ungated, said loudly -------------------------------------------------------------------------


def test_stats_say_ungated_when_no_policy_is_assigned_anywhere(
    capsys: pytest.CaptureFixture[str],
) -> None:
    job_submit(actor=AGENT)
    code = main(["jobs", "stats"])
    text = capsys.readouterr().out
    assert code == 0 and text.startswith("UNGATED:")
    assert "1 unfinished job(s) bound to no policy" in text
    code, out = run(capsys, "jobs", "stats")
    gate = out["stats"]["gate"]
    assert (gate["mode"], gate["ungated_active_jobs"]) == ("ungated", 1)


def test_stats_say_gated_once_a_default_policy_is_set(
    capsys: pytest.CaptureFixture[str], settings: Any, policies: dict[str, Any]
) -> None:
    settings.GAIT = {**settings.GAIT, "DEFAULT_POLICY": "strict"}
    job_submit(actor=AGENT)
    code = main(["jobs", "stats"])
    text = capsys.readouterr().out
    assert code == 0 and "UNGATED" not in text and "ungated" not in text
    code, out = run(capsys, "jobs", "stats")
    assert out["stats"]["gate"]["mode"] == "gated"
    assert out["stats"]["gate"]["ungated_active_jobs"] == 0


def test_submit_admission_reads_revocation_and_binding_in_one_round_trip(
    bound: IdentityPolicy, policies: dict[str, Any]
) -> None:
    """Submit's admission (revoked? which policy?) is one statement for an identity without a
    binding of its own, and a revoked identity is refused whether or not it has a binding."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        revoked, assignment = submit_admission(identity="agent-unbound")
    assert (revoked, assignment.gated, len(ctx.captured_queries)) == (False, False, 1)
    revoked, assignment = submit_admission(identity="agent-7")
    assert (revoked, assignment.policy, assignment.source) == (
        False,
        policies["strict"].policy,
        "identity",
    )
    identity_revoke(actor=ADMIN, identity="agent-7", reason="leaked key")
    identity_revoke(actor=ADMIN, identity="agent-unbound", reason="leaked key")
    assert submit_admission(identity="agent-7")[0] is True
    assert submit_admission(identity="agent-unbound")[0] is True
    for who in ("agent-7", "agent-unbound"):
        actor = Actor(name=who, scopes=frozenset({"submit", "read"}), identity=who)
        with pytest.raises(PolicyRefused) as refused:
            job_submit(actor=actor)
        assert refused.value.code == "identity_revoked"
    assert not Job.objects.exists()
