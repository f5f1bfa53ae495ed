"""A runner's hold on one job: the lease, its token, and what ends it.

A claim takes the lease (``lease_token``, ``lease_owner``, ``lease_expires_at``); every write of
the runner is guarded by the token, so a worker whose lease expired (another worker recovered
the job) cannot write. The heartbeat (jobs/engine/heartbeat.py) renews it."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection

from jobs.models import JobStatus
from jobs.states import PREEMPT_REASONS
from jobs.steps import StepContext

ENGINE_ACTOR = "gaitweb-engine"


def engine_setting(name: str, default: Any = None) -> Any:
    return settings.GAIT.get(name, default)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _LeaseLost(Exception):
    """Another worker holds the job now (our lease expired): stop without writing anything."""


@dataclass
class _Attempt:
    """The attempt a runner is running now, as the heartbeat sees it."""

    ctx: StepContext
    deadline: float  # time.monotonic() after which a python step is told to stop
    run_id: int | None = None  # the committed ``started`` StepRun (non-idempotent, command)
    output_saved_at: float = 0.0  # time.monotonic() the heartbeat last saved a command's tails
    output_saved: tuple[str, str] = ("", "")


def _token_param(token: uuid.UUID) -> Any:
    """A lease token as a raw-SQL parameter (SQLite stores UUIDs as 32 hex characters)."""
    return token if connection.vendor == "postgresql" else token.hex


def _preempt_reason(status: str) -> str:
    """The reason code of a step or dispatch preempted by a stop or a cancel."""
    stopped, cancelled = PREEMPT_REASONS
    return stopped if status == JobStatus.EMERGENCY_STOPPED else cancelled
