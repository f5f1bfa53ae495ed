"""`make run`'s demo data: a first look at the dashboard shows the product."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from approvals.models import ApprovalRequest
from gaitweb.demo import DEMO_USERS, ENGINE_JOBS, demo_logins_ensure, demo_seed
from jobs.models import AllowedExecutable, Job, JobTemplate
from jobs.services import job_verify_chain
from packs.models import Pack
from tests.web.conftest import Browser

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _keys(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.GAIT = {**settings.GAIT, "KEYS_DIR": tmp_path / "keys"}
    monkeypatch.delenv(settings.GAIT["SIGNING_KEY_ENV"], raising=False)


def test_demo_seed_shows_every_status_the_services_reach_a_pending_approval_and_a_signed_pack(
    cast, demo_mode
):
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
        assert job_verify_chain(actor=None, job_id=job.job_id).ok, job.job_id

    again = demo_seed()
    assert first["created"] == again["total"] and again["created"] == 0

    # a reviewer (not the demo agent) can decide the demo approvals
    html = Browser(cast.reviewer).get("/approvals/").content.decode()
    assert html.count('value="approve"') == 2


def _password_of(user: str) -> str:
    from django.contrib.auth.models import User

    return User.objects.get(username=user).password


def test_demo_logins_keep_their_password_across_starts_in_a_0600_file(settings, tmp_path):
    import stat

    from django.contrib.auth import authenticate
    from django.http import HttpRequest

    settings.DATA_DIR = tmp_path
    first = demo_logins_ensure()
    hashes = {name: _password_of(name) for name, _ in DEMO_USERS}
    second = demo_logins_ensure()

    assert first.password and second.password == first.password
    assert first.created == [name for name, _ in DEMO_USERS] and second.created == []
    assert {name: _password_of(name) for name, _ in DEMO_USERS} == hashes  # untouched
    path = tmp_path / "demo_password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    request = HttpRequest()
    request.META["REMOTE_ADDR"] = "127.0.0.1"
    assert authenticate(request, username="admin", password=first.password) is not None


def test_a_changed_demo_password_is_kept_and_not_printed_and_reset_replaces_all(settings, tmp_path):
    from django.contrib.auth.models import User

    settings.DATA_DIR = tmp_path
    first = demo_logins_ensure()
    viewer = User.objects.get(username="viewer")
    viewer.set_password("my-own-password-1")
    viewer.save()

    kept = demo_logins_ensure()
    assert kept.password == first.password and kept.changed == ["viewer"]
    assert User.objects.get(username="viewer").check_password("my-own-password-1")

    reset = demo_logins_ensure(reset=True)
    assert reset.reset and reset.password != first.password and reset.changed == []
    for name in ("admin", "viewer"):
        assert User.objects.get(username=name).check_password(reset.password)


def test_without_the_password_file_existing_demo_logins_are_left_alone(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    demo_logins_ensure()
    before = _password_of("admin")
    (tmp_path / "demo_password").unlink()

    unknown = demo_logins_ensure()

    assert unknown.password is None and _password_of("admin") == before
    assert not (tmp_path / "demo_password").exists()


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

    assert list(AllowedExecutable.objects.values_list("name", flat=True)) == ["echo"]
