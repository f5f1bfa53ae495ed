"""Durable-workflow benchmark: prints one JSON object (docs/workflows.md, "Measured").

    .venv/bin/python bench/workflow_bench.py              # 5 rounds (~2 minutes)
    .venv/bin/python bench/workflow_bench.py --rounds 1 --steps 200   # smoke run

Runs against its own scratch PostgreSQL database (``GAIT_WORKFLOW_BENCH_DATABASE_URL``, default
``gaitweb_bench_workflow`` on the server of ``DATABASE_URL``), dropped and re-created on every
run, with a real ``qcluster`` process; DBOS (the ``bench`` extra) runs next to it on the same
server in its own database (``gaitweb_bench_workflow_dbos``).

Figures:
- ``workflow_steps_per_s``: one workflow making 2,000 trivial ``ctx.step`` calls, one worker
  process, next to DBOS's one ``@DBOS.workflow`` calling 2,000 ``@DBOS.step``\\ s
  (bench/dbos_workload.py) in the same round; the order alternates per round and the ratio of
  record is the median of the per-round ratios (the server is shared: its commit rate moves).
  The default commits every call before the next starts, as DBOS commits every step;
  ``workflow_steps_per_s_group_commit`` is the same workflow registered with
  ``group_commit=True`` (idempotent calls written in batches, ``GAIT_WORKFLOW_FLUSH_SECONDS``).
- ``replay_ms``: a workflow with 2,000 recorded calls parked on a signal; the signal arrives and
  ``advance`` (in this process, as a worker runs it) claims the job, loads its records in one
  query and replays them up to the first new call: the time from the start of ``advance`` to
  that call.
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
_SERVER = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x")
if not _SERVER.startswith("postgres"):
    _SERVER = "postgres://postgres@127.0.0.1:5432/x"
URL = (
    os.environ.get("GAIT_WORKFLOW_BENCH_DATABASE_URL")
    or _SERVER.rpartition("/")[0] + "/gaitweb_bench_workflow"
)
# engine_bench's helpers read these at import: point them at this benchmark's own database
os.environ["GAIT_BENCH_DATABASE_URL"] = URL
# the workflow it times ("trivial") is the test suite's (tests/workflows.py)
os.environ.setdefault("GAIT_STEP_MODULES", "tests.stepfns,tests.workflows")
sys.path.insert(0, str(ROOT))

from bench.engine_bench import (  # noqa: E402
    DATA_DIR,
    Cluster,
    recreate_database,
    wait_for,
)
from bench.engine_bench import bench_dbos as dbos_run  # noqa: E402  (its database: URL + _dbos)


def submit(workflow: str, **input: Any) -> str:
    from gaitweb.lib.actors import Actor
    from jobs.services import job_submit

    spec = {"workflow": workflow, "input": input}
    return job_submit(actor=Actor.system("bench"), spec=spec).job_id


def status(job_id: str) -> str:
    from jobs.models import Job

    return Job.objects.filter(job_id=job_id).values_list("status", flat=True).get()


def gaitweb_run(n: int, workflow: str = "trivial") -> float:
    from jobs.models import Job

    job_id = submit(workflow, n=n)
    wait_for(lambda: status(job_id) in ("completed", "failed"), timeout=900, interval=0.25)
    job = Job.objects.get(job_id=job_id)
    assert job.status == "completed", job.status_reason_code
    return n / (job.finished_at - job.started_at).total_seconds()


def bench_steps(n: int, rounds: int) -> dict[str, Any]:
    gaitweb: list[float] = []
    group: list[float] = []
    dbos: list[float] = []
    info: dict[str, Any] = {}
    cluster = Cluster(GAIT_Q_WORKERS="1", GAIT_SLICE_SECONDS="600")
    try:
        warm = submit("trivial", n=5)
        wait_for(lambda: status(warm) == "completed", timeout=60)
        for r in range(rounds):
            if r % 2 == 0:
                gaitweb.append(gaitweb_run(n))
                group.append(gaitweb_run(n, "trivial-group-commit"))
                info = dbos_run(n)
            else:
                info = dbos_run(n)
                group.append(gaitweb_run(n, "trivial-group-commit"))
                gaitweb.append(gaitweb_run(n))
            dbos.append(float(info.get("steps_per_s", float("nan"))))
    finally:
        cluster.kill()
    out: dict[str, Any] = {
        "steps": n,
        "rounds": rounds,
        "workflow_steps_per_s": round(statistics.median(gaitweb), 1),
        "workflow_steps_per_s_group_commit": round(statistics.median(group), 1),
        "all_runs": {
            "gaitweb": [round(x, 1) for x in gaitweb],
            "gaitweb_group_commit": [round(x, 1) for x in group],
            "dbos": [round(x, 1) for x in dbos],
        },
    }
    ok = [i for i, v in enumerate(dbos) if v == v]
    if ok:
        ratios = [gaitweb[i] / dbos[i] for i in ok]
        ratios_group = [group[i] / dbos[i] for i in ok]
        out["ratio_vs_dbos_group_commit"] = round(statistics.median(ratios_group), 2)
        out["dbos_steps_per_s"] = round(statistics.median(dbos[i] for i in ok), 1)
        out["dbos_version"] = info.get("version")
        out["ratio_per_round"] = [round(x, 2) for x in ratios]
        out["ratio_vs_dbos"] = round(statistics.median(ratios), 2)
    else:
        out["dbos_error"] = info.get("error")
    return out


def bench_replay(n: int, rounds: int) -> dict[str, Any]:
    """In this process: record ``n`` calls, park on a signal, then time the resume."""
    from gaitweb.lib.actors import Actor
    from jobs import durable
    from jobs.engine.runner import advance
    from jobs.services import job_signal

    samples: list[float] = []
    for _ in range(rounds):
        job_id = submit("trivial", n=n + 1, stop_at=n)
        assert advance(job_id) == "waiting", status(job_id)
        job_signal(actor=Actor.system("bench"), job_id=job_id, name="go")
        t0 = time.monotonic()
        outcome = advance(job_id)
        stats = dict(durable.REPLAY_STATS)
        assert outcome == "completed" and stats.get("replayed") == n, (outcome, stats)
        samples.append((stats["first_new_at"] - t0) * 1000)
    return {
        "recorded_calls": n,
        "rounds": rounds,
        "replay_ms": round(statistics.median(samples), 1),
        "replay_ms_max": round(max(samples), 1),
        "all_runs": [round(x, 1) for x in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--only", default="steps,replay")
    args = parser.parse_args()
    recreate_database(URL)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    from jobs.engine.sweep import engine_bootstrap

    engine_bootstrap()
    only = set(args.only.split(","))
    out: dict[str, Any] = {"database": URL.rpartition("/")[2], "data_dir": str(DATA_DIR)}
    if "replay" in only:
        out["replay"] = bench_replay(args.steps, args.rounds)
    if "steps" in only:
        out["steps"] = bench_steps(args.steps, args.rounds)
    out["summary"] = {
        "workflow_steps_per_s": out.get("steps", {}).get("workflow_steps_per_s"),
        "dbos_steps_per_s": out.get("steps", {}).get("dbos_steps_per_s"),
        "ratio_vs_dbos": out.get("steps", {}).get("ratio_vs_dbos"),
        "workflow_steps_per_s_group_commit": out.get("steps", {}).get(
            "workflow_steps_per_s_group_commit"
        ),
        "ratio_vs_dbos_group_commit": out.get("steps", {}).get("ratio_vs_dbos_group_commit"),
        "replay_ms": out.get("replay", {}).get("replay_ms"),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
