"""Steps that touch the machine and secrets by reference, through real `qcluster` workers
(docs/security.md): the worker checks the allow-lists again before a step runs, resolves
secrets from its own environment, and nothing it stores, returns or packs holds a secret.
The in-process versions of these attacks are in test_step_security.py."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from gaitweb.lib.actors import Actor
from jobs.models import AllowedExecutable, AllowedHttpHost, Job, JobEvent, StepRun
from jobs.services import job_signal, job_submit
from packs.services import pack_build
from tests.api.conftest import make_key as make_key  # noqa: F401  (a fixture)
from tests.engine.test_workers import settled

pytestmark = pytest.mark.slow

TOKEN = "tok_live_3c9e1f7a2b8d4e6f0a1b"
SUBMITTER = Actor.system("tester")


def submit(steps: list[dict[str, Any]]) -> Job:
    return job_submit(actor=SUBMITTER, spec={"steps": steps})


def gate_then(step: dict[str, Any]) -> list[dict[str, Any]]:
    """A job that waits for the signal ``go`` before ``step``: the test changes the allow-list
    after submit and before the worker reaches the step."""
    return [{"name": "hold", "kind": "wait_event", "with": {"signal": "go"}}, step]


def test_a_secret_echoed_by_a_command_is_in_no_steprun_event_output_response_or_pack(
    clusters: Any,
    allow_commands: Any,
    make_key: Any,  # noqa: F811
) -> None:
    allow_commands("sh")
    clusters(GAIT_SECRET_BILLING_TOKEN=TOKEN)  # the store: the workers' environment only
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key('submit,read,control')}")
    script = 'echo "charging with $TOKEN"; echo "debug: $TOKEN" >&2'
    r = agent.post(
        "/api/v1/jobs",
        {
            "job_id": "billing-1",
            "spec": {
                "steps": [
                    {
                        "name": "charge",
                        "kind": "command",
                        "with": {
                            "argv": ["sh", "-c", script],
                            "env": {"TOKEN": {"secret": "BILLING_TOKEN"}},
                        },
                    }
                ]
            },
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    job = settled(Job.objects.get(job_id="billing-1"))
    assert job.status == "completed"
    run = StepRun.objects.get(job=job)
    assert run.stdout == "charging with [secret:BILLING_TOKEN]\n"
    assert run.stderr == "debug: [secret:BILLING_TOKEN]\n"
    assert run.input["env"] == {"TOKEN": {"secret": "BILLING_TOKEN"}}

    responses = [
        agent.get(f"/api/v1/jobs/{job.job_id}{tail}").content.decode()
        for tail in ("", "/steps", "/events")
    ]
    assert "[secret:BILLING_TOKEN]" in responses[1]
    pack = pack_build(actor=Actor.system("ada"), job_id=job.job_id).pack
    with zipfile.ZipFile(io.BytesIO(bytes(pack.data))) as z:
        packed = {name: z.read(name).decode() for name in z.namelist()}
    assert "[secret:BILLING_TOKEN]" in "".join(packed.values())
    stored = json.dumps(
        [
            list(StepRun.objects.filter(job=job).values()),
            list(JobEvent.objects.filter(job=job).values()),
            list(Job.objects.filter(pk=job.pk).values()),
        ],
        default=str,
    )
    for where in (stored, *responses, *packed.values()):
        assert TOKEN not in where


def test_a_command_on_a_worker_sees_none_of_the_workers_environment(
    clusters: Any, allow_commands: Any
) -> None:
    from django.conf import settings

    from tests.conftest import subprocess_env

    allow_commands("env")
    # the workers' SECRET_KEY is this process's (django-q2 signs tasks with it)
    clusters(GAIT_SECRET_BILLING_TOKEN=TOKEN)
    job = settled(submit([{"name": "env", "kind": "command", "with": {"argv": ["env"]}}]))
    assert job.status == "completed", job.status_reason_code
    out = StepRun.objects.get(job=job).stdout
    names = {line.split("=", 1)[0] for line in out.splitlines()}
    assert names <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ"} | {
        "GAIT_JOB_ID", "GAIT_STEP_NAME", "GAIT_STEP_INDEX", "GAIT_ATTEMPT", "GAIT_IDEMPOTENCY_KEY",
    }  # fmt: skip
    for value in (settings.SECRET_KEY, TOKEN, subprocess_env()["DATABASE_URL"]):
        assert value not in out


def test_worker_processes_are_not_dumpable(clusters: Any) -> None:
    """Otherwise a command (same user) reads /proc/<worker>/environ: DATABASE_URL, SECRET_KEY
    and the secret store."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("prctl(PR_SET_DUMPABLE) is Linux's")
    clusters()
    job = settled(
        submit([{"name": "facts", "kind": "python", "with": {"function": "worker_facts"}}])
    )
    assert job.status == "completed" and job.outputs["facts"]["dumpable"] is False


