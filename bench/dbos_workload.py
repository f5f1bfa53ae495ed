"""DBOS side of the engine benchmark (bench/engine_bench.py), in its own process (DBOS is a
process-wide singleton), with DBOS_SYSTEM_DATABASE_URL pointing at a scratch database on the
same PostgreSQL server.

    dbos_workload.py N              one @DBOS.workflow calling N @DBOS.step()s:
                                    prints {"steps_per_s", "run_s", "version"}
    dbos_workload.py e2e3 SAMPLES   SAMPLES 3-step workflows, one after another, each started
                                    through a DBOS queue polled every POLL seconds (gaitweb's
                                    broker poll): prints {"e2e_ms": [...], "version", "poll_s"}

The end-to-end time of a queued workflow runs from just before ``Queue.enqueue`` to the
time DBOS records the workflow as completed (``completed_at``) (the same clock as gaitweb's
``finished_at`` on this machine).
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib.metadata import version

from dbos import DBOS

POLL = float(os.environ.get("DBOS_QUEUE_POLL_SECONDS", "0.2"))


@DBOS.step()
def noop_step(i: int) -> None:
    return None


@DBOS.workflow()
def many_steps(n: int) -> int:
    for i in range(n):
        noop_step(i)
    return n


def launch() -> None:
    DBOS(
        config={
            "name": "gaitweb-bench",
            "system_database_url": os.environ["DBOS_SYSTEM_DATABASE_URL"],
            "run_admin_server": False,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()


def steps(n: int) -> dict[str, object]:
    many_steps(10)  # warm up: schema, connection pool
    t0 = time.perf_counter()
    many_steps(n)
    elapsed = time.perf_counter() - t0
    return {"steps_per_s": round(n / elapsed, 1), "run_s": round(elapsed, 3)}


def e2e3(samples: int) -> dict[str, object]:
    queue = DBOS.register_queue("gaitweb_bench", polling_interval_sec=POLL)
    out: list[float] = []
    for i in range(samples + 2):  # the first two warm the queue and the pool up
        t0 = time.time()
        handle = queue.enqueue(many_steps, 3)
        handle.get_result(polling_interval_sec=0.005)
        status = DBOS.get_workflow_status(handle.get_workflow_id())
        assert status is not None and status.status == "SUCCESS"
        if i >= 2:
            done_ms = status.completed_at or status.updated_at or 0
            out.append(round(float(done_ms) - t0 * 1000, 2))
    return {"e2e_ms": out, "poll_s": POLL}


def main() -> None:
    launch()
    if sys.argv[1] == "e2e3":
        result = e2e3(int(sys.argv[2]))
    else:
        result = steps(int(sys.argv[1]))
    DBOS.destroy()
    print(json.dumps({**result, "version": version("dbos")}))


if __name__ == "__main__":
    main()
