"""Recurring jobs on real workers: `qcluster` subprocesses, a one-second cron (croniter's
six-field form, seconds last), PostgreSQL."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

import tests.recurring.stepfns  # noqa: F401  (the test process validates specs naming them)
from gaitweb.lib.actors import Actor
from jobs.models import Job, JobStatus, TemplateFire
from jobs.recurring import FIRE_LOOP, template_create, template_disable
from tests.workers import wait_for

pytestmark = [pytest.mark.slow]

EVERY_SECOND = "* * * * * *"


def _record_spec(path: Path, seconds: float = 0.0) -> dict[str, Any]:
    return {
        "steps": [
            {
                "name": "record",
                "kind": "python",
                "with": {
                    "function": "recurring_record",
                    "args": {"path": str(path), "seconds": seconds},
                },
            }
        ]
    }


def _fired(template: Any) -> list[TemplateFire]:
    return list(
        TemplateFire.objects.filter(template=template, status="fired")
        .select_related("job")
        .order_by("slot")
    )


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def test_two_clusters_fire_each_one_second_slot_exactly_once(clusters: Any, tmp_path: Path) -> None:
    clusters()
    clusters()
    record = tmp_path / "runs.txt"
    system = Actor.system("tester")
    t = template_create(
        actor=system, name="every second", spec=_record_spec(record), cron=EVERY_SECOND
    )
    # duplicate deliveries on top of the chain: a one-shot wake-up for every slot, so the two
    # clusters race for the same slots
    start = t.next_fire_at
    for i in range(30):
        FIRE_LOOP.link_enqueue("", 0, at=start + timedelta(seconds=i))
    wait_for(lambda: len(_fired(t)) >= 20, timeout=40, what="20 fires")
    template_disable(actor=system, template_id=t.template_id)
    fires = _fired(t)
    wait_for(
        lambda: (
            Job.objects.filter(pk__in=[f.job_id for f in fires], status=JobStatus.COMPLETED).count()
            == len(fires)
        ),
        timeout=20,
        what="the runs to complete",
    )
    # the step ran exactly once per fired slot
    lines = [line.split()[0] for line in record.read_text().splitlines()]
    runs = Counter(lines)
    assert set(runs) == {f.job.job_id for f in fires}
    assert max(runs.values()) == 1, [j for j, n in runs.items() if n > 1]
    # every slot from the first to the last is accounted for: fired, or recorded as missed
    rows = list(TemplateFire.objects.filter(template=t).order_by("slot"))
    # (a row's missed slots are the ones just before it, so the span starts before the first)
    span = int((rows[-1].slot - rows[0].slot).total_seconds()) + 1 + rows[0].missed_slots
    assert len(rows) + sum(r.missed_slots for r in rows) == span
    assert sum(1 for r in rows if r.status == "fired") >= 20
    lateness = [f.lateness_ms for f in fires]
    p50, p99 = _percentile(lateness, 0.5), _percentile(lateness, 0.99)
    print(f"\nfire lateness over {len(fires)} one-second slots: p50={p50} ms p99={p99} ms")
    assert p99 < 2000, lateness


def test_resume_continuity_passes_each_run_the_previous_outputs(clusters: Any) -> None:
    clusters()
    system = Actor.system("tester")
    spec = {
        "steps": [{"name": "count", "kind": "python", "with": {"function": "recurring_counter"}}]
    }
    t = template_create(
        actor=system, name="counter", spec=spec, cron=EVERY_SECOND, continuity="resume"
    )

    def completed() -> list[TemplateFire]:
        return [f for f in _fired(t) if f.job.status == JobStatus.COMPLETED]

    wait_for(lambda: len(completed()) >= 3, timeout=20, what="three completed runs")
    template_disable(actor=system, template_id=t.template_id)
    runs = completed()[:3]
    assert [f.job.outputs["count"]["count"] for f in runs] == [1, 2, 3]
    assert runs[0].previous_job is None
    assert [f.previous_job for f in runs[1:]] == [runs[0].job, runs[1].job]
    assert len({f.continuity["handle"] for f in runs}) == 1


def test_overlap_skip_never_runs_two_runs_at_once(clusters: Any, tmp_path: Path) -> None:
    clusters()
    record = tmp_path / "runs.txt"
    system = Actor.system("tester")
    t = template_create(
        actor=system, name="slow", spec=_record_spec(record, seconds=2.5), cron=EVERY_SECOND
    )
    wait_for(
        lambda: TemplateFire.objects.filter(template=t, reason_code="overlap_skipped").count() >= 4,
        timeout=20,
        what="skipped slots",
    )
    template_disable(actor=system, template_id=t.template_id)
    fires = _fired(t)
    wait_for(
        lambda: all(Job.objects.get(pk=f.job_id).status == JobStatus.COMPLETED for f in _fired(t)),
        timeout=20,
        what="the runs to complete",
    )
    jobs = [Job.objects.get(pk=f.job_id) for f in _fired(t)]
    assert len(jobs) >= 1 and len(fires) <= len(jobs)
    for earlier, later in zip(jobs, jobs[1:], strict=False):
        assert later.started_at >= earlier.finished_at, (earlier.job_id, later.job_id)
    skipped = TemplateFire.objects.filter(template=t, status="skipped")
    assert all(s.reason_code == "overlap_skipped" and s.job is None for s in skipped)


def test_catch_up_after_a_stopped_cluster_is_one_run_not_a_burst(clusters: Any) -> None:
    first = clusters()
    system = Actor.system("tester")
    spec = {"steps": [{"name": "n", "kind": "python", "with": {"function": "noop"}}]}
    t = template_create(
        actor=system, name="catch up", spec=spec, cron=EVERY_SECOND, catch_up="once"
    )
    wait_for(lambda: len(_fired(t)) >= 2, timeout=20, what="two fires")

    def between_runs() -> bool:
        # kill between two slots, with no run in flight (an active run would make the first
        # fire after the restart an overlap skip: right, but not what this test looks at)
        latest = _fired(t)[-1]
        since = (timezone.now() - latest.slot).total_seconds()
        return latest.job.status == JobStatus.COMPLETED and since < 0.6

    wait_for(between_runs, timeout=10, interval=0.01, what="a quiet moment")
    first.kill()
    stopped_at = timezone.now()
    time.sleep(5)
    restarted_at = timezone.now()
    assert not TemplateFire.objects.filter(template=t, fired_at__gt=stopped_at).exists()
    clusters()
    wait_for(
        lambda: TemplateFire.objects.filter(template=t, fired_at__gt=restarted_at).count() >= 3,
        timeout=20,
        what="fires after the restart",
    )
    template_disable(actor=system, template_id=t.template_id)
    after = list(TemplateFire.objects.filter(template=t, fired_at__gt=restarted_at).order_by("id"))
    # the first fire after the restart covers the slots missed while no worker was up
    assert after[0].missed_slots >= 4, [(f.slot, f.missed_slots) for f in after]
    assert after[0].status == "fired"
    # and no burst: the fires after the restart are one slot each, a second apart
    slots = [f.slot for f in after]
    assert len(set(slots)) == len(slots)
    created = sorted(f.fired_at for f in after[:3])
    assert (created[-1] - created[0]).total_seconds() >= 1.0, created
    assert sum(f.missed_slots for f in after[1:3]) <= 1
