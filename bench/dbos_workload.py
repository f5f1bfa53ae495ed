"""DBOS side of the steps benchmark: one @DBOS.workflow calling N @DBOS.step()s.

Run by bench/engine_bench.py in its own process (DBOS is a process-wide singleton) with
DBOS_SYSTEM_DATABASE_URL pointing at a scratch database on the same PostgreSQL server.
Prints ``{"steps_per_s", "run_s", "version"}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib.metadata import version

from dbos import DBOS


@DBOS.step()
def noop_step(i: int) -> None:
    return None


@DBOS.workflow()
def many_steps(n: int) -> int:
    for i in range(n):
        noop_step(i)
    return n


def main() -> None:
    n = int(sys.argv[1])
    DBOS(
        config={
            "name": "gaitweb-bench",
            "system_database_url": os.environ["DBOS_SYSTEM_DATABASE_URL"],
            "run_admin_server": False,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    many_steps(10)  # warm up: schema, connection pool
    t0 = time.perf_counter()
    many_steps(n)
    elapsed = time.perf_counter() - t0
    DBOS.destroy()
    print(
        json.dumps(
            {
                "steps_per_s": round(n / elapsed, 1),
                "run_s": round(elapsed, 3),
                "version": version("dbos"),
            }
        )
    )


if __name__ == "__main__":
    main()
