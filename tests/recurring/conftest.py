"""Real workers for the recurring-job tests: `manage.py qcluster` subprocesses on the test
database (PostgreSQL, ``transactional_db``: workers only see committed rows)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import subprocess_env
from tests.workers import Cluster, worker_db_ready


@pytest.fixture
def pg(transactional_db: Any) -> None:
    worker_db_ready()


@pytest.fixture
def clusters(pg: None, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``start()`` starts a cluster; all are killed at the end of the test."""
    started: list[Cluster] = []
    env = subprocess_env(
        GAIT_DATA_DIR=os.environ.get("GAIT_DATA_DIR", str(tmp_path / "data")),
        GAIT_STEP_MODULES="tests.stepfns,tests.recurring.stepfns",
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
