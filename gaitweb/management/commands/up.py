"""`python manage.py up`: what `make run` runs.

Migrates, creates the demo data and the demo logins (fresh random password printed on every
run, stored only as Django's password hash), then starts the web server (gunicorn) and one
django-q2 worker (`qcluster`) side by side, prints the URL and the login, and stops both on
Ctrl-C or when either dies.

It runs in demo mode (``GAIT_DEMO``: the demo's python step functions, command steps on with
``echo`` allow-listed; docs/security.md) unless ``--no-demo`` is given: settings are read once,
from the environment, so without ``GAIT_DEMO`` set it starts itself again with it. It warns
when it runs as root: job commands would run as root.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

DEMO_USERS = [
    ("admin", "admin"),
    ("reviewer", "reviewer"),
    ("operator", "operator"),
    ("viewer", "viewer"),
]


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
            help="no demo jobs and no demo mode (no demo step functions, commands as configured)",
        )
        parser.add_argument("--workers", type=int, default=2, help="web worker processes")

    def handle(self, *args: Any, **opts: Any) -> None:
        if not opts["no_demo"] and not settings.GAIT["DEMO"]:  # type: ignore[index]
            # every process (this one, gunicorn, the worker) must read the same settings
            os.execve(sys.executable, sys.orig_argv, {**os.environ, "GAIT_DEMO": "true"})
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        password = self._demo_logins()
        if not opts["no_demo"]:
            from gaitweb.demo import demo_seed

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
            f"  log in as admin / {password}   (also reviewer, operator, viewer with the same password)\n"
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

    def _demo_logins(self) -> str:
        from django.contrib.auth.models import Group, User

        from gaitweb.roles import roles_ensure

        roles_ensure()
        password = secrets.token_urlsafe(9)
        for username, role in DEMO_USERS:
            user, _ = User.objects.get_or_create(
                username=username, defaults={"email": f"{username}@localhost"}
            )
            user.is_staff = role == "admin"
            user.is_superuser = role == "admin"
            user.set_password(password)
            user.save()
            user.groups.set([Group.objects.get(name=role)])
        return password
