"""Real workers for the recurring-job tests: `manage.py qcluster` subprocesses on the test
database (PostgreSQL, ``transactional_db``: workers only see committed rows)."""

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

from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
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
        pytest.skip("real-worker tests need PostgreSQL (set DATABASE_URL)")
    from django.core.cache import cache
    from django.core.management import call_command

    call_command("createcachetable", verbosity=0)
    cache.clear()


@pytest.fixture
def clusters(pg: None, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``start()`` starts a cluster; all are killed at the end of the test."""
    started: list[Cluster] = []
    env = subprocess_env(
        GAIT_DATA_DIR=os.environ.get("GAIT_DATA_DIR", str(tmp_path / "data")),
        GAIT_STEP_MODULES="jobs.stepfns,tests.recurring.stepfns",
        GAIT_Q_WORKERS="2",
        GAIT_LEASE_SECONDS="2",
        GAIT_HEARTBEAT_SECONDS="0.5",
        Q_LOG_LEVEL="ERROR",
        PYTHONUNBUFFERED="1",
    )

    def start() -> Cluster:
        c = Cluster(env, tmp_path / f"qcluster-{len(started)}.log")
        started.append(c)
        return c

    from jobs.recurring import recurring_bootstrap

    recurring_bootstrap()
    yield start
    for c in started:
        c.stop()
