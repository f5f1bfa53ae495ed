"""Shared fixtures: the cast of users with explicit roles, and database helpers.

The cast (docs/architecture.md, "Tests"): reviewer, operator, admin, integrator, viewer and an outsider with
no role at all; a second reviewer for N-of-M and separation-of-duties cases.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from gaitweb.lib.actors import Actor

# Gait's published compatibility vectors, when a checkout of them is at hand (.ci/run points
# here when it finds one): tests that read them skip with a reason otherwise. The project's own
# cases live in tests/approvals/gait_compat/ and always run.
GAIT_VECTORS = Path(os.environ.get("GAIT_VECTORS_DIR") or "/nonexistent/gait-vectors")
GAIT_COMPAT = Path(__file__).resolve().parent / "approvals" / "gait_compat"

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # the cast logs in a lot; PBKDF2's deliberate slowness buys nothing in tests
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _test_client_logins_carry_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """django-axes (login throttling, settings.AUTHENTICATION_BACKENDS) needs the request
    behind every ``authenticate()``, and the test client's ``login()`` passes none: give it one
    from 127.0.0.1, so the suite logs in through the same backends as the site does."""
    from django.http import HttpRequest
    from django.test.client import ClientMixin

    original = ClientMixin.login

    def login(self: Any, **credentials: Any) -> bool:
        if "request" not in credentials:
            request = HttpRequest()
            request.META["REMOTE_ADDR"] = "127.0.0.1"
            credentials["request"] = request
        return original(self, **credentials)

    monkeypatch.setattr(ClientMixin, "login", login)


@pytest.fixture(autouse=True)
def _allowlists_forgotten() -> Iterator[None]:
    # submit's per-process copy of the allow-lists must not outlive the rows of one test
    from jobs.allowlists import allowlists_forget

    allowlists_forget()
    yield
    allowlists_forget()


@pytest.fixture
def allow_commands(settings: Any, db: Any) -> Callable[..., None]:
    """``allow_commands("echo", "sh", shell=True)``: command steps on (as an admin would turn
    them on), and these executables on the allow-list by name (their file on COMMAND_PATH)."""
    from jobs.models import AllowedExecutable

    def allow(*names: str, shell: bool = False) -> None:
        settings.GAIT = {
            **settings.GAIT,
            "COMMAND_STEPS": True,
            "COMMAND_SHELL": shell or settings.GAIT["COMMAND_SHELL"],
        }
        for name in names:
            path = shutil.which(name, path=settings.GAIT["COMMAND_PATH"])
            assert path, f"{name} is not on {settings.GAIT['COMMAND_PATH']}"
            AllowedExecutable.objects.get_or_create(name=name, defaults={"path": path})

    return allow


@pytest.fixture
def demo_mode(settings: Any, db: Any) -> None:
    """What `make run` runs in (GAIT_DEMO): command steps on, the demo's allow-list. (The
    demo's python step functions are registered in every test run: tests/stepfns.py.)"""
    from gaitweb.demo import demo_allowlist_ensure

    settings.GAIT = {**settings.GAIT, "DEMO": True, "COMMAND_STEPS": True}
    demo_allowlist_ensure()


@pytest.fixture
def allow_http_host(db: Any) -> Callable[..., None]:
    """``allow_http_host("127.0.0.1", port)``: an internal host http steps may reach."""
    from jobs.models import AllowedHttpHost

    def allow(host: str, port: int = 0) -> None:
        AllowedHttpHost.objects.get_or_create(host=host, port=port)

    return allow


@dataclass
class Cast:
    reviewer: Any
    reviewer2: Any
    operator: Any
    admin: Any
    integrator: Any
    viewer: Any
    outsider: Any

    def actor(self, name: str) -> Actor:
        return Actor.from_user(getattr(self, name))


def _make_user(username: str, role: str | None) -> Any:
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(
        username=username, password=PASSWORD, email=f"{username}@example.test"
    )
    if role:
        user.groups.add(Group.objects.get(name=role))
    return User.objects.get(pk=user.pk)  # fresh instance: no cached permissions


@pytest.fixture
def cast(db: Any) -> Cast:
    from gaitweb.lib.roles import roles_ensure

    roles_ensure()
    return Cast(
        reviewer=_make_user("rita_reviewer", "reviewer"),
        reviewer2=_make_user("rob_reviewer", "reviewer"),
        operator=_make_user("otto_operator", "operator"),
        admin=_make_user("ada_admin", "admin"),
        integrator=_make_user("ivan_integrator", "integrator"),
        viewer=_make_user("vera_viewer", "viewer"),
        outsider=_make_user("oscar_outsider", None),
    )


@pytest.fixture
def system() -> Actor:
    return Actor.system("tester")


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def postgres_only(db: Any) -> None:
    """For the few tests of PostgreSQL's own features (prepared statements, LISTEN/NOTIFY): the
    rest of the suite runs on both databases (.ci/run runs it twice)."""
    if not is_postgres():
        pytest.skip("tests a PostgreSQL feature (set DATABASE_URL=postgres://… to run it)")


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a real subprocess (CLI, qcluster) that must see the test database."""
    import os

    env = dict(os.environ)
    settings_dict = connection.settings_dict
    if connection.vendor == "postgresql":
        host = settings_dict.get("HOST") or "127.0.0.1"
        port = settings_dict.get("PORT") or 5432
        user = settings_dict.get("USER") or "postgres"
        env["DATABASE_URL"] = f"postgres://{user}@{host}:{port}/{settings_dict['NAME']}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{settings_dict['NAME']}"
    env.update(extra)
    return env
