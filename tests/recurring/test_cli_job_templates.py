"""`gait jobs create` and `gait templates …`: JSON shape, exit codes, nothing written on
refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.management.commands.gait import main
from jobs.models import Job, JobTemplate

SPEC = """\
steps:
  - name: brief
    kind: python
    with: {function: noop}
"""


def gait(capsys: Any, *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return code, json.loads(out[0])


@pytest.fixture
def spec(tmp_path: Path) -> str:
    path = tmp_path / "brief.yaml"
    path.write_text(SPEC)
    return str(path)


@pytest.mark.django_db
def test_jobs_create_defines_a_recurring_job_with_its_next_fire(capsys: Any, spec: str) -> None:
    code, out = gait(
        capsys, "jobs", "create", "Daily brief", "--spec", spec, "--cron", "@daily",
        "--tz", "Europe/Berlin", "--continuity", "resume",
    )  # fmt: skip
    assert code == 0, out
    t = out["template"]
    assert out["template_id"] == "daily-brief" and t["cron"] == "@daily"
    assert t["timezone"] == "Europe/Berlin" and t["continuity"] == "resume"
    assert t["next_fire_at"].endswith("T23:00:00.000000Z") or t["next_fire_at"].endswith(
        "T22:00:00.000000Z"
    )  # local midnight in Berlin, CET or CEST


@pytest.mark.django_db
def test_jobs_create_from_a_template_copies_it_and_can_run_now(capsys: Any, spec: str) -> None:
    gait(capsys, "jobs", "create", "Daily brief", "--spec", spec, "--identity", "brief-bot")
    code, out = gait(
        capsys, "jobs", "create", "Nightly brief", "--template", "daily-brief",
        "--cron", "0 2 * * *", "--run-now",
    )  # fmt: skip
    assert code == 0, out
    assert out["template"]["identity"] == "brief-bot"
    assert out["run"]["job_id"].startswith("nightly-brief-m")
    job = Job.objects.get(job_id=out["run"]["job_id"])
    assert job.identity == "brief-bot" and job.labels["gait.template"] == "nightly-brief"


@pytest.mark.django_db
def test_a_bad_cron_exits_6_with_its_reason_code_and_writes_nothing(capsys: Any, spec: str) -> None:
    code, out = gait(capsys, "jobs", "create", "Brief", "--spec", spec, "--cron", "daily")
    assert code == 6 and out["error_code"] == "invalid_cron"
    code, out = gait(capsys, "jobs", "create", "Brief")
    assert code == 6 and out["error_code"] == "spec_or_template"
    assert not JobTemplate.objects.exists()


@pytest.mark.django_db
def test_templates_verbs_list_run_disable_and_show_fires(capsys: Any, spec: str) -> None:
    gait(capsys, "jobs", "create", "Daily brief", "--spec", spec, "--cron", "@hourly")
    code, out = gait(capsys, "templates", "list")
    assert code == 0 and [t["template_id"] for t in out["templates"]] == ["daily-brief"]
    code, out = gait(capsys, "templates", "run", "daily-brief", "--job-id", "brief-7")
    assert code == 0 and out["job_id"] == "brief-7"
    code, out = gait(capsys, "templates", "run", "daily-brief")
    assert code == 6 and out["error_code"] == "template_run_active"
    code, out = gait(capsys, "templates", "disable", "daily-brief")
    assert code == 0 and out["template"]["enabled"] is False
    assert out["template"]["next_fire_at"] is None
    code, out = gait(capsys, "templates", "fires", "daily-brief")
    assert [f["job_id"] for f in out["fires"]] == ["brief-7"]
    code, out = gait(capsys, "templates", "show", "nope")
    assert code == 6 and out["error_code"] == "template_not_found"
