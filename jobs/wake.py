"""Wake-ups: how a job that became runnable, or was stopped, reaches a worker (docs/engine.md).

Lifecycle services call ``jobs.enqueue.advance_enqueue`` whenever a job becomes runnable (submit
with steps, resume, approve, signal, retry): it writes the job's broker row in the caller's own
transaction (the ORM broker lives in the same database), so the row commits, or rolls back, with
the change that made the job runnable, and costs no commit of its own.

On PostgreSQL the same statement sends a ``NOTIFY`` (delivered at commit, dropped on rollback):
the clusters' pushers wait on ``LISTEN`` instead of sleeping out their poll interval, and a
worker running a step listens for stops and cancels (``job_preempt_notify``) so it kills the
step at once. Nothing depends on a notification arriving: the pushers still poll every
``Q_CLUSTER["poll"]`` seconds, the heartbeat still reads the job's status every
``STOP_POLL_SECONDS``, and the sweep re-enqueues whatever was missed. SQLite has no
notifications and keeps the poll. ``GAIT_PG_NOTIFY=false`` turns them off (a connection pooler
in transaction mode cannot hold a ``LISTEN``).
"""

from __future__ import annotations

import bisect
import logging
import time
from typing import Any

from django.conf import settings
from django.db import connections

log = logging.getLogger("gaitweb.engine")

# broker rows were written (payload: the row's due time as epoch seconds, "" for now)
WAKE_CHANNEL = "gaitweb_wake"
# a job was stopped or cancelled (payload: its job_id)
PREEMPT_CHANNEL = "gaitweb_preempt"
_DUE_HINTS_MAX = 1024
# set in django-q2 worker processes (jobs.apps): only they listen for stops, so no other process
# (a test run, a management command advancing a job in-process) holds a LISTEN connection open
_in_worker = False


def worker_spawned(sender: Any = None, **kwargs: Any) -> None:
    """django-q2 ``post_spawn``: this process is a cluster's worker."""
    global _in_worker
    _in_worker = True


def listens_for_stops() -> bool:
    return _in_worker and notify_enabled()


def notify_enabled(alias: str = "default") -> bool:
    gait: dict[str, Any] = settings.GAIT  # type: ignore[assignment]
    return bool(gait.get("PG_NOTIFY", True)) and connections[alias].vendor == "postgresql"


def job_preempt_notify(job_id: str) -> None:
    """Tell the worker running ``job_id`` (if any) that it was stopped or cancelled, when the
    current transaction commits. The worker still polls the status if this is lost."""
    if not notify_enabled():
        return
    with connections["default"].cursor() as cur:
        cur.execute("SELECT pg_notify(%s, %s)", [PREEMPT_CHANNEL, job_id])


class Listener:
    """A dedicated autocommit psycopg connection that LISTENs on ``channels``.

    ``wait(timeout)`` returns the payloads that arrived, waiting at most ``timeout`` seconds for
    the first one; it never raises: a broken connection is dropped, the wait sleeps its timeout
    out (the caller's poll), and the next call reconnects. Owned by one thread."""

    def __init__(self, channels: tuple[str, ...], alias: str = "default") -> None:
        self.channels = channels
        self.alias = alias
        self.conn: Any = None
        self.retry_at = 0.0
        self.dues: list[float] = []  # due times (epoch) of delayed broker rows we heard about

    def _connect(self) -> Any:
        if self.conn is not None and not self.conn.closed:
            return self.conn
        if time.monotonic() < self.retry_at:
            return None
        import psycopg

        params = dict(connections[self.alias].get_connection_params())
        for key in ("cursor_factory", "context", "prepare_threshold", "server_side_binding"):
            params.pop(key, None)
        params["application_name"] = "gaitweb-listen"
        try:
            conn = psycopg.connect(**params, autocommit=True)
            for channel in self.channels:
                conn.execute(f'LISTEN "{channel}"')
        except Exception:
            log.warning("cannot LISTEN on %s; polling", ",".join(self.channels), exc_info=True)
            self.retry_at = time.monotonic() + 5.0
            return None
        self.conn = conn
        return conn

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn = None

    def next_due_in(self, now: float) -> float | None:
        """Seconds until the earliest delayed row we were told about that is still to come.
        Call it after looking for ready rows: a due time that has passed was looked for then
        (a row that was not ready yet is found by the next poll), so it is dropped — keeping it
        would turn the wait into a busy loop."""
        while self.dues and self.dues[0] <= now:
            self.dues.pop(0)
        return (self.dues[0] - now) if self.dues else None

    def wait(self, timeout: float) -> list[tuple[str, str]]:
        """(channel, payload) of the notifications that arrived within ``timeout`` seconds."""
        conn = self._connect()
        if conn is None:
            time.sleep(timeout)
            return []
        got: list[tuple[str, str]] = []
        try:
            for n in conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                got.append((n.channel, n.payload))
            if got:
                for n in conn.notifies(timeout=0.0):
                    got.append((n.channel, n.payload))
        except Exception:
            log.warning("LISTEN connection lost; polling until it is back", exc_info=True)
            self.close()
            return got
        for channel, payload in got:
            if channel == WAKE_CHANNEL and payload:
                try:
                    due = float(payload)
                except ValueError:
                    continue
                if len(self.dues) < _DUE_HINTS_MAX:
                    bisect.insort(self.dues, due)
        return got
