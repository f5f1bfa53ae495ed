"""`python manage.py up`: what `make run` runs.

Migrates, creates the demo data and the demo logins, then starts the web server (gunicorn) and
one django-q2 worker (`qcluster`) side by side, prints the URL and the login. It supervises the
worker: a worker that dies is started again after a backoff (1 s, doubling up to 30 s), and the
log says so. Ctrl-C or SIGTERM stops both cleanly (the web server dying stops everything). Each
instance has its own gunicorn control socket (under its data dir). The demo logins keep their password across restarts
(gaitweb.demo.demo_logins_ensure; `--reset-demo-passwords` draws a new one); `--no-demo`
creates neither demo data nor logins.

It runs in demo mode (``GAIT_DEMO``: the demo's python step functions, command steps on with
``echo`` allow-listed; docs/security.md) unless ``--no-demo`` is given: settings are read once,
from the environment, so without ``GAIT_DEMO`` set it starts itself again with it. It warns
when it runs as root: job commands would run as root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from gaitweb.demo import DEMO_USERS, demo_logins_ensure, demo_seed
from jobs.engine.sweep import engine_bootstrap
from jobs.procwatch import die_with_parent
from jobs.recurring import recurring_bootstrap

ROOT_WARNING = (
    "\n  WARNING: running as root. The worker runs job commands as this user, so a command step\n"
    "  could do anything root can. Run gaitweb as an unprivileged user (docs/operations.md).\n\n"
)


WORKER_BACKOFF_FIRST = 1.0
WORKER_BACKOFF_MAX = 30.0
WORKER_HEALTHY_SECONDS = 60.0  # a worker that ran this long resets the backoff
STOP_GRACE_SECONDS = 10.0
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux


def _control_socket_args(data_dir: Path, port: int) -> list[str]:
    """gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl),
    which two instances would share: each instance gets its own under its data dir, or none
    when that path is too long for a Unix socket."""
    path = data_dir / "run" / f"gunicorn-{port}.ctl"
    if len(str(path)) > SOCKET_PATH_MAX:
        return ["--no-control-socket"]
    path.parent.mkdir(parents=True, exist_ok=True)
    return ["--control-socket", str(path)]


def _worker_start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        env=env,
        cwd=settings.BASE_DIR,
        start_new_session=True,  # its group holds its own children: stopped together
        preexec_fn=die_with_parent(os.getpid(), signal.SIGTERM),
    )


def _group_kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each (gunicorn and qcluster stop their own workers), up to
    STOP_GRACE_SECONDS, then SIGKILL to whatever is left of each process group."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _group_kill(p)
        p.wait()


class Command(BaseCommand):
    help = "Migrate, seed demo data, and run the web server and a worker together."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--no-demo",
            action="store_true",
            help="no demo jobs, no demo logins and no demo mode (no demo step functions, commands as configured)",
        )
        parser.add_argument(
            "--reset-demo-passwords",
            action="store_true",
            help="give every demo login a new password (they are kept across restarts)",
        )
        parser.add_argument("--workers", type=int, default=2, help="web worker processes")

    def handle(self, *args: Any, **opts: Any) -> None:
        if not opts["no_demo"] and not settings.GAIT["DEMO"]:  # type: ignore[index]
            # every process (this one, gunicorn, the worker) must read the same settings
            os.execve(sys.executable, sys.orig_argv, {**os.environ, "GAIT_DEMO": "true"})
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        login = "  no demo logins (--no-demo): create one with `manage.py createsuperuser`\n"
        if not opts["no_demo"]:
            login = self._login_text(demo_logins_ensure(reset=opts["reset_demo_passwords"]))
            demo_seed()
        # the engine's sweep chain and the recurring-jobs loop, kept alive by django-q2
        # Schedules: queued now, run as soon as the worker below starts

        engine_bootstrap()
        recurring_bootstrap()
        # before any child exists: a stop asked for while starting still stops both
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        env = dict(os.environ)
        bind = f"{opts['host']}:{opts['port']}"
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "gaitweb.wsgi",
                "--bind",
                bind,
                "--workers",
                str(opts["workers"]),
                "--access-logfile",
                "-",
                "--graceful-timeout",
                "5",
                *_control_socket_args(Path(settings.DATA_DIR), opts["port"]),
            ],
            env=env,
            start_new_session=True,  # its own group: Ctrl-C reaches this process, which stops it
            preexec_fn=die_with_parent(os.getpid(), signal.SIGTERM),  # even if this one is killed
        )
        worker = _worker_start(env)
        url = f"http://{bind}/"
        self.stdout.write(
            "\n"
            f"  gaitweb is running at {url}\n"
            f"{login}"
            f"  API docs: {url}api/v1/docs/   admin: {url}admin/\n"
            f"  database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}   data dir: {settings.DATA_DIR}\n"
            + (
                "  demo mode: the demo's step functions, command steps on (echo only)\n"
                if settings.GAIT["DEMO"]  # type: ignore[index]
                else ""
            )
            + "  Ctrl-C stops the web server and the worker.\n\n"
        )
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.stderr.write(ROOT_WARNING)
            self.stderr.flush()
        self.stdout.flush()
        self.worker: subprocess.Popen[bytes] | None = worker
        try:
            self._supervise(web, env, lambda: stopping)
        finally:
            _stop_all([p for p in (web, self.worker) if p is not None])
            self.stdout.write("gaitweb stopped.\n")
            self.stdout.flush()

    def _supervise(self, web: subprocess.Popen[bytes], env: dict[str, str], stopping: Any) -> None:
        """Until a stop is asked for: restart the worker (``self.worker``) whenever it dies,
        after a backoff that doubles up to WORKER_BACKOFF_MAX (and starts over once a worker ran
        a minute), saying so; the web server dying ends it all."""
        backoff = WORKER_BACKOFF_FIRST
        started = time.monotonic()
        restart_at: float | None = None
        while not stopping():
            if web.poll() is not None:
                self._log(f"the web server exited with code {web.returncode}: stopping")
                break
            now = time.monotonic()
            worker = self.worker
            if worker is not None and worker.poll() is not None:
                if now - started >= WORKER_HEALTHY_SECONDS:
                    backoff = WORKER_BACKOFF_FIRST
                self._log(
                    f"the worker (pid {worker.pid}) exited with code {worker.returncode}; "
                    f"restarting it in {backoff:g} s"
                )
                _group_kill(worker)  # what it left behind (its own children)
                self.worker, restart_at = None, now + backoff
                backoff = min(backoff * 2, WORKER_BACKOFF_MAX)
            if self.worker is None and restart_at is not None and now >= restart_at:
                self.worker, restart_at, started = _worker_start(env), None, now
                self._log(f"the worker restarted (pid {self.worker.pid})")
            time.sleep(0.2)

    def _log(self, message: str) -> None:
        self.stderr.write(f"gaitweb up: {message}\n")
        self.stderr.flush()

    @staticmethod
    def _login_text(logins: Any) -> str:
        if logins.password is None:
            return (
                f"  demo logins exist, but their password is not known here ({logins.path} is "
                "gone): --reset-demo-passwords sets a new one\n"
            )

        shown = [name for name, _ in DEMO_USERS if name not in logins.changed]
        text = (
            f"  log in as {' / '.join(shown)} with password {logins.password}"
            f"   (kept in {logins.path}, readable by you only)\n"
            if shown
            else ""
        )
        if logins.changed:
            text += f"  {', '.join(logins.changed)}: password changed since, not shown\n"
        return text
