"""Concurrent pack builds of one job: one stored pack, one pack_built event (real threads, PostgreSQL)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from gaitweb.lib.actors import Actor
from jobs.journal import chain_verify
from jobs.models import Job, JobEvent
from packs.models import Pack
from packs.services import pack_build
from tests.packs.helpers import job_with_history

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_builds_of_one_job_store_one_pack_and_journal_it_once(
    db: None, round_: int
) -> None:
    job = job_with_history(f"race-{round_}", extra_events=200)
    barrier = threading.Barrier(4)
    results: list[Any] = [None] * 4

    def build(i: int) -> None:
        try:
            barrier.wait()
            results[i] = pack_build(actor=Actor.system(f"builder-{i}"), job_id=job.job_id)
        except Exception as exc:  # noqa: BLE001 - the assertion below shows whatever went wrong
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=build, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert all(hasattr(r, "pack") for r in results), results
    assert sum(r.created for r in results) == 1
    assert len({r.pack.pk for r in results}) == 1
    assert Pack.objects.filter(job=job).count() == 1
    assert JobEvent.objects.filter(job=job, type="pack_built").count() == 1
    assert chain_verify(Job.objects.get(pk=job.pk)).ok
