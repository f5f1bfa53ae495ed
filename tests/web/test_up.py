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


class Up:
    """A running `manage.py up` (its own session, as a terminal would run it); output collected."""

    def __init__(self, data_dir: Path, *args: str, sqlite: bool = False) -> None:
        """``sqlite``: on the default database, as a fresh clone's `make run` (a SQLite file in
        ``data_dir``), not the suite's test database."""
        import threading

        self.port = _free_port()
        self.data_dir = data_dir
        env = subprocess_env(GAIT_DATA_DIR=str(data_dir), GAIT_Q_WORKERS="1")
        env.pop("GAIT_SIGNING_KEY", None)
        if sqlite:
            env.pop("DATABASE_URL", None)
        self.env = env
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "up", "--port", str(self.port), "--workers", "1", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.wait_for("Ctrl-C stops", timeout=120)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if text in line), None)
            if found is not None:
                return found
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the output of up:\n{self.output}")

    def children(self) -> dict[str, int]:
        """{"web": pid, "worker": pid} of its direct children, read from /proc."""
        found: dict[str, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError):
                continue
            if int(fields[1]) != self.proc.pid or fields[0] == "Z":
                continue
            if "gunicorn" in cmdline:
                found["web"] = int(stat.parent.name)
            elif "qcluster" in cmdline:
                found["worker"] = int(stat.parent.name)
        return found

    def health(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/health", timeout=5) as r:
            return int(r.status)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_worker_is_restarted_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    """The user's worker died (kill -9): the web server stays up, the worker comes back and the
    log says so. Then Ctrl-C: the web server and the worker are both gone."""
    up_ = Up(tmp_path, "--no-demo")
    try:
        kids = _wait(lambda: (k := up_.children()) and len(k) == 2 and k, 30, "web and worker")
        os.killpg(kids["worker"], signal.SIGKILL)  # the worker and its own children
        line = up_.wait_for("restarting it in 1 s")
        assert f"the worker (pid {kids['worker']}) exited with code -9" in line
        restarted = up_.wait_for("the worker restarted (pid ", timeout=15)
        new_pid = int(re.search(r"pid (\d+)", restarted).group(1))
        assert new_pid != kids["worker"] and not _gone(new_pid)
        assert up_.proc.poll() is None and up_.health() == 200  # the web server never stopped
        assert up_.children() == {"web": kids["web"], "worker": new_pid}

        os.kill(
            up_.proc.pid, signal.SIGINT
        )  # Ctrl-C reaches `up` (its children have their own sessions)
        assert up_.proc.wait(timeout=30) == 0
        up_.wait_for("gaitweb stopped.")
        _wait(lambda: _gone(kids["web"]) and _gone(new_pid), 10, "web and worker to be gone")
    finally:
        up_.stop()


def test_two_instances_on_different_ports_and_data_dirs_do_not_clash(tmp_path: Path) -> None:
    """Two `make run`s side by side: each serves, each has its own gunicorn control socket."""
    first = Up(tmp_path / "a", "--no-demo")
    try:
        second = Up(tmp_path / "b", "--no-demo")
        try:
            assert first.health() == 200 and second.health() == 200
            a = tmp_path / "a" / "run" / f"gunicorn-{first.port}.ctl"
            b = tmp_path / "b" / "run" / f"gunicorn-{second.port}.ctl"
            _wait(lambda: a.is_socket() and b.is_socket(), 15, "both control sockets")
            assert "already" not in second.output.lower() and "address in use" not in second.output
            second.stop()
            assert second.proc.returncode == 0
            assert first.health() == 200 and a.is_socket()  # stopping one left the other alone
        finally:
            second.stop()
    finally:
        first.stop()


def test_kill_9_of_up_takes_the_web_server_and_the_worker_down_too(tmp_path: Path) -> None:
    """Its children run in their own sessions (so Ctrl-C reaches only `up`, which stops them
    in order); if `up` itself is killed, the kernel's parent-death signal stops them."""
    up_ = Up(tmp_path, "--no-demo")
    try:
        kids = _wait(lambda: (k := up_.children()) and len(k) == 2 and k, 30, "web and worker")
        os.kill(up_.proc.pid, signal.SIGKILL)
        up_.proc.wait()
        _wait(lambda: _gone(kids["web"]) and _gone(kids["worker"]), 20, "web and worker to stop")
    finally:
        for pid in up_.children().values():
            os.kill(pid, signal.SIGKILL)
        up_.stop()
