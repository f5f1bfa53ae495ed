"""`manage.py up` (what `make run` runs) as a real subprocess: the demo logins keep their
password across restarts, the login is printed on every start, and `--no-demo` creates no
login at all (docs/security.md, "Deployment basics")."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
LOGIN_LINE = re.compile(r"log in as admin / reviewer / operator / viewer with password (\S+)")

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def up(data_dir: Path, *args: str) -> str:
    """Start `manage.py up`, wait until it says it is running, stop it; its output."""
    env = subprocess_env(GAIT_DATA_DIR=str(data_dir), GAIT_Q_WORKERS="1")
    env.pop("GAIT_SIGNING_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "up", "--port", str(_free_port()), "--workers", "1", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        assert any("gaitweb is running at" in line for line in lines), "".join(lines)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return "".join(lines)


def _hashes() -> dict[str, Any]:
    from django.contrib.auth.models import User

    return dict(User.objects.values_list("username", "password"))


def test_no_demo_creates_no_logins_and_restarts_keep_the_demo_password(
    tmp_path: Path, settings: Any
) -> None:
    from django.conf import global_settings
    from django.contrib.auth.models import User

    # the subprocess hashes with the real hashers, not the suite's fast one
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS

    out = up(tmp_path, "--no-demo")
    assert "no demo logins" in out and LOGIN_LINE.search(out) is None
    assert not User.objects.exists()
    assert not (tmp_path / "demo_password").exists()

    first = LOGIN_LINE.search(up(tmp_path))
    assert first is not None
    hashes = _hashes()
    assert set(hashes) == {"admin", "reviewer", "operator", "viewer"}

    second = LOGIN_LINE.search(up(tmp_path))  # printed again, the same, nothing rewritten
    assert second is not None and second.group(1) == first.group(1)
    assert _hashes() == hashes

    third = LOGIN_LINE.search(up(tmp_path, "--reset-demo-passwords"))
    assert third is not None and third.group(1) != first.group(1)
    assert User.objects.get(username="admin").check_password(third.group(1))