def test_an_executable_removed_from_the_allow_list_after_submit_is_refused_on_the_worker(
    clusters: Any, allow_commands: Any, tmp_path: Path
) -> None:
    allow_commands("touch")
    clusters()
    marker = tmp_path / "ran"
    job = submit(
        gate_then(
            {
                "name": "deploy",
                "kind": "command",
                "with": {"argv": ["touch", str(marker)]},
                "retry": {"max_attempts": 3},
            }
        )
    )
    settled(job, ("waiting",), timeout=15)
    AllowedExecutable.objects.filter(name="touch").delete()
    job_signal(actor=SUBMITTER, job_id=job.job_id, name="go")
    job = settled(job)
    assert (job.status, job.status_reason_code) == ("failed", "command_not_allowed")
    assert not marker.exists()
    (run,) = StepRun.objects.filter(job=job, step_name="deploy")
    assert run.error["type"] == "command_not_allowed" and run.error["executable"] == "touch"


def test_http_steps_on_a_worker_reach_an_allow_listed_host_but_not_the_loopback_it_redirects_to(
    clusters: Any, servers: Any
) -> None:
    port, seen = servers()
    AllowedHttpHost.objects.create(host="127.0.0.1", port=port)
    clusters()
    ok = submit([{"name": "get", "kind": "http", "with": {"url": f"http://127.0.0.1:{port}/x"}}])
    to = f"http://localhost:{port}/admin"
    bounced = submit(
        [
            {
                "name": "get",
                "kind": "http",
                "with": {"url": f"http://127.0.0.1:{port}/redirect?to={to}"},
            }
        ]
    )
    ok, bounced = settled(ok), settled(bounced)
    assert ok.status == "completed"
    assert ok.outputs["get"]["json"] == {"path": "/x", "host": f"127.0.0.1:{port}"}
    assert (bounced.status, bounced.status_reason_code) == ("failed", "http_destination_forbidden")
    error = StepRun.objects.get(job=bounced).error
    assert error["host"] == "localhost" and error["category"] == "loopback"
    assert "/admin" not in [r["path"] for r in seen]


def test_an_http_host_removed_from_the_allow_list_after_submit_is_not_reached(
    clusters: Any, servers: Any
) -> None:
    port, seen = servers()
    AllowedHttpHost.objects.create(host="127.0.0.1", port=port)
    clusters()
    job = submit(
        gate_then({"name": "get", "kind": "http", "with": {"url": f"http://127.0.0.1:{port}/"}})
    )
    settled(job, ("waiting",), timeout=15)
    AllowedHttpHost.objects.all().delete()
    job_signal(actor=SUBMITTER, job_id=job.job_id, name="go")
    job = settled(job)
    assert (job.status, job.status_reason_code) == ("failed", "http_destination_forbidden")
    assert seen == []


def test_a_secret_missing_on_the_worker_fails_the_step_naming_it(
    clusters: Any, allow_commands: Any
) -> None:
    allow_commands("env")
    clusters()  # no GAIT_SECRET_BILLING_TOKEN on this worker
    job = submit(
        [
            {
                "name": "env",
                "kind": "command",
                "with": {"argv": ["env"], "env": {"TOKEN": {"secret": "BILLING_TOKEN"}}},
                "retry": {"max_attempts": 4, "initial_interval": "0.1s"},
            }
        ]
    )
    job = settled(job)
    assert (job.status, job.status_reason_code) == ("failed", "secret_missing")
    (run,) = StepRun.objects.filter(job=job)
    assert run.error["secret"] == "BILLING_TOKEN"
    assert "GAIT_SECRET_BILLING_TOKEN" in run.error["message"]
