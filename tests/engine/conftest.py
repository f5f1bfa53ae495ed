"""Real workers for engine tests: `manage.py qcluster` subprocesses against the test database.

Tests that use them need PostgreSQL and ``transactional_db`` (the workers only see committed
data). Leases are short here (GAIT_LEASE_SECONDS) so crash recovery fits in a test run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 2.0


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Cluster:
    """One `qcluster` process group; ``kill()`` is a real kill -9 of the whole group."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.log.close()


@pytest.fixture
def pg(transactional_db: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("real-worker engine tests need PostgreSQL (set DATABASE_URL)")
    from django.core.management import call_command

    call_command("createcachetable", verbosity=0)
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def worker_env(pg: None, tmp_path: Path) -> dict[str, str]:
    settings = connection.settings_dict
    url = f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/{settings['NAME']}"
    if settings.get("PASSWORD"):
        url = url.replace("@", f":{settings['PASSWORD']}@", 1)
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": url,
            "GAIT_DATA_DIR": os.environ.get("GAIT_DATA_DIR", str(tmp_path / "data")),
            "GAIT_LEASE_SECONDS": str(LEASE_SECONDS),
            "GAIT_HEARTBEAT_SECONDS": "0.5",
            "GAIT_SWEEP_SECONDS": "0.5",
            "GAIT_Q_WORKERS": "2",
            "Q_LOG_LEVEL": "ERROR",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def clusters(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start clusters with ``start()``; all are killed at the end of the test."""
    started: list[Cluster] = []

    def start(**env: str) -> Cluster:
        c = Cluster({**worker_env, **env}, tmp_path / f"qcluster-{len(started)}.log")
        started.append(c)
        return c

    from jobs.engine import engine_bootstrap

    engine_bootstrap()
    yield start
    for c in started:
        c.stop()
