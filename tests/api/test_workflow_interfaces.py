"""A workflow is submitted like any job, through every interface: the REST API, the CLI, the
dashboard's "Run a job", a template (and its cron fire), and MCP; bad input is refused with
the same codes everywhere and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from rest_framework.test import APIClient

from gaitweb.lib.actors import Actor
from gaitweb.mcp_server import build_server
from jobs.management.commands.gait import main
from jobs.models import Job, JobTemplate
from jobs.recurring import recurring_fire_due, template_create, template_run_now
from tests.api.conftest import error_code, submit
from tests.web.conftest import Browser

pytestmark = pytest.mark.django_db

WORKFLOW = {"workflow": "calls", "input": {"path": "/tmp/gaitweb-wf-unused", "n": 2}}


def _assert_workflow_job(job: Job) -> None:
    assert job.status == "queued" and job.step_count == 1 and job.is_workflow
    assert job.spec["workflow"] == "calls"
    assert job.spec["steps"][0]["with"]["input"] == WORKFLOW["input"]


def test_the_api_submits_a_workflow_and_refuses_bad_input(agent: APIClient) -> None:
    r = submit(agent, job_id="wf-api", spec=WORKFLOW)
    assert r.status_code == 201, r.content
    _assert_workflow_job(Job.objects.get(job_id="wf-api"))
    r = submit(agent, job_id="wf-bad", spec={"workflow": "calls", "input": {"n": 2}})
    assert r.status_code == 400 and error_code(r) == "spec_missing_field"
    assert r.json()["error"]["details"]["path"] == "input.path"
    r = submit(agent, job_id="wf-bad", spec={"workflow": "os.system"})
    assert r.status_code == 400 and error_code(r) == "spec_unknown_workflow"
    assert not Job.objects.filter(job_id="wf-bad").exists()


def test_the_cli_submits_a_workflow_from_a_yaml_file(capsys: Any, tmp_path: Path) -> None:
    spec = tmp_path / "wf.yaml"
    spec.write_text("workflow: calls\ninput:\n  path: /tmp/gaitweb-wf-unused\n  n: 2\n")
    code = main(["job", "submit", "--id", "wf-cli", "--spec", str(spec), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    _assert_workflow_job(Job.objects.get(job_id="wf-cli"))
    spec.write_text("workflow: calls\ninput: {path: p, bogus: 1}\n")
    code = main(["job", "submit", "--id", "wf-cli-bad", "--spec", str(spec), "--json"])
    assert code == 6
    assert (
        json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error_code"]
        == "spec_unknown_field"
    )
    assert not Job.objects.filter(job_id="wf-cli-bad").exists()


def test_the_dashboard_runs_a_pasted_workflow_spec(cast: Any) -> None:
    b = Browser(cast.operator)
    text = "workflow: calls\ninput: {path: /tmp/gaitweb-wf-unused, n: 2}\n"
    response = b.post("/jobs/new/", {"spec": text, "job_id": "wf-web"})
    assert response.status_code == 302 and response["Location"] == "/jobs/wf-web/"
    _assert_workflow_job(Job.objects.get(job_id="wf-web"))
    response = b.post("/jobs/new/", {"spec": "workflow: nope\n", "job_id": "wf-web-bad"})
    assert response.status_code == 400
    assert "no workflow is registered as &#x27;nope&#x27;" in response.content.decode()
    assert not Job.objects.filter(job_id="wf-web-bad").exists()


def test_a_template_fires_workflow_jobs_on_run_now_and_on_its_cron() -> None:
    from datetime import timedelta

    from django.utils import timezone

    system = Actor.system("tester")
    template = template_create(actor=system, name="Nightly agent", spec=WORKFLOW, cron="* * * * *")
    fire = template_run_now(actor=system, template_id=template.template_id)
    _assert_workflow_job(fire.job)
    JobTemplate.objects.filter(pk=template.pk).update(
        next_fire_at=timezone.now() - timedelta(seconds=1)
    )
    Job.objects.filter(pk=fire.job.pk).update(status="completed", finished_at=timezone.now())
    recurring_fire_due()
    jobs = Job.objects.filter(spec__workflow="calls").exclude(pk=fire.job.pk)
    assert jobs.count() == 1
    _assert_workflow_job(jobs.get())
    with pytest.raises(Exception) as exc:
        template_create(actor=system, name="Bad", spec={"workflow": "nope"}, cron="@daily")
    assert getattr(exc.value, "code", "") == "spec_unknown_workflow"


def test_mcp_creates_a_workflow_job(transactional_db: None) -> None:
    actor = Actor(
        name="agent-7",
        scopes=frozenset({"read", "submit", "control"}),
        identity="agent-7",
        kind="system",
    )
    server = build_server(actor)

    async def go(args: dict[str, Any]) -> Any:
        return await server.call_tool("job_create", args)

    result = anyio.run(go, {"spec": WORKFLOW, "job_id": "wf-mcp"})
    assert not result.is_error, result
    _assert_workflow_job(Job.objects.get(job_id="wf-mcp"))
    result = anyio.run(
        go, {"spec": {"workflow": "calls", "input": {"path": 1}}, "job_id": "wf-mcp-bad"}
    )
    assert result.is_error
    assert "spec_invalid" in json.dumps(result.structured_content or str(result.content))
    assert not Job.objects.filter(job_id="wf-mcp-bad").exists()
