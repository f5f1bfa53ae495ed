"""Dashboard benchmark: server time and SQL queries per page with 100,000 jobs and a job with
10,000 events. Prints one JSON object.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gaitweb GAIT_DATA_DIR=/tmp/gaitweb_bench \
        .venv/bin/python bench/web_bench.py [--jobs 100000] [--events 10000] [--requests 60]

It works in its own database (``<name>_webbench``, created on first use and kept, so later runs
skip the seeding) and times each request in-process through Django's test client: URL routing,
middleware, session and auth, the view, its queries and the template — everything but the
network. Targets: p95 ≤ 150 ms for the jobs list and the job detail page, and a query count
that does not grow with the number of jobs or events.

The 100,000 list jobs are inserted in bulk without journals (the list never reads events); the
big job's 10,000 events are a real hash chain (jobs.journal.event_build), so its chain badge
verifies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gaitweb.settings")

BIG_JOB = "bench-big-journal"
SMALL_JOB = "bench-small-journal"
STATUSES = [
    "queued", "running", "waiting", "paused", "decision_needed", "blocked",
    "completed", "failed", "cancelled", "emergency_stopped",
]  # fmt: skip


def _setup_database() -> str:
    import django
    from django.conf import settings

    django.setup()
    from django.db import connection

    base = settings.DATABASES["default"]["NAME"]
    name = (
        f"{Path(str(base)).stem}_webbench" if connection.vendor == "sqlite" else f"{base}_webbench"
    )
    if connection.vendor == "sqlite":
        name = str(Path(settings.DATA_DIR) / f"{name}.sqlite3")
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = name
    import contextlib
    import io

    # migrations may print (the cache-table migration does): keep stdout for the JSON only
    with contextlib.redirect_stdout(io.StringIO()):
        connection.creation.create_test_db(
            verbosity=0, autoclobber=True, keepdb=True, serialize=False
        )
    return name


def _seed(n_jobs: int, n_events: int) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.db import connection, transaction
    from django.utils import timezone

    from gaitweb.lib.actors import Actor
    from gaitweb.lib.roles import roles_ensure
    from jobs import services
    from jobs.journal import event_build
    from jobs.models import Job, JobEvent

    roles_ensure()
    if not User.objects.filter(username="bench-admin").exists():
        User.objects.create_superuser("bench-admin", "bench@localhost", "bench-password-not-used")
    seeded = {"jobs_inserted": 0, "events_inserted": 0}
    have = Job.objects.filter(job_id__startswith="bench-list-").count()
    if have < n_jobs:
        now = timezone.now()
        spec = {
            "steps": [
                {"name": f"step-{i}", "kind": "python", "with": {"function": "noop"}}
                for i in range(5)
            ]
        }
        batch = []
        for i in range(have, n_jobs):
            status = STATUSES[i % len(STATUSES)]
            with_steps = i % 3 != 0
            batch.append(
                Job(
                    job_id=f"bench-list-{i:07d}",
                    status=status,
                    identity=f"agent.bench{i % 50}",
                    labels={"team": f"team{i % 7}", "bench": "yes"},
                    spec=spec if with_steps else {},
                    step_count=5 if with_steps else 0,
                    cursor=(i % 6) if with_steps else 0,
                    revision=1,
                    created_by="bench",
                )
            )
            if len(batch) == 5000:
                Job.objects.bulk_create(batch)
                seeded["jobs_inserted"] += len(batch)
                batch = []
        if batch:
            Job.objects.bulk_create(batch)
            seeded["jobs_inserted"] += len(batch)
        # spread creation times over 30 days (auto_now_add set them all to "now")
        with connection.cursor() as cur:
            if connection.vendor == "postgresql":
                cur.execute(
                    "UPDATE jobs_job SET created_at = %s - (random() * interval '30 days') "
                    "WHERE job_id LIKE 'bench-list-%%'",
                    [now],
                )
            else:
                cur.execute(
                    "UPDATE jobs_job SET created_at = datetime(created_at, '-' || (abs(random()) % 2592000) || ' seconds') "
                    "WHERE job_id LIKE 'bench-list-%'"
                )
    system = Actor.system("bench")
    for job_id, count in ((BIG_JOB, n_events), (SMALL_JOB, 10)):
        job = Job.objects.filter(job_id=job_id).first()
        if job is not None and job.revision >= count:
            continue
        if job is None:
            job = services.job_submit(actor=system, job_id=job_id, identity="agent.bench")
        with transaction.atomic():
            job = Job.objects.select_for_update().get(pk=job.pk)
            events = []
            while job.revision < count:
                events.append(
                    event_build(
                        job,
                        type="checkpoint_added",
                        actor="bench",
                        reason_code="checkpoint_progress",
                        payload={
                            "checkpoint_id": f"cp_{job.revision:04d}",
                            "type": "progress",
                            "summary": f"progress {job.revision}",
                            "required_action": "",
                            "reason_code": "",
                        },
                    )
                )
                if len(events) == 5000:
                    JobEvent.objects.bulk_create(events)
                    seeded["events_inserted"] += len(events)
                    events = []
            JobEvent.objects.bulk_create(events)
            seeded["events_inserted"] += len(events)
            job.save(update_fields=["revision", "last_event_hash", "updated_at"])
    if seeded["jobs_inserted"] or seeded["events_inserted"]:
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
    return seeded


def _measure(
    client: Any, url: str, n: int, *, htmx: bool = False, expect: int = 200
) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    headers = {"HX-Request": "true"} if htmx else {}
    # warm-up: first-request costs (template compilation, the stats memo) are not steady state
    first = time.perf_counter()
    response = client.get(url, headers=headers)
    first_ms = (time.perf_counter() - first) * 1000
    assert response.status_code == expect, (url, response.status_code)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(url, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == expect, (url, response.status_code)
    with CaptureQueriesContext(connection) as ctx:
        client.get(url, headers=headers)
    times.sort()
    return {
        "url": url,
        "status": expect,
        "first_ms": round(first_ms, 1),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
        "max_ms": round(times[-1], 1),
        "queries": len(ctx.captured_queries),
        "bytes": len(response.content),
    }


def _fp(client: Any, url: str, marker: str) -> str:
    import re

    html = client.get(url, headers={"HX-Request": "true"}).content.decode()
    return re.search(marker, html).group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()

    t0 = time.perf_counter()
    db_name = _setup_database()
    seeded = _seed(args.jobs, args.events)
    seed_s = time.perf_counter() - t0

    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client

    from jobs.models import Job
    from jobs.stats import job_stats

    client = Client()
    client.force_login(User.objects.get(username="bench-admin"))

    start = time.perf_counter()
    job_stats(actor=None)
    stats_ms = (time.perf_counter() - start) * 1000

    n = args.requests
    deep = Job.objects.filter(job_id__startswith="bench-list-").order_by("-created_at", "-id")[
        min(5000, args.jobs // 2)
    ]
    from jobs.views import _cursor_encode

    rows_fp = _fp(client, "/jobs/?fragment=rows&fp=x", r"fp=([0-9a-f]+)")
    big_fp = _fp(client, f"/jobs/{BIG_JOB}/?fp=x", r"\?fp=([0-9a-f]+)")
    pages = {
        "jobs_list": _measure(client, "/jobs/", n),
        "jobs_list_status_filter": _measure(client, "/jobs/?status=failed", n),
        "jobs_list_label_filter": _measure(client, "/jobs/?label=team%3Dteam3", n),
        "jobs_list_text_search": _measure(client, "/jobs/?q=bench-list-00999", n),
        "jobs_list_deep_page": _measure(client, f"/jobs/?after={_cursor_encode(deep)}", n),
        "jobs_list_poll_unchanged": _measure(
            client, f"/jobs/?fragment=rows&fp={rows_fp}", n, htmx=True, expect=204
        ),
        "jobs_list_poll_changed": _measure(client, "/jobs/?fragment=rows&fp=stale", n, htmx=True),
        "job_detail_10k_events": _measure(client, f"/jobs/{BIG_JOB}/", n),
        "job_detail_poll_unchanged": _measure(
            client, f"/jobs/{BIG_JOB}/?fp={big_fp}", n, htmx=True, expect=204
        ),
        "job_detail_small_journal": _measure(client, f"/jobs/{SMALL_JOB}/", n),
        "chain_badge_10k_events_incremental": _measure(
            client, f"/jobs/{BIG_JOB}/chain/", n, htmx=True
        ),
        "approvals_queue": _measure(client, "/approvals/", n),
    }
    from jobs.views import CHAIN_FULL_SECONDS, _chain_memo

    _chain_memo.clear()
    start = time.perf_counter()
    client.get(f"/jobs/{BIG_JOB}/chain/", headers={"HX-Request": "true"})
    chain_cold_ms = (time.perf_counter() - start) * 1000

    targets = ("jobs_list", "job_detail_10k_events")
    result = {
        "benchmark": "web_dashboard",
        "database": connection.vendor,
        "database_name": db_name,
        "jobs": Job.objects.count(),
        "big_job_events": Job.objects.get(job_id=BIG_JOB).revision,
        "requests_per_page": n,
        "seeded": seeded,
        "setup_seconds": round(seed_s, 1),
        "pages": pages,
        "job_stats_cold_ms": round(stats_ms, 1),
        "chain_badge_10k_events_cold_ms": round(chain_cold_ms, 1),
        "chain_full_rehash_every_seconds": CHAIN_FULL_SECONDS,
        "queries_constant": {
            "jobs_list_50_rows_vs_1_row": [
                pages["jobs_list"]["queries"],
                pages["jobs_list_text_search"]["queries"],
            ],
            "job_detail_small_vs_10k_events": [
                pages["job_detail_small_journal"]["queries"],
                pages["job_detail_10k_events"]["queries"],
            ],
        },
        "target_p95_ms": 150,
        "targets_met": all(pages[k]["p95_ms"] <= 150 for k in targets),
    }
    print(json.dumps(result))  # one line: bench/run_all.sh reads the last line


if __name__ == "__main__":
    main()
