"""Real workers for engine tests: `manage.py qcluster` subprocesses against the test database,
and real local HTTP servers for http steps.

Tests that use workers need ``transactional_db`` on either database (the workers only see
committed data). Leases are short here (GAIT_LEASE_SECONDS) so crash recovery fits in a test run.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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

    from jobs.engine.sweep import engine_bootstrap

    engine_bootstrap()
    yield start
    for c in started:
        c.stop()


class _Server(BaseHTTPRequestHandler):
    """Answers ``/redirect?to=URL`` with a 302, ``/big`` with 2 MB, ``/echo-auth`` with the
    Authorization header it received, anything else with 200 and what it saw."""

    seen: list[dict[str, Any]]

    def do_GET(self) -> None:
        type(self).seen.append(
            {
                "path": self.path,
                "host": self.headers.get("Host"),
                "auth": self.headers.get("Authorization"),
            }
        )
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/big":
            body = b"x" * (2 * 1024 * 1024)
        elif self.path == "/echo-auth":
            body = json.dumps({"you_sent": self.headers.get("Authorization")}).encode()
        else:
            body = json.dumps({"path": self.path, "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[Any]:
    """``servers()`` starts a local server on 127.0.0.1 and returns (port, requests seen)."""
    started: list[ThreadingHTTPServer] = []

    def start() -> tuple[int, list[dict[str, Any]]]:
        handler = type("Handler", (_Server,), {"seen": []})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server.server_address[1], handler.seen

    yield start
    for server in started:
        server.shutdown()
