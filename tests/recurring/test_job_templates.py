"""Template services and the fire rules, driven with a frozen clock (no workers needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

import tests.recurring.stepfns  # noqa: F401  (registers the test step functions)
from approvals.identities import identity_policy_set
from approvals.models import RevokedIdentity
from approvals.policies import policy_save
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import Conflict, Forbidden, GaitError, InvalidInput
from jobs.models import Job, JobStatus, JobTemplate, TemplateFire
from jobs.recurring import (
    continuity_for,
    cron_next,
    recurring_fire_due,
    template_create,
    template_disable,
    template_enable,
    template_run_now,
    template_update,
    timezone_parse,
)

SPEC = {"steps": [{"name": "count", "kind": "python", "with": {"function": "recurring_counter"}}]}


@pytest.fixture
def system() -> Actor:
    return Actor.system("tester")


def _make(system: Actor, **kw: Any) -> JobTemplate:
    fields: dict[str, Any] = {"name": "Daily brief", "spec": SPEC, "cron": "@daily"}
    fields.update(kw)
    return template_create(actor=system, **fields)


def _finish(job_id: str, outputs: dict[str, Any] | None = None) -> None:
    Job.objects.filter(job_id=job_id).update(
        status=JobStatus.COMPLETED, outputs=outputs or {}, finished_at=timezone.now()
    )


@pytest.mark.django_db
def test_create_refuses_a_bad_cron_and_writes_nothing(system: Actor) -> None:
    with pytest.raises(InvalidInput) as exc:
        _make(system, cron="61 * * * *")
    assert exc.value.code == "invalid_cron"
    with pytest.raises(InvalidInput) as exc:
        _make(system, cron="@reboot")
    assert exc.value.code == "invalid_cron"
    assert not JobTemplate.objects.exists()


@pytest.mark.django_db
def test_create_refuses_an_unknown_timezone_and_a_bad_spec(system: Actor) -> None:
    with pytest.raises(InvalidInput) as exc:
        _make(system, timezone_name="Mars/Olympus_Mons")
    assert exc.value.code == "invalid_timezone"
    with pytest.raises(InvalidInput) as exc:
        _make(system, spec={"steps": [{"name": "x", "kind": "teleport"}]})
    assert exc.value.code.startswith("spec_")
    assert not JobTemplate.objects.exists()


@pytest.mark.django_db
def test_a_viewer_cannot_create_templates(cast: Any) -> None:
    with pytest.raises(Forbidden) as exc:
        _make(cast.actor("viewer"))
    assert exc.value.code == "permission_denied"


@pytest.mark.django_db
def test_the_template_id_comes_from_the_name_and_is_unique(system: Actor) -> None:
    t = _make(system)
    assert t.template_id == "daily-brief"
    assert t.next_fire_at is not None and t.next_fire_at > timezone.now()
    with pytest.raises(Conflict) as exc:
        _make(system)
    assert exc.value.code == "template_exists"


def test_next_fire_keeps_local_wall_time_across_a_dst_change() -> None:
    berlin = timezone_parse("Europe/Berlin")
    before = cron_next("0 9 * * *", berlin, datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    after = cron_next("0 9 * * *", berlin, before)
    assert before == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert after == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    winter = cron_next("0 9 * * *", berlin, datetime(2026, 3, 27, 12, 0, tzinfo=UTC))
    assert winter == datetime(2026, 3, 28, 8, 0, tzinfo=UTC)  # 09:00 CET


@pytest.mark.django_db
def test_a_due_slot_fires_one_job_linked_to_its_template(system: Actor) -> None:
    t = _make(system, labels={"team": "ops"})
    slot = t.next_fire_at
    counts = recurring_fire_due(now=slot + timedelta(milliseconds=300))
    assert counts == {"fired": 1}
    fire = TemplateFire.objects.get(template=t)
    assert fire.slot == slot and fire.trigger == "cron" and fire.lateness_ms == 300
    job = fire.job
    assert job.job_id == f"daily-brief-{slot:%Y%m%dT%H%M%S}Z"
    assert job.status == JobStatus.QUEUED and job.step_count == 1
    assert job.labels == {"team": "ops", "gait.template": "daily-brief", "gait.trigger": "cron"}
    t.refresh_from_db()
    assert t.next_fire_at == slot + timedelta(days=1)
    assert t.last_job == job and t.run_count == 1
    # the same slot seen again (a second worker, a duplicate delivery) creates nothing
    assert recurring_fire_due(now=slot + timedelta(milliseconds=400)) == {}
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_overlap_skip_records_a_skipped_fire_while_the_previous_run_is_active(
    system: Actor,
) -> None:
    t = _make(system, cron="*/5 * * * *")
    first = t.next_fire_at
    recurring_fire_due(now=first)
    second = first + timedelta(minutes=5)
    assert recurring_fire_due(now=second) == {"skipped:overlap_skipped": 1}
    assert Job.objects.count() == 1
    _finish(Job.objects.get().job_id)
    assert recurring_fire_due(now=second + timedelta(minutes=5)) == {"fired": 1}
    assert list(TemplateFire.objects.order_by("slot").values_list("status", flat=True)) == [
        "fired",
        "skipped",
        "fired",
    ]


@pytest.mark.django_db
def test_overlap_queue_holds_one_run_and_starts_it_when_the_previous_finishes(
    system: Actor,
) -> None:
    t = _make(system, cron="*/5 * * * *", overlap="queue")
    first = t.next_fire_at
    recurring_fire_due(now=first)
    assert recurring_fire_due(now=first + timedelta(minutes=5)) == {"pending:overlap_queued": 1}
    assert recurring_fire_due(now=first + timedelta(minutes=10)) == {
        "skipped:overlap_queue_full": 1
    }
    assert Job.objects.count() == 1
    previous = Job.objects.get()
    _finish(previous.job_id)
    counts = recurring_fire_due(now=first + timedelta(minutes=10, seconds=30))
    assert counts == {"started_pending:fired": 1}
    held = TemplateFire.objects.get(slot=first + timedelta(minutes=5))
    assert held.status == "fired" and held.previous_job == previous
    assert held.lateness_ms == 330_000


@pytest.mark.django_db
def test_catch_up_once_covers_missed_slots_with_one_run(system: Actor) -> None:
    t = _make(system, cron="*/5 * * * *", catch_up="once")
    first = t.next_fire_at
    # the workers were down for an hour: twelve slots passed
    counts = recurring_fire_due(now=first + timedelta(minutes=57))
    assert counts == {"fired": 1}
    fire = TemplateFire.objects.get()
    assert fire.trigger == "catch_up" and fire.missed_slots == 11
    assert fire.slot == first + timedelta(minutes=55)
    t.refresh_from_db()
    assert t.next_fire_at == first + timedelta(minutes=60)
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_catch_up_skip_runs_nothing_for_missed_slots(system: Actor) -> None:
    t = _make(system, cron="*/5 * * * *", catch_up="skip")
    first = t.next_fire_at
    assert recurring_fire_due(now=first + timedelta(minutes=57)) == {"skipped:catch_up_skipped": 1}
    assert not Job.objects.exists()
    assert TemplateFire.objects.get().missed_slots == 12
    # back on schedule: the next slot fires on time
    assert recurring_fire_due(now=first + timedelta(minutes=60, seconds=1)) == {"fired": 1}


@pytest.mark.django_db
def test_catch_up_skip_still_runs_the_latest_slot_when_it_is_on_time(system: Actor) -> None:
    t = _make(system, cron="*/5 * * * *", catch_up="skip")
    first = t.next_fire_at
    assert recurring_fire_due(now=first + timedelta(minutes=55, seconds=2)) == {"fired": 1}
    fire = TemplateFire.objects.get()
    assert fire.trigger == "cron" and fire.missed_slots == 11


@pytest.mark.django_db
def test_resume_continuity_hands_the_previous_outputs_and_a_stable_handle(
    system: Actor,
) -> None:
    t = _make(system, cron="*/5 * * * *", continuity="resume")
    first = t.next_fire_at
    recurring_fire_due(now=first)
    one = Job.objects.get()
    assert continuity_for(one)["previous_job_id"] is None
    _finish(one.job_id, {"count": {"count": 1}})
    recurring_fire_due(now=first + timedelta(minutes=5))
    two = Job.objects.exclude(pk=one.pk).get()
    c = continuity_for(two)
    assert c["previous_job_id"] == one.job_id
    assert c["previous_outputs"] == {"count": {"count": 1}}
    assert c["previous_status"] == "completed" and c["sequence"] == 2
    assert c["handle"] == continuity_for(one)["handle"] == t.continuity_handle
    assert two.template_fire.previous_job == one


@pytest.mark.django_db
def test_fresh_runs_receive_no_continuity(system: Actor) -> None:
    t = _make(system, cron="*/5 * * * *")
    recurring_fire_due(now=t.next_fire_at)
    job = Job.objects.get()
    _finish(job.job_id, {"count": {"count": 1}})
    recurring_fire_due(now=t.next_fire_at + timedelta(minutes=5))
    assert [continuity_for(j) for j in Job.objects.all()] == [{}, {}]


@pytest.mark.django_db
def test_run_now_refuses_while_a_run_is_active_when_overlap_is_skip(system: Actor) -> None:
    t = _make(system, cron="")
    assert t.next_fire_at is None
    fire = template_run_now(actor=system, template_id=t.template_id, job_id="brief-1")
    assert fire.job.job_id == "brief-1" and fire.trigger == "manual"
    with pytest.raises(Conflict) as exc:
        template_run_now(actor=system, template_id=t.template_id)
    assert exc.value.code == "template_run_active"
    assert exc.value.details["active_job_id"] == "brief-1"
    assert TemplateFire.objects.count() == 1


@pytest.mark.django_db
def test_run_now_passes_on_a_submit_refusal_and_writes_nothing(system: Actor) -> None:
    t = _make(system, identity="agent-7")
    RevokedIdentity.objects.create(identity="agent-7")
    with pytest.raises(GaitError) as exc:
        template_run_now(actor=system, template_id=t.template_id)
    assert exc.value.code == "identity_revoked"
    assert not TemplateFire.objects.exists() and not Job.objects.exists()
    # a scheduled fire records the same refusal instead of raising it
    assert recurring_fire_due(now=t.next_fire_at) == {"failed:identity_revoked": 1}


@pytest.mark.django_db
def test_jobs_switched_off_refuse_run_now_naming_the_limit(system: Actor, settings: Any) -> None:
    t = _make(system)
    settings.GAIT = {**settings.GAIT, "JOBS_ENABLED": False}
    with pytest.raises(GaitError) as exc:
        template_run_now(actor=system, template_id=t.template_id)
    assert exc.value.code == "jobs_disabled"
    assert exc.value.details["limit"] == "JOBS_ENABLED"
    assert recurring_fire_due(now=t.next_fire_at) == {"failed:jobs_disabled": 1}
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_disabled_template_does_not_fire_and_enabling_starts_from_now(system: Actor) -> None:
    t = _make(system, cron="*/5 * * * *")
    slot = t.next_fire_at
    t = template_disable(actor=system, template_id=t.template_id)
    assert t.next_fire_at is None
    assert recurring_fire_due(now=slot + timedelta(hours=3)) == {}
    t = template_enable(actor=system, template_id=t.template_id)
    assert t.next_fire_at is not None and t.next_fire_at > timezone.now()
    assert not TemplateFire.objects.exists()


@pytest.mark.django_db
def test_update_validates_and_reschedules_a_new_cron(system: Actor) -> None:
    t = _make(system)
    with pytest.raises(InvalidInput) as exc:
        template_update(actor=system, template_id=t.template_id, cron="every day")
    assert exc.value.code == "invalid_cron"
    with pytest.raises(InvalidInput) as exc:
        template_update(actor=system, template_id=t.template_id, owner="me")
    assert exc.value.code == "unknown_field"
    t = template_update(actor=system, template_id=t.template_id, cron="*/5 * * * *")
    assert t.next_fire_at - timezone.now() <= timedelta(minutes=5)


@pytest.mark.django_db
def test_a_template_run_is_bound_to_its_identity_policy_whatever_the_template_says(
    system: Actor,
) -> None:
    policy_save(actor=system, name="strict", source="default_verdict: block\n")
    policy_save(actor=system, name="lenient", source="default_verdict: allow\n")
    identity_policy_set(actor=system, identity="agent-7", policy="strict")
    # a template with no policy of its own: its runs get the identity's
    plain = _make(system, name="Plain", identity="agent-7", cron="")
    fire = template_run_now(actor=system, template_id=plain.template_id)
    assert fire.job.policy_ref == "policy:strict"
    # a template carrying a weaker policy cannot run as the identity
    weak = _make(system, name="Weak", identity="agent-7", policy="lenient")
    with pytest.raises(GaitError) as exc:
        template_run_now(actor=system, template_id=weak.template_id)
    assert exc.value.code == "policy_not_allowed"
    assert recurring_fire_due(now=weak.next_fire_at) == {"failed:policy_not_allowed": 1}
    assert Job.objects.count() == 1
