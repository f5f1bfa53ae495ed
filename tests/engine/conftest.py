"""Real workers for engine tests: `manage.py qcluster` subprocesses against the test database.

Tests that use them need ``transactional_db`` on either database (the workers only see committed
data). Leases are short here (GAIT_LEASE_SECONDS) so crash recovery fits in a test run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import subprocess_env
from tests.workers import Cluster, worker_db_ready

LEASE_SECONDS = 2.0


@pytest.fixture
def pg(transactional_db: Any) -> None:
    worker_db_ready()


@pytest.fixture
def worker_env(pg: None, tmp_path: Path) -> dict[str, str]:
    return subprocess_env(
        GAIT_DATA_DIR=os.environ.get("GAIT_DATA_DIR", str(tmp_path / "data")),
        GAIT_LEASE_SECONDS=str(LEASE_SECONDS),
        GAIT_HEARTBEAT_SECONDS="0.5",
        GAIT_SWEEP_SECONDS="0.5",
        GAIT_Q_WORKERS="2",
        Q_LOG_LEVEL="ERROR",
        PYTHONUNBUFFERED="1",
        # the workers' own switches (the test process decides what it submits: allow_commands)
        GAIT_COMMAND_STEPS="true",
        GAIT_COMMAND_SHELL="true",
    )


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
