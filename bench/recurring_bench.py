"""Recurring-job benchmark: fire lateness with a one-second cron on two real clusters.

    .venv/bin/python bench/recurring_bench.py              # 60 fires (~70 s)
    .venv/bin/python bench/recurring_bench.py --fires 20

Runs against a scratch PostgreSQL database (``GAIT_BENCH_RECURRING_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/gaitweb_bench_recurring``), dropped and re-created on every
run. Prints one JSON object:

- ``fire_lateness_ms``: slot → the fire transaction (job created, ``TemplateFire.fired_at``);
- ``start_lateness_ms``: slot → the run's job claimed by a worker (``Job.started_at``);
- ``duplicates``: runs that share a slot (must be 0), ``missed_slots``: slots folded into a
  later fire because the loop was more than a period late.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URL = os.environ.get(
    "GAIT_BENCH_RECURRING_DATABASE_URL",
    "postgres://postgres@127.0.0.1:5432/gaitweb_bench_recurring",
)
DATA_DIR = Path(tempfile.mkdtemp(prefix="gaitweb-bench-recurring-"))
os.environ["DATABASE_URL"] = URL
os.environ["GAIT_DATA_DIR"] = str(DATA_DIR)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gaitweb.settings")
os.environ.setdefault("GAIT_STEP_MODULES", "jobs.stepfns")  # ``noop``: the demo's, off by default
sys.path.insert(0, str(ROOT))


def recreate_database() -> None:
    import psycopg

    base, _, name = URL.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 1)


def stats(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p99": pct(values, 99), "max": max(values), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fires", type=int, default=60)
    parser.add_argument("--clusters", type=int, default=2)
    args = parser.parse_args()

    recreate_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)

    from gaitweb.lib.actors import Actor
    from jobs.models import Job, TemplateFire
    from jobs.recurring import recurring_bootstrap, template_create, template_disable

    env = {**os.environ, "Q_LOG_LEVEL": "ERROR", "GAIT_Q_WORKERS": "2"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(args.clusters)
    ]
    try:
        time.sleep(2)
        recurring_bootstrap()
        system = Actor.system("bench")
        spec = {"steps": [{"name": "n", "kind": "python", "with": {"function": "noop"}}]}
        t = template_create(actor=system, name="bench", spec=spec, cron="* * * * * *")
        deadline = time.monotonic() + args.fires * 2 + 30
        while TemplateFire.objects.filter(template=t).count() < args.fires:
            if time.monotonic() > deadline:
                raise SystemExit("timed out waiting for fires")
            time.sleep(0.2)
        template_disable(actor=system, template_id=t.template_id)
        time.sleep(3)  # let the last runs start
        fires = list(TemplateFire.objects.filter(template=t, status="fired").select_related("job"))
        fire_ms = [float(f.lateness_ms) for f in fires]
        start_ms = [
            (f.job.started_at - f.slot).total_seconds() * 1000
            for f in fires
            if f.job is not None and f.job.started_at is not None
        ]
        per_slot = Counter(f.slot for f in fires)
        result = {
            "schedule": "* * * * * * (every second)",
            "clusters": args.clusters,
            "fires": len(fires),
            "fire_lateness_ms": stats(fire_ms),
            "start_lateness_ms": stats(start_ms),
            "duplicates": sum(n - 1 for n in per_slot.values()),
            "missed_slots": sum(
                TemplateFire.objects.filter(template=t).values_list("missed_slots", flat=True)
            ),
            "skipped": TemplateFire.objects.filter(template=t, status="skipped").count(),
            "jobs": Job.objects.count(),
        }
        print(json.dumps(result))
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


if __name__ == "__main__":
    main()
