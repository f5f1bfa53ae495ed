"""`make run`'s demo data: a first look at the dashboard shows the product."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import Browser

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _keys(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.GAIT = {**settings.GAIT, "KEYS_DIR": tmp_path / "keys"}
    monkeypatch.delenv(settings.GAIT["SIGNING_KEY_ENV"], raising=False)


def test_demo_seed_shows_every_status_the_services_reach_a_pending_approval_and_a_signed_pack(
    cast, demo_mode
):
    from approvals.models import ApprovalRequest
    from gaitweb.demo import ENGINE_JOBS, demo_seed
    from jobs.models import Job, JobTemplate
    from jobs.services import job_verify_chain
    from packs.models import Pack

    first = demo_seed()
    statuses = set(Job.objects.values_list("status", flat=True))
    # without a worker the engine's jobs stay queued; `make run` starts one next to the web
    assert statuses == {
        "queued", "running", "paused", "decision_needed", "blocked",
        "emergency_stopped", "cancelled", "completed",
    }  # fmt: skip
    assert Job.objects.filter(job_id__in=ENGINE_JOBS, status="queued").count() == len(ENGINE_JOBS)
    assert ApprovalRequest.objects.filter(status="pending").count() == 2
    pack = Pack.objects.get(job__job_id="demo-nightly-report")
    assert pack.key_id  # signed
    assert JobTemplate.objects.filter(template_id="demo-etl").exists()
    for job in Job.objects.all():
        assert job_verify_chain(job_id=job.job_id).ok, job.job_id

    again = demo_seed()
    assert first["created"] == again["total"] and again["created"] == 0

    # a reviewer (not the demo agent) can decide the demo approvals
    html = Browser(cast.reviewer).get("/approvals/").content.decode()
    assert html.count('value="approve"') == 2


def _settings_in_a_fresh_process(**env: str) -> dict[str, Any]:
    """What a process started with the project's own settings and ``env`` registers and allows
    (a deployment: no test settings, no GAIT_STEP_MODULES of the test run)."""
    import json
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k not in ("GAIT_STEP_MODULES", "GAIT_DEMO")}
    base |= {"DJANGO_SETTINGS_MODULE": "gaitweb.settings", **env}
    code = (
        "import json; from django.conf import settings; from jobs.steps import step_function_names;"
        "print(json.dumps({'functions': step_function_names(),"
        " 'commands': settings.GAIT['COMMAND_STEPS'], 'shell': settings.GAIT['COMMAND_SHELL']}))"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_deployment_registers_no_demo_step_functions_and_runs_no_commands() -> None:
    deployment = _settings_in_a_fresh_process()
    assert deployment == {"functions": [], "commands": False, "shell": False}
    demo = _settings_in_a_fresh_process(GAIT_DEMO="true")
    assert {"add", "echo", "noop", "sum_outputs"} <= set(demo["functions"])
    assert "record" not in demo["functions"]  # writes any file it is given: tests only
    assert demo["commands"] is True and demo["shell"] is False


@pytest.mark.django_db(transaction=True)
def test_up_runs_in_demo_mode_and_warns_when_it_runs_as_root(tmp_path: Path) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from tests.conftest import subprocess_env
    from tests.workers import worker_db_ready

    worker_db_ready()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # its own data dir: the demo's signing key and static files stay out of the test run's
    env = subprocess_env(GAIT_DATA_DIR=str(tmp_path / "data"), Q_LOG_LEVEL="ERROR")
    env.pop("GAIT_DEMO", None)
    err_path = tmp_path / "up.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "up", "--port", str(port), "--workers", "1"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        try:
            banner = []
            deadline = time.monotonic() + 120
            assert proc.stdout is not None
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                banner.append(line)
                if "Ctrl-C" in line:
                    break
            time.sleep(0.5)  # the warning follows the banner
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    text = "".join(banner)
    assert "demo mode" in text, text + err_path.read_text()
    warned = "WARNING: running as root" in err_path.read_text()
    assert warned is (os.geteuid() == 0)
    from jobs.models import AllowedExecutable

    assert list(AllowedExecutable.objects.values_list("name", flat=True)) == ["echo"]
