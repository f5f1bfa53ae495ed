"""Every row of the lifecycle table (docs/lifecycle.md) and every refusal of resume, through services."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from approvals.models import RevokedIdentity
from approvals.policies import PolicyBinding
from gaitweb.lib.actors import Actor
from gaitweb.lib.canonical import ZERO_HASH
from gaitweb.lib.errors import Conflict, Forbidden, GaitError, InvalidInput, NotFound, PolicyRefused
from jobs import services
from jobs.journal import event_append
from jobs.models import Checkpoint, Job, JobEvent, JobStatus

pytestmark = pytest.mark.django_db

AGENT = Actor.system("worker_1", identity="worker_1")
SECOPS = Actor.system("secops")
REVIEWER = Actor.system("reviewer_1", identity="reviewer_1")
POLICY_A = PolicyBinding(digest="a" * 64, ref="./policy.yaml")
POLICY_B = PolicyBinding(digest="b" * 64, ref="./policy.yaml")


def submit(job_id: str = "job_1", **kw: Any) -> Job:
    kw.setdefault("identity", "worker_1")
    return services.job_submit(actor=AGENT, job_id=job_id, **kw)


def events(job_id: str = "job_1") -> list[tuple[str, str]]:
    return list(
        JobEvent.objects.filter(job__job_id=job_id)
        .order_by("revision")
        .values_list("type", "reason_code")
    )


def status(job_id: str = "job_1") -> str:
    return Job.objects.get(job_id=job_id).status


def to_status(target: str, job_id: str = "job_1") -> Job:
    """A job (without steps) brought to ``target`` through the public services."""
    submit(job_id)
    if target == JobStatus.RUNNING:
        pass
    elif target == JobStatus.PAUSED:
        services.job_pause(actor=SECOPS, job_id=job_id)
    elif target == JobStatus.DECISION_NEEDED:
        services.job_checkpoint_add(
            actor=AGENT,
            job_id=job_id,
            type="decision-needed",
            summary="ok?",
            required_action="approve refund",
        )
    elif target == JobStatus.BLOCKED:
        services.job_checkpoint_add(
            actor=AGENT, job_id=job_id, type="blocked", summary="cannot go on"
        )
    elif target == JobStatus.COMPLETED:
        services.job_checkpoint_add(actor=AGENT, job_id=job_id, type="completed", summary="done")
    elif target == JobStatus.CANCELLED:
        services.job_cancel(actor=SECOPS, job_id=job_id)
    elif target == JobStatus.EMERGENCY_STOPPED:
        services.job_stop(actor=SECOPS, job_id=job_id)
    else:
        Job.objects.filter(job_id=job_id).update(status=target)
    return Job.objects.get(job_id=job_id)


def assert_refused_without_writes(
    exc_type: type[GaitError], code: str, fn: Any, job_id: str = "job_1"
) -> GaitError:
    before = list(JobEvent.objects.filter(job__job_id=job_id).values_list("revision", "hash"))
    job_before = Job.objects.filter(job_id=job_id).values().first()
    with pytest.raises(exc_type) as info:
        fn()
    assert info.value.code == code
    assert (
        list(JobEvent.objects.filter(job__job_id=job_id).values_list("revision", "hash")) == before
    )
    after = Job.objects.filter(job_id=job_id).values().first()
    if job_before and after:
        job_before.pop("updated_at")
        after.pop("updated_at")
    assert after == job_before
    return info.value


# --- submit ------------------------------------------------------------------------------------


def test_submit_without_steps_starts_running_with_the_first_chained_event() -> None:
    job = submit(policy=POLICY_A)
    assert job.status == JobStatus.RUNNING
    ev = JobEvent.objects.get(job=job)
    assert (ev.revision, ev.type, ev.reason_code) == (1, "submitted", "submitted")
    assert ev.prev_hash == ZERO_HASH
    assert job.last_event_hash == ev.hash and job.revision == 1
    assert job.policy_digest == "a" * 64 and job.identity == "worker_1"


def test_submit_generates_a_job_id_when_none_is_given() -> None:
    job = services.job_submit(actor=AGENT, identity="worker_1")
    assert job.job_id.startswith("job_") and len(job.job_id) > 10


@pytest.mark.parametrize(
    ("job_id", "code"),
    [
        ("-bad", "invalid_job_id"),
        ("has space", "invalid_job_id"),
        ("x" * 129, "invalid_job_id"),
        ("a/b", "invalid_job_id"),
    ],
)
def test_submit_refuses_bad_job_ids_and_writes_nothing(job_id: str, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        submit(job_id)
    assert info.value.code == code
    assert Job.objects.count() == 0 and JobEvent.objects.count() == 0


def test_submit_refuses_a_duplicate_job_id() -> None:
    submit()
    with pytest.raises(Conflict) as info:
        submit()
    assert info.value.code == "job_exists"
    assert JobEvent.objects.count() == 1


def test_submit_refuses_a_revoked_identity() -> None:
    RevokedIdentity.objects.create(identity="worker_1", reason="leaked key")
    with pytest.raises(PolicyRefused) as info:
        submit()
    assert info.value.code == "identity_revoked"
    assert Job.objects.count() == 0


def test_submit_refuses_an_over_long_identity_and_bad_labels() -> None:
    with pytest.raises(InvalidInput) as info:
        submit(identity="x" * 300)
    assert info.value.code == "identity_too_long"
    with pytest.raises(InvalidInput) as info:
        submit(labels={"k": 5})
    assert info.value.code == "invalid_labels"
    assert Job.objects.count() == 0


def test_unknown_jobs_are_not_found() -> None:
    with pytest.raises(NotFound) as info:
        services.job_pause(actor=SECOPS, job_id="nope")
    assert info.value.code == "job_not_found"


# --- checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cp_type", "new_status", "reason"),
    [
        ("plan", JobStatus.RUNNING, "checkpoint_plan"),
        ("progress", JobStatus.RUNNING, "checkpoint_progress"),
        ("decision-needed", JobStatus.DECISION_NEEDED, "checkpoint_decision_needed"),
        ("blocked", JobStatus.BLOCKED, "checkpoint_blocked"),
        ("completed", JobStatus.COMPLETED, "checkpoint_completed"),
    ],
)
def test_checkpoint_types_record_and_move_the_job(
    cp_type: str, new_status: str, reason: str
) -> None:
    submit()
    cp = services.job_checkpoint_add(
        actor=AGENT, job_id="job_1", type=cp_type, summary="step 1 complete"
    )
    assert cp.checkpoint_id == "cp_0001"
    assert status() == new_status
    assert events()[-1] == ("checkpoint_added", reason)
    assert cp.event_revision == 2


def test_checkpoint_ids_count_up_per_job() -> None:
    submit()
    submit("job_2")
    ids = [
        services.job_checkpoint_add(
            actor=AGENT, job_id="job_1", type="progress", summary=f"s{i}"
        ).checkpoint_id
        for i in range(3)
    ]
    other = services.job_checkpoint_add(
        actor=AGENT, job_id="job_2", type="plan", summary="p"
    ).checkpoint_id
    assert ids == ["cp_0001", "cp_0002", "cp_0003"] and other == "cp_0001"


@pytest.mark.parametrize("from_status", [JobStatus.PAUSED, JobStatus.QUEUED, JobStatus.WAITING])
def test_plan_and_progress_checkpoints_are_allowed_while_not_running(from_status: str) -> None:
    to_status(from_status)
    services.job_checkpoint_add(actor=AGENT, job_id="job_1", type="progress", summary="still here")
    assert status() == from_status


@pytest.mark.parametrize("cp_type", ["decision-needed", "blocked", "completed"])
def test_moving_checkpoints_need_a_running_job(cp_type: str) -> None:
    to_status(JobStatus.PAUSED)
    assert_refused_without_writes(
        Conflict,
        "invalid_transition",
        lambda: services.job_checkpoint_add(actor=AGENT, job_id="job_1", type=cp_type, summary="x"),
    )


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"type": "progress", "summary": "é" * 257}, "summary_too_long"),
        ({"type": "progress", "summary": ""}, "missing_summary"),
        ({"type": "progress", "summary": "   "}, "missing_summary"),
        ({"type": "nonsense", "summary": "x"}, "invalid_checkpoint_type"),
        (
            {"type": "progress", "summary": "x", "required_action": "do"},
            "required_action_not_allowed",
        ),
        ({"type": "progress", "summary": 42}, "invalid_field"),
    ],
)
def test_bad_checkpoints_are_refused_with_a_reason_and_write_nothing(
    kwargs: dict[str, Any], code: str
) -> None:
    submit()
    assert_refused_without_writes(
        InvalidInput,
        code,
        lambda: services.job_checkpoint_add(actor=AGENT, job_id="job_1", **kwargs),
    )
    assert Checkpoint.objects.count() == 0


def test_a_summary_of_exactly_512_bytes_is_accepted() -> None:
    submit()
    cp = services.job_checkpoint_add(
        actor=AGENT, job_id="job_1", type="progress", summary="a" * 510 + "é"
    )
    assert len(cp.summary.encode()) == 512


# --- pause / stop / approve / reject / cancel ---------------------------------------------------


@pytest.mark.parametrize(
    "from_status",
    [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.WAITING, JobStatus.DECISION_NEEDED],
)
def test_pause_from_each_allowed_status(from_status: str) -> None:
    to_status(from_status)
    services.job_pause(actor=SECOPS, job_id="job_1", reason="lunch")
    assert status() == JobStatus.PAUSED
    assert events()[-1] == ("paused", "paused")


@pytest.mark.parametrize(
    "from_status",
    [
        JobStatus.PAUSED,
        JobStatus.BLOCKED,
        JobStatus.COMPLETED,
        JobStatus.CANCELLED,
        JobStatus.FAILED,
        JobStatus.EMERGENCY_STOPPED,
    ],
)
def test_pause_is_refused_elsewhere(from_status: str) -> None:
    to_status(from_status)
    assert_refused_without_writes(
        Conflict, "invalid_transition", lambda: services.job_pause(actor=SECOPS, job_id="job_1")
    )


@pytest.mark.parametrize(
    "from_status",
    [
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        JobStatus.WAITING,
        JobStatus.PAUSED,
        JobStatus.DECISION_NEEDED,
        JobStatus.BLOCKED,
    ],
)
def test_stop_from_any_non_terminal_status(from_status: str) -> None:
    to_status(from_status)
    job = services.job_stop(actor=SECOPS, job_id="job_1", reason="runaway agent")
    assert job.status == JobStatus.EMERGENCY_STOPPED
    assert job.stopped_by == "secops" and job.stopped_at is not None
    assert events()[-1] == ("emergency_stop_acknowledged", "emergency_stop_preempted")
    assert JobEvent.objects.filter(job=job).last().payload["previous_status"] == from_status


@pytest.mark.parametrize(
    "from_status", [JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.EMERGENCY_STOPPED]
)
def test_stop_is_refused_for_finished_or_already_stopped_jobs(from_status: str) -> None:
    to_status(from_status)
    assert_refused_without_writes(
        Conflict, "invalid_transition", lambda: services.job_stop(actor=SECOPS, job_id="job_1")
    )


@pytest.mark.parametrize(
    "from_status",
    [JobStatus.DECISION_NEEDED, JobStatus.PAUSED, JobStatus.BLOCKED, JobStatus.EMERGENCY_STOPPED],
)
def test_approve_records_an_approval_and_keeps_the_status(from_status: str) -> None:
    to_status(from_status)
    services.job_approve(actor=REVIEWER, job_id="job_1", reason="validated input")
    assert status() == from_status
    assert events()[-1] == ("approved", "approval_recorded")


@pytest.mark.parametrize("from_status", [JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.COMPLETED])
def test_approve_is_refused_when_nothing_waits_for_it(from_status: str) -> None:
    to_status(from_status)
    assert_refused_without_writes(
        Conflict, "invalid_transition", lambda: services.job_approve(actor=REVIEWER, job_id="job_1")
    )


def test_the_submitter_cannot_approve_their_own_job() -> None:
    to_status(JobStatus.DECISION_NEEDED)
    assert_refused_without_writes(
        PolicyRefused,
        "self_approval_forbidden",
        lambda: services.job_approve(actor=AGENT, job_id="job_1"),
    )


def test_a_second_approval_of_the_same_decision_is_a_conflict() -> None:
    to_status(JobStatus.DECISION_NEEDED)
    services.job_approve(actor=REVIEWER, job_id="job_1")
    assert_refused_without_writes(
        Conflict,
        "already_approved",
        lambda: services.job_approve(actor=Actor.system("reviewer_2"), job_id="job_1"),
    )


def test_reject_blocks_a_job_waiting_for_a_decision_and_needs_a_reason() -> None:
    to_status(JobStatus.DECISION_NEEDED)
    assert_refused_without_writes(
        InvalidInput, "missing_reason", lambda: services.job_reject(actor=REVIEWER, job_id="job_1")
    )
    services.job_reject(actor=REVIEWER, job_id="job_1", reason="amount too high")
    assert status() == JobStatus.BLOCKED
    assert events()[-1] == ("rejected", "approval_rejected")


@pytest.mark.parametrize(
    ("from_status", "code"),
    [
        (JobStatus.RUNNING, "job_cancelled_during_run"),
        (JobStatus.WAITING, "job_cancelled_during_run"),
        (JobStatus.PAUSED, "cancelled"),
        (JobStatus.DECISION_NEEDED, "cancelled"),
        (JobStatus.BLOCKED, "cancelled"),
        (JobStatus.EMERGENCY_STOPPED, "cancelled"),
        (JobStatus.FAILED, "cancelled"),
    ],
)
def test_cancel_from_any_non_terminal_status_or_failed(from_status: str, code: str) -> None:
    to_status(from_status)
    job = services.job_cancel(actor=SECOPS, job_id="job_1", reason="no longer needed")
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None
    assert events()[-1] == ("cancelled", code)


def test_cancel_of_a_job_that_never_started_says_so() -> None:
    submit()
    Job.objects.filter(job_id="job_1").update(status=JobStatus.QUEUED, started_at=None)
    services.job_cancel(actor=SECOPS, job_id="job_1")
    assert events()[-1] == ("cancelled", "job_cancelled_before_start")


@pytest.mark.parametrize("from_status", [JobStatus.COMPLETED, JobStatus.CANCELLED])
def test_terminal_jobs_cannot_be_cancelled(from_status: str) -> None:
    to_status(from_status)
    assert_refused_without_writes(
        Conflict, "invalid_transition", lambda: services.job_cancel(actor=SECOPS, job_id="job_1")
    )


def test_retry_is_refused_for_jobs_without_steps() -> None:
    to_status(JobStatus.FAILED)
    assert_refused_without_writes(
        Conflict, "invalid_transition", lambda: services.job_retry(actor=SECOPS, job_id="job_1")
    )


# --- resume: the five ordered checks -----------------------------------------------------------


def resume(**kw: Any) -> Job:
    kw.setdefault("actor", AGENT)
    kw.setdefault("identity", "worker_1")
    return services.job_resume(job_id="job_1", **kw)


@pytest.mark.parametrize(
    "from_status",
    [
        JobStatus.RUNNING,
        JobStatus.QUEUED,
        JobStatus.COMPLETED,
        JobStatus.CANCELLED,
        JobStatus.FAILED,
    ],
)
def test_resume_check_1_refuses_a_status_that_cannot_resume(from_status: str) -> None:
    to_status(from_status)
    assert_refused_without_writes(Conflict, "invalid_transition", resume)


def test_resume_from_pause_needs_no_approval() -> None:
    to_status(JobStatus.PAUSED)
    job = resume(reason="back")
    assert job.status == JobStatus.RUNNING
    assert events()[-1] == ("resumed", "resumed")


def test_resume_check_2_refuses_a_decision_without_approval() -> None:
    to_status(JobStatus.DECISION_NEEDED)
    err = assert_refused_without_writes(PolicyRefused, "approval_required", resume)
    assert err.exit_code == 4
    services.job_approve(actor=REVIEWER, job_id="job_1")
    assert resume().status == JobStatus.RUNNING


def test_resume_check_2_wants_an_approval_dated_after_the_stop() -> None:
    to_status(JobStatus.DECISION_NEEDED)
    services.job_approve(actor=REVIEWER, job_id="job_1")
    services.job_stop(actor=SECOPS, job_id="job_1")
    assert_refused_without_writes(PolicyRefused, "approval_required", resume)
    services.job_approve(actor=REVIEWER, job_id="job_1", reason="checked after the stop")
    assert resume().status == JobStatus.RUNNING


def test_resume_check_2_a_new_decision_after_an_approval_needs_a_new_approval() -> None:
    to_status(JobStatus.DECISION_NEEDED)
    services.job_approve(actor=REVIEWER, job_id="job_1")
    resume()
    services.job_checkpoint_add(
        actor=AGENT, job_id="job_1", type="decision-needed", summary="again?"
    )
    assert_refused_without_writes(PolicyRefused, "approval_required", resume)


def test_the_stopper_cannot_lock_an_emergency_stopped_job_by_approving_it_first() -> None:
    # what a user did: secops stops the job and approves it; resume said "the stopper cannot
    # be the only approver", every other reviewer got already_approved, and only cancel was left
    to_status(JobStatus.EMERGENCY_STOPPED)
    err = assert_refused_without_writes(
        PolicyRefused,
        "stopper_sole_approver",
        lambda: services.job_approve(actor=SECOPS, job_id="job_1"),
    )
    assert err.details["stopped_by"] == "secops" and err.hint_for("cli")
    services.job_approve(actor=REVIEWER, job_id="job_1", reason="spend capped")
    assert resume().status == JobStatus.RUNNING
    assert events()[-2:] == [("approved", "approval_recorded"), ("resumed", "resumed")]


def test_a_stoppers_approval_already_on_record_does_not_use_up_the_decision_point() -> None:
    """An approval by the stopper recorded before the up-front refusal existed (or through the
    journal by other means) counts for nothing: a second reviewer can still approve."""

    job = to_status(JobStatus.EMERGENCY_STOPPED)
    event_append(job, type="approved", actor="secops", reason_code="approval_recorded", payload={})
    err = assert_refused_without_writes(PolicyRefused, "approval_required", resume)
    assert "secops" in err.message and "another reviewer" in err.message
    services.job_approve(actor=REVIEWER, job_id="job_1")
    assert resume().status == JobStatus.RUNNING


def test_resume_check_2_a_rejection_needs_a_later_approval() -> None:
    to_status(JobStatus.DECISION_NEEDED)
    services.job_reject(actor=REVIEWER, job_id="job_1", reason="no")
    assert_refused_without_writes(PolicyRefused, "approval_required", resume)


def test_resume_check_3_refuses_without_policy_evaluation_for_a_policy_bound_job() -> None:
    submit(policy=POLICY_A)
    services.job_pause(actor=SECOPS, job_id="job_1")
    assert_refused_without_writes(PolicyRefused, "policy_evaluation_required", resume)
    job = resume(policy=POLICY_A)
    assert events()[-1] == ("resumed", "resumed")
    assert job.policy_digest == POLICY_A.digest


def test_resume_check_3_a_changed_policy_rebinds_the_job_and_says_so() -> None:
    submit(policy=POLICY_A)
    services.job_pause(actor=SECOPS, job_id="job_1")
    job = resume(policy=POLICY_B)
    assert job.policy_digest == POLICY_B.digest
    ev = JobEvent.objects.filter(job=job).last()
    assert (ev.type, ev.reason_code) == ("resumed", "resumed_policy_transition")
    assert ev.payload["policy_digest_before"] == POLICY_A.digest


def test_resume_check_4_refuses_another_identity() -> None:
    to_status(JobStatus.PAUSED)
    err = assert_refused_without_writes(
        PolicyRefused, "identity_binding_mismatch", lambda: resume(identity="worker_2")
    )
    assert err.details["bound_identity"] == "worker_1"


def test_resume_check_4_refuses_a_revoked_identity_from_the_file_or_the_database() -> None:
    to_status(JobStatus.PAUSED)
    assert_refused_without_writes(
        PolicyRefused, "identity_revoked", lambda: resume(revoked_identities={"worker_1"})
    )
    RevokedIdentity.objects.create(identity="worker_1")
    assert_refused_without_writes(PolicyRefused, "identity_revoked", resume)


def test_resume_check_5_refuses_a_different_environment_unless_overridden() -> None:
    with override_settings(GAIT={**settings.GAIT, "ENV_FINGERPRINT": "env-a"}):
        to_status(JobStatus.PAUSED)
    assert Job.objects.get(job_id="job_1").environment_fingerprint == "env-a"
    err = assert_refused_without_writes(PolicyRefused, "environment_fingerprint_mismatch", resume)
    assert err.details["expected"] == "env-a"
    job = resume(allow_env_mismatch=True)
    assert events()[-1] == ("resumed", "resumed_with_env_override")
    assert job.environment_fingerprint != "env-a"


def test_resume_reason_code_combines_env_override_and_policy_transition() -> None:
    submit(policy=POLICY_A, environment_fingerprint="env-old")
    services.job_pause(actor=SECOPS, job_id="job_1")
    resume(policy=POLICY_B, allow_env_mismatch=True)
    assert events()[-1] == ("resumed", "resumed_with_env_override_policy_transition")


def test_resume_checks_run_in_order_status_first() -> None:
    # a job that fails every check reports the first one: the status
    submit(policy=POLICY_A, environment_fingerprint="env-old")
    assert_refused_without_writes(Conflict, "invalid_transition", lambda: resume(identity="other"))
    services.job_checkpoint_add(actor=AGENT, job_id="job_1", type="decision-needed", summary="?")
    assert_refused_without_writes(
        PolicyRefused, "approval_required", lambda: resume(identity="other")
    )
    services.job_approve(actor=REVIEWER, job_id="job_1")
    assert_refused_without_writes(
        PolicyRefused, "policy_evaluation_required", lambda: resume(identity="other")
    )
    assert_refused_without_writes(
        PolicyRefused,
        "identity_binding_mismatch",
        lambda: resume(identity="other", policy=POLICY_A),
    )
    assert_refused_without_writes(
        PolicyRefused, "environment_fingerprint_mismatch", lambda: resume(policy=POLICY_A)
    )


def test_a_person_resuming_from_the_dashboard_acts_for_the_bound_identity(cast: Any) -> None:
    to_status(JobStatus.PAUSED)
    job = services.job_resume(actor=cast.actor("operator"), job_id="job_1")
    assert job.status == JobStatus.RUNNING


# --- permissions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("operator", True),
        ("admin", True),
        ("reviewer", False),
        ("viewer", False),
        ("outsider", False),
    ],
)
def test_control_actions_need_the_control_permission(cast: Any, role: str, allowed: bool) -> None:
    submit()
    actor = cast.actor(role)
    if allowed:
        services.job_pause(actor=actor, job_id="job_1")
        assert status() == JobStatus.PAUSED
    else:
        assert_refused_without_writes(
            Forbidden, "permission_denied", lambda: services.job_pause(actor=actor, job_id="job_1")
        )


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("reviewer", True),
        ("admin", True),
        ("operator", False),
        ("integrator", False),
        ("viewer", False),
        ("outsider", False),
    ],
)
def test_approvals_need_the_approve_permission(cast: Any, role: str, allowed: bool) -> None:
    to_status(JobStatus.DECISION_NEEDED)
    actor = cast.actor(role)
    if allowed:
        services.job_approve(actor=actor, job_id="job_1")
    else:
        assert_refused_without_writes(
            Forbidden,
            "permission_denied",
            lambda: services.job_approve(actor=actor, job_id="job_1"),
        )


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("integrator", True), ("operator", True), ("reviewer", False), ("viewer", False)],
)
def test_submitting_needs_the_submit_permission(cast: Any, role: str, allowed: bool) -> None:
    actor = cast.actor(role)
    if allowed:
        services.job_submit(actor=actor, job_id="job_x")
    else:
        with pytest.raises(Forbidden):
            services.job_submit(actor=actor, job_id="job_x")
        assert not Job.objects.exists()


def test_submit_is_refused_by_name_when_jobs_are_switched_off() -> None:
    with override_settings(GAIT={**settings.GAIT, "JOBS_ENABLED": False}):
        with pytest.raises(GaitError) as info:
            submit()
    assert info.value.code == "jobs_disabled" and info.value.details["limit"] == "JOBS_ENABLED"
    assert info.value.http_status == 503 and not Job.objects.exists()
