"""Wake-ups: ask a worker to advance a job once the current transaction commits.

Lifecycle services call ``job_wake`` whenever a job becomes runnable (submit with steps, resume,
approve, signal, retry). The engine (jobs/engine.py) owns how the wake-up is delivered.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction


def job_wake(job_id: str, *, at: datetime | None = None) -> None:
    from jobs.engine import advance_enqueue

    transaction.on_commit(lambda: advance_enqueue(job_id, at=at))
