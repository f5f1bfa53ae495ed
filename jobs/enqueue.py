"""The enqueue path: how a task reaches a worker now or at a given time (docs/engine.md, "Wake-ups,
timers and the sweep").

django-q2's ORM broker hides a queued row until its ``lock`` time has passed (``dequeue`` takes
rows with ``lock < now``), and ``async_task(..., broker=…)`` accepts a broker instance. Writing
the row with ``lock = due time`` (``DelayedORM``) therefore gives delayed delivery — what
timers and retry backoffs need, and what django-q2's 30-second scheduler tick cannot give. On
PostgreSQL the row is written and announced (``NOTIFY``, jobs/wake.py) in one statement, in the
caller's transaction.

- ``advance_enqueue``: deliver the engine's ``advance(job_id)``; lifecycle services call it
  whenever a job becomes runnable (submit with steps, resume, approve, signal, retry), inside
  the transaction that made it runnable, so the row commits or rolls back with that change.
- ``TaskChain``: a task that re-enqueues itself (the engine's sweep, the recurring fire loop).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connections
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from jobs.wake import WAKE_CHANNEL, notify_enabled

ADVANCE_TASK = "jobs.tasks.advance"


class DelayedORM(ORM):
    def __init__(self, list_key: str | None = None, *, at: datetime | None = None) -> None:
        # The stock constructor opens "a connection" by calling close_old_connections(), which
        # forces a health-check round trip on the next query; enqueueing needs none of it.
        self.list_key = list_key or Conf.CLUSTER_NAME
        self.connection = None
        self.cache = None
        self._info = None
        self.at = at

    def enqueue(self, task: str) -> int:
        now = timezone.now()
        lock = self.at if self.at is not None and self.at > now else now
        if not notify_enabled(Conf.ORM):
            row = OrmQ.objects.using(Conf.ORM).create(key=self.list_key, payload=task, lock=lock)
            return int(row.pk)
        due = f"{lock.timestamp():.3f}" if lock > now else ""
        with connections[Conf.ORM].cursor() as cur:
            cur.execute(
                f'WITH r AS (INSERT INTO "{OrmQ._meta.db_table}" ("key", "payload", "lock") '
                'VALUES (%s, %s, %s) RETURNING "id") SELECT r.id, pg_notify(%s, %s) FROM r',
                [self.list_key, task, lock, WAKE_CHANNEL, due],
            )
            row_id = cur.fetchone()[0]
        return int(row_id)


def advance_enqueue(job_id: str, *, at: datetime | None = None) -> None:
    """Deliver ``advance(job_id)`` now, or not before ``at``. Call it inside the transaction that
    made the job runnable: the broker row commits or rolls back with it."""
    gait: dict[str, Any] = settings.GAIT  # type: ignore[assignment]
    # django-q2's per-task timeout must not kill a slice whose step may legitimately run up to
    # STEP_TIMEOUT_MAX. (A broker re-delivery of a long-running task after Q_CLUSTER["retry"]
    # is harmless: the lease is held, the duplicate exits.)
    timeout = int(float(gait["STEP_TIMEOUT_MAX"]) + float(gait["SLICE_SECONDS"]) + 60)
    async_task(
        ADVANCE_TASK,
        job_id,
        q_options={
            "timeout": max(timeout, _q_timeout()),
            "broker": DelayedORM(at=at),
            "save": False,
            "task_name": f"advance {job_id}"[:100],
        },
    )


def _q_timeout() -> int:
    q: dict[str, Any] = settings.Q_CLUSTER  # type: ignore[assignment]
    return int(q.get("timeout") or 0)


# a link's claim outlives its backup, so the backup of a link that ran exits (a claim that
# expired first would let every backup run too, and each would enqueue two more links)
CHAIN_BACKUP_SECONDS = 3.0
CHAIN_CLAIM_SECONDS = 60


@dataclass(frozen=True)
class TaskChain:
    """A task that re-enqueues itself through the delayed broker: one link, then the next.

    Each link is enqueued twice, on time and a backup ``CHAIN_BACKUP_SECONDS`` later, and runs
    once: the first delivery to claim it (``cache.add`` with a short TTL) runs it, the other
    exits. A worker killed between taking a link from the broker and running it (django-q2
    hides that row until its ``retry`` passes, an hour) thus delays the chain by seconds, not
    an hour. One chain runs at a time: ``start`` writes a new token to the cache, and a link
    whose token is no longer current ends its chain. Each running link records a beat, by which
    ``start`` tells a live chain from a dead one.

    The task is called as ``task(token, seq)``."""

    task: str  # dotted path of the django-q2 task that runs one link
    key: str  # cache key prefix: <key>:token, <key>:beat, <key>:link:<token>:<seq>
    label: str  # the broker row's task name

    @property
    def token_key(self) -> str:
        return f"{self.key}:token"

    @property
    def beat_key(self) -> str:
        return f"{self.key}:beat"

    def link_enqueue(self, token: str, seq: int, *, at: datetime | None) -> None:
        async_task(
            self.task,
            token,
            seq,
            q_options={"broker": DelayedORM(at=at), "save": False, "task_name": self.label},
        )

    def link_begin(self, token: str, seq: int) -> str:
        """Before a link runs: "" if it should, else why not (``superseded`` by a newer chain,
        ``duplicate_link``: its twin ran it)."""
        current = cache.get(self.token_key)
        if current is not None and current != token:
            return "superseded"
        if not cache.add(f"{self.key}:link:{token}:{seq}", 1, timeout=CHAIN_CLAIM_SECONDS):
            return "duplicate_link"
        if current is None:
            cache.set(self.token_key, token, None)
        cache.set(self.beat_key, time.time(), None)
        return ""

    def link_next(self, token: str, seq: int, *, at: datetime) -> None:
        """Enqueue link ``seq + 1`` for ``at``, and its backup."""
        self.link_enqueue(token, seq + 1, at=at)
        self.link_enqueue(token, seq + 1, at=at + timedelta(seconds=CHAIN_BACKUP_SECONDS))

    def beat_age(self) -> float | None:
        """Seconds since a link of the current chain last ran (None: never)."""
        beat = cache.get(self.beat_key)
        return None if beat is None else time.time() - float(beat)

    def start(self, *, stale_after: float, force: bool = False) -> bool:
        """Start a new chain unless a live one beat within ``stale_after`` seconds. True if one
        was started."""
        age = self.beat_age()
        if not force and age is not None and age < stale_after:
            return False
        token = uuid.uuid4().hex
        cache.set(self.token_key, token, None)
        cache.set(self.beat_key, time.time(), None)
        self.link_enqueue(token, 0, at=None)
        return True
