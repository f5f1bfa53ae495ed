"""`gait jobs stats --json` and `gait job signal`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gaitweb.lib.actors import Actor
from jobs.management.commands.gait import main
from jobs.models import Job, JobEvent
from jobs.services import job_cancel, job_submit


def run(capsys: Any, *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.django_db
def test_jobs_stats_counts_jobs_by_outcome_and_recent_reason_codes(capsys: Any) -> None:
    spec = {"steps": [{"name": "a", "kind": "sleep", "with": {"duration": "1h"}}]}
    job_submit(actor=Actor.system("t"), spec=spec)
    job_submit(actor=Actor.system("t"), spec=spec)
    cancelled = job_submit(actor=Actor.system("t"), spec=spec)
    job_cancel(actor=Actor.system("op"), job_id=cancelled.job_id)
    code, out = run(capsys, "jobs", "stats", "--json")
    stats = out["stats"]
    assert code == 0 and out["ok"] is True
    assert (stats["created"], stats["cancelled"], stats["queued"], stats["running"]) == (3, 1, 2, 0)
    assert stats["queue_depth"]["jobs_runnable"] == 2
    assert stats["recent_reason_codes"]["job_queued"] == 3
    assert stats["recent_reason_codes"]["job_cancelled_before_start"] == 1


@pytest.mark.django_db
def test_job_signal_journals_the_payload_and_refuses_bad_input(capsys: Any) -> None:
    job = job_submit(
        actor=Actor.system("t"),
        spec={"steps": [{"name": "w", "kind": "wait_event", "with": {"signal": "go"}}]},
    )
    code, out = run(
        capsys,
        "job",
        "signal",
        "--id",
        job.job_id,
        "--name",
        "go",
        "--payload",
        '{"n": 1}',
        "--json",
    )
    assert code == 0 and out["signal"] == "go"
    event = JobEvent.objects.filter(job=job).order_by("-revision").first()
    assert (event.type, event.payload) == ("signal_received", {"name": "go", "payload": {"n": 1}})
    revision = Job.objects.get(pk=job.pk).revision
    code, out = run(capsys, "job", "signal", "--id", job.job_id, "--name", "bad name", "--json")
    assert (code, out["error_code"]) == (6, "invalid_signal_name")
    code, out = run(
        capsys, "job", "signal", "--id", job.job_id, "--name", "go", "--payload", "{nope", "--json"
    )
    assert (code, out["error_code"]) == (6, "invalid_signal_payload")
    assert Job.objects.get(pk=job.pk).revision == revision  # nothing written
