"""`python manage.py up`: what `make run` runs.

Migrates, creates the demo data and the demo logins, then starts the web server (gunicorn) and
one django-q2 worker (`qcluster`) side by side, prints the URL and the login, and stops both on
Ctrl-C or when either dies. The demo logins keep their password across restarts
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
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

ROOT_WARNING = (
    "\n  WARNING: running as root. The worker runs job commands as this user, so a command step\n"
    "  could do anything root can. Run gaitweb as an unprivileged user (docs/operations.md).\n\n"
)


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
            from gaitweb.demo import demo_logins_ensure, demo_seed

            login = self._login_text(demo_logins_ensure(reset=opts["reset_demo_passwords"]))
            demo_seed()
        # the engine's sweep chain and the recurring-jobs loop, kept alive by django-q2
        # Schedules: queued now, run as soon as the worker below starts
        from jobs.engine import engine_bootstrap
        from jobs.recurring import recurring_bootstrap

        engine_bootstrap()
        recurring_bootstrap()
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
            ],
            env=env,
        )
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], env=env, cwd=settings.BASE_DIR
        )
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
        procs = [web, worker]
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(p.poll() is None for p in procs):
                time.sleep(0.3)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for p in procs:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
            self.stdout.write("gaitweb stopped.\n")

    @staticmethod
    def _login_text(logins: Any) -> str:
        if logins.password is None:
            return (
                f"  demo logins exist, but their password is not known here ({logins.path} is "
                "gone): --reset-demo-passwords sets a new one\n"
            )
        from gaitweb.demo import DEMO_USERS

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
