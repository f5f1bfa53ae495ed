"""Delayed delivery on django-q2's ORM broker.

The ORM broker hides a queued row until its ``lock`` time has passed (``dequeue`` takes rows
with ``lock < now``), and ``async_task(..., broker=…)`` accepts a broker instance. Writing the
row with ``lock = due time`` therefore gives delayed delivery with the broker's poll precision
(``Q_CLUSTER["poll"]``, 0.2 s) — what timers and retry backoffs need, and what django-q2's
30-second scheduler tick cannot give (docs/engine.md).

Only ``enqueue`` differs from the stock broker; the cluster keeps dequeuing with its own ORM
broker, so nothing needs configuring on the worker side.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ


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
        row = OrmQ.objects.using(Conf.ORM).create(key=self.list_key, payload=task, lock=lock)
        return int(row.pk)


class ClusterORM(ORM):
    """The ORM broker the cluster itself uses (``Q_CLUSTER["broker_class"]``): the stock one,
    plus a watchdog for the engine's sweep chain.

    The sweep re-enqueues itself as a delayed broker row. If a cluster is killed while holding
    that row (dequeued rows stay locked for ``retry`` seconds), the chain is gone, and so is
    crash recovery for every job. The pusher of every live cluster therefore checks the chain's
    heartbeat every couple of seconds and restarts it when it went quiet: one cache read per
    check, and recovery never waits for django-q2's 30-second scheduler tick.
    """

    _next_check = 0.0

    def ping(self) -> bool:  # called once when a cluster starts
        self._sweep_watch()
        return True

    def dequeue(self):  # type: ignore[no-untyped-def]
        self._sweep_watch()
        return super().dequeue()

    def _sweep_watch(self) -> None:
        import logging
        import time

        from django.conf import settings

        now = time.monotonic()
        if now < self._next_check:
            return
        gait: dict[str, Any] = settings.GAIT  # type: ignore[assignment]
        self._next_check = now + max(1.0, float(gait["SWEEP_SECONDS"]))
        try:
            from jobs.engine import sweep_kick

            sweep_kick()
        except Exception:  # the broker must keep delivering even if the cache is down
            logging.getLogger("gaitweb.engine").exception("sweep watchdog failed")
