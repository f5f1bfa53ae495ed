"""The cluster's side of gaitweb's django-q2 broker: push wake-ups on PostgreSQL, and the sweep's
watchdog (docs/engine.md, "Wake-ups, timers and the sweep"). Rows are written, now or delayed,
by jobs/enqueue.py.

On PostgreSQL the cluster's pusher takes a row with one ``UPDATE … FOR UPDATE SKIP LOCKED …
RETURNING`` and, when there is none, waits on ``LISTEN`` for at most the poll interval instead
of sleeping it out (and wakes at the due time of a delayed row it heard about). SQLite keeps
the stock poll.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

from jobs.engine.sweep import sweep_kick
from jobs.enqueue import ADVANCE_TASK
from jobs.wake import WAKE_CHANNEL, Listener, notify_enabled

log = logging.getLogger("gaitweb.engine")


class ClusterORM(ORM):
    """The ORM broker the cluster itself uses (``Q_CLUSTER["broker_class"]``).

    - ``dequeue`` on PostgreSQL: one statement takes a ready row (``SKIP LOCKED``: clusters
      never wait on each other); with none ready, wait on ``LISTEN`` (jobs/wake.py) for at most
      the poll interval, or until the due time of a delayed row announced meanwhile.
    - a watchdog for the engine's sweep chain. The sweep re-enqueues itself as a delayed broker
      row. If a cluster is killed while holding that row (dequeued rows stay locked for
      ``retry`` seconds), the chain is gone, and so is crash recovery for every job. The pusher
      of every live cluster therefore checks the chain's heartbeat every couple of seconds and
      restarts it when it went quiet: one cache read per check, and recovery never waits for
      django-q2's 30-second scheduler tick.
    """

    _next_check = 0.0
    _listener: Listener | None = None

    def ping(self) -> bool:  # called once when a cluster starts
        self._sweep_watch()
        return True

    def dequeue(self):  # type: ignore[no-untyped-def]
        self._sweep_watch()
        if connections[Conf.ORM].vendor != "postgresql":
            return super().dequeue()
        tasks = self._take()
        if tasks:
            return tasks
        if not notify_enabled(Conf.ORM):
            time.sleep(Conf.POLL)
            return None
        if self._listener is None:
            self._listener = Listener((WAKE_CHANNEL,), alias=Conf.ORM)
        wait = float(Conf.POLL)
        due_in = self._listener.next_due_in(time.time())
        if due_in is not None:  # a delayed row falls due before the poll: wake just after it
            wait = min(wait, due_in + 0.002)
        self._listener.wait(wait)
        return None

    def _take(self) -> list[tuple[int, str]]:
        table = OrmQ._meta.db_table
        now = timezone.now()
        with connections[Conf.ORM].cursor() as cur:
            cur.execute(
                f'UPDATE "{table}" SET "lock" = %s WHERE "id" IN (SELECT "id" FROM "{table}" '
                'WHERE "key" = %s AND "lock" < %s ORDER BY "id" LIMIT %s FOR UPDATE SKIP LOCKED) '
                'RETURNING "id", "payload"',
                [now + timedelta(seconds=Conf.RETRY), self.list_key, now, Conf.BULK],
            )
            return [(int(pk), payload) for pk, payload in cur.fetchall()]

    def _sweep_watch(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        gait: dict[str, Any] = settings.GAIT  # type: ignore[assignment]
        self._next_check = now + max(1.0, float(gait["SWEEP_SECONDS"]))
        try:
            sweep_kick()
        except Exception:  # the broker must keep delivering even if the cache is down
            log.exception("sweep watchdog failed")


def broker_row_to_task(sender: Any, task: dict[str, Any], **kwargs: Any) -> None:
    """django-q2 ``pre_execute`` (in the worker, before the task runs): an ``advance`` task
    acknowledges its own broker row, in the statement that claims the job (jobs.engine.backend), rather
    than in a commit of its own after it ran. The row id moves from the task's ``ack_id`` (which
    the cluster's monitor would delete) into the task's arguments."""
    if task.get("func") == ADVANCE_TASK and task.get("ack_id"):
        task["kwargs"] = {**(task.get("kwargs") or {}), "broker_row": int(task.pop("ack_id"))}
