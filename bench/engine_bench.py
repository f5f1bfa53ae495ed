"""Engine benchmark: prints one JSON object (see docs/engine.md, "Measured").

    .venv/bin/python bench/engine_bench.py            # everything (~3 minutes)
    .venv/bin/python bench/engine_bench.py --only steps,wake --quick

Runs against a scratch PostgreSQL database (``GAIT_BENCH_DATABASE_URL``, default
``gaitweb_bench_engine`` on the server of ``DATABASE_URL``), dropped and re-created on every run, with
real ``qcluster`` processes. DBOS (the ``bench`` extra) runs the same 2,000-step workload on the
same server in its own database.

Figures:
- ``steps_per_s``: one job of 2,000 trivial python steps, one worker process. ``idempotent``
  steps are checkpointed once (one statement per step, DBOS's step semantics); the default
  non-idempotent steps also commit a ``started`` record before running (two per step).
- ``commit_rate_per_s``: single-row INSERT commits per second on one connection: the ceiling for
  one durable checkpoint per step. ``checkpoint_shape_rate_per_s``: one statement shaped like a
  step's checkpoint (job head updated, a step-run and an event row inserted) on copies of
  gaitweb's tables and indexes: the server's ceiling for gaitweb's write, before any Python.
- ``e2e_3_steps_ms``: a trivial 3-step job, submit → completed, one worker, next to a 3-step DBOS
  workflow started through a DBOS queue on the same server.
- ``per_short_job``: statements and write commits of a one-step job, phase by phase (submit,
  dequeue, task, acknowledge), next to a raw django-q2 task.
- ``wake_latency_ms``: the ``resumed`` event written by approval_decide(approve) → the next step
  starts (timestamp written by it); also from the call and from its return (after its commit).
- ``stop_latency_ms``: job_stop → the running ``sleep 60`` command's process is gone.
- ``recovery_s``: kill -9 of the cluster running a job → the job runs steps on another cluster.
- ``jobs_per_s``: a backlog of 1,000 one-step jobs drained by two clusters, next to a backlog of
  1,000 raw django-q2 no-op tasks drained by the same two clusters, four rounds in alternating
  order; ``ratio_vs_raw`` is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Its own scratch database on the server of DATABASE_URL (bench/run_all.sh points that at
# PostgreSQL): it is dropped and re-created on every run, so it is never another bench's.
_SERVER = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x")
if not _SERVER.startswith("postgres"):
    _SERVER = "postgres://postgres@127.0.0.1:5432/x"
BENCH_URL = (
    os.environ.get("GAIT_BENCH_DATABASE_URL")
    or _SERVER.rpartition("/")[0] + "/gaitweb_bench_engine"
)
DATA_DIR = Path(tempfile.mkdtemp(prefix="gaitweb-bench-"))
os.environ["DATABASE_URL"] = BENCH_URL
os.environ["GAIT_DATA_DIR"] = str(DATA_DIR)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gaitweb.settings")
# the python steps it times (``noop``, ``record``) are the test suite's, and the stop latency is
# a shell command: both are off in a deployment's defaults (docs/security.md)
os.environ.setdefault("GAIT_STEP_MODULES", "tests.stepfns")
os.environ.setdefault("GAIT_COMMAND_STEPS", "true")
os.environ.setdefault("GAIT_COMMAND_SHELL", "true")
sys.path.insert(0, str(ROOT))


def _server_url(url: str, dbname: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{dbname}"


def recreate_database(url: str) -> None:
    import psycopg

    name = url.rpartition("/")[2]
    with psycopg.connect(_server_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "p50": round(pct(ms, 50), 1),
        "p99": round(pct(ms, 99), 1),
        "max": round(max(ms), 1),
        "n": len(ms),
    }


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(interval)


class Cluster:
    def __init__(self, **env: str) -> None:
        full = dict(os.environ)
        full.update({"Q_LOG_LEVEL": "ERROR", **env})
        self.log = open(DATA_DIR / f"qcluster-{time.monotonic_ns()}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env=full,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def owns(self, pid: int) -> bool:
        try:
            return os.getpgid(pid) == self.proc.pid
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()


def warm_up(n_clusters_expected: int = 1) -> None:
    """Wait until the clusters are up: a tiny job completes."""
    done = submit([{"name": "warm", "kind": "python", "with": {"function": "noop"}}])
    wait_for(lambda: status(done) == "completed", timeout=60)


def submit(steps: list[dict[str, Any]]) -> str:
    from gaitweb.lib.actors import Actor
    from jobs.services import job_submit

    return job_submit(actor=Actor.system("bench"), spec={"steps": steps}).job_id


def cancel_unfinished() -> None:
    """Leave no runnable job behind for the next section (they would compete for workers)."""
    from gaitweb.lib.actors import Actor
    from jobs.models import Job
    from jobs.services import job_cancel

    for job_id in Job.objects.exclude(status__in=["completed", "cancelled", "failed"]).values_list(
        "job_id", flat=True
    ):
        job_cancel(actor=Actor.system("bench"), job_id=job_id, reason="benchmark section over")


def status(job_id: str) -> str:
    from jobs.models import Job

    return Job.objects.filter(job_id=job_id).values_list("status", flat=True).get()


# --- steps_per_s ---------------------------------------------------------------------------


# The three workloads of a round, in every order in turn: the first run of a round follows the
# previous round's last, and the server's commit rate drifts, so no workload may always run in
# the same place (the figures by position in ``steps_detail.by_position`` show any such bias).
ORDERS = [
    ("idempotent", "non_idempotent", "dbos"),
    ("non_idempotent", "dbos", "idempotent"),
    ("dbos", "idempotent", "non_idempotent"),
    ("dbos", "non_idempotent", "idempotent"),
    ("non_idempotent", "idempotent", "dbos"),
    ("idempotent", "dbos", "non_idempotent"),
]


def bench_steps(n: int, rounds: int) -> dict[str, Any]:
    """gaitweb (idempotent and non-idempotent steps) and DBOS in the same round, ``rounds``
    times, on the same server, the order rotating from round to round. The server is shared
    (other databases, other users: its commit rate moves by 2-3x from minute to minute), so the
    ratios of record are the medians of the per-round ratios."""
    from jobs.models import Job

    def gaitweb_run(idempotent: bool) -> float:
        steps = [
            {
                "name": f"s{i:05d}",
                "kind": "python",
                "with": {"function": "noop"},
                "idempotent": idempotent,
            }
            for i in range(n)
        ]
        job_id = submit(steps)
        wait_for(lambda: status(job_id) == "completed", timeout=900, interval=0.25)
        job = Job.objects.get(job_id=job_id)
        return n / (job.finished_at - job.started_at).total_seconds()

    runs: dict[str, list[float]] = {
        "idempotent": [],
        "non_idempotent": [],
        "dbos": [],
        "commit_rate": [],
        "checkpoint_shape_rate": [],
    }
    by_position: dict[str, list[list[float]]] = {k: [[], [], []] for k in ORDERS[0]}
    orders: list[str] = []
    dbos_info: dict[str, Any] = {}
    cluster = Cluster(GAIT_Q_WORKERS="1", GAIT_SLICE_SECONDS="600")
    try:
        warm_up()
        gaitweb_run(True)  # warm the worker up (imports, prepared plans) outside the rounds
        for r in range(rounds):
            runs["commit_rate"].append(bench_commit_rate())
            runs["checkpoint_shape_rate"].append(bench_checkpoint_shape_rate())
            order = ORDERS[r % len(ORDERS)]
            orders.append(",".join(order))
            for pos, workload in enumerate(order):
                if workload == "dbos":
                    dbos_info = bench_dbos(n)
                    value = float(dbos_info.get("steps_per_s", float("nan")))
                else:
                    value = gaitweb_run(workload == "idempotent")
                runs[workload].append(value)
                by_position[workload][pos].append(round(value, 1))
    finally:
        cluster.kill()
    ok = [i for i, v in enumerate(runs["dbos"]) if v == v]
    med = {k: round(statistics.median(v), 1) for k, v in runs.items() if v and k != "dbos"}
    out: dict[str, Any] = {
        "steps": n,
        "rounds": rounds,
        "orders": orders,
        "gaitweb_idempotent_steps_per_s": med["idempotent"],
        "gaitweb_non_idempotent_steps_per_s": med["non_idempotent"],
        "commit_rate_per_s": med["commit_rate"],
        "checkpoint_shape_rate_per_s": med["checkpoint_shape_rate"],
        "all_runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "by_position": by_position,
        "share_of_commit_rate": {
            k: round(
                statistics.median(runs[k][i] / runs["commit_rate"][i] for i in range(rounds)), 2
            )
            for k in ("idempotent", "non_idempotent")
        },
        "share_of_checkpoint_shape_rate": {
            k: round(
                statistics.median(
                    runs[k][i] / runs["checkpoint_shape_rate"][i] for i in range(rounds)
                ),
                2,
            )
            for k in ("idempotent", "non_idempotent")
        },
        "idempotent_vs_non_idempotent_per_round": [
            round(a / b, 2) for a, b in zip(runs["idempotent"], runs["non_idempotent"], strict=True)
        ],
    }
    if ok:
        ratios = [runs["idempotent"][i] / runs["dbos"][i] for i in ok]
        ratios_ni = [runs["non_idempotent"][i] / runs["dbos"][i] for i in ok]
        out["dbos_steps_per_s"] = round(statistics.median(runs["dbos"][i] for i in ok), 1)
        out["dbos_version"] = dbos_info.get("version")
        out["ratio_per_round"] = [round(x, 2) for x in ratios]
        out["ratio_per_round_non_idempotent"] = [round(x, 2) for x in ratios_ni]
        out["ratio_vs_dbos"] = round(statistics.median(ratios), 2)
        out["ratio_vs_dbos_non_idempotent"] = round(statistics.median(ratios_ni), 2)
    else:
        out["dbos_error"] = dbos_info.get("error")
    return out


def _dbos_url() -> str:
    """DBOS's scratch database, next to (and named after) the bench's own."""
    name = BENCH_URL.rpartition("/")[2] + "_dbos"
    return _server_url(BENCH_URL, name).replace("postgres://", "postgresql://", 1)


def _dbos(*args: str) -> dict[str, Any]:
    url = _dbos_url()
    recreate_database(url)
    code = (ROOT / "bench" / "dbos_workload.py").as_posix()
    try:
        proc = subprocess.run(
            [sys.executable, code, *args],
            env={**os.environ, "DBOS_SYSTEM_DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-800:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_dbos(n: int) -> dict[str, Any]:
    return _dbos(str(n))


def bench_commit_rate(n: int = 3000) -> float:
    import psycopg

    with psycopg.connect(BENCH_URL, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_commit_probe")
        conn.execute("CREATE TABLE bench_commit_probe (id bigserial PRIMARY KEY, v text NOT NULL)")
        t0 = time.perf_counter()
        for _ in range(n):
            conn.execute("INSERT INTO bench_commit_probe (v) VALUES (%s)", ("x",))
        elapsed = time.perf_counter() - t0
        conn.execute("DROP TABLE bench_commit_probe")
    return round(n / elapsed, 1)


def bench_checkpoint_shape_rate(n: int = 3000) -> float:
    """Commits per second of one statement shaped like a step's checkpoint (the job row's
    chain head updated, a step-run row and an event row inserted), on copies of gaitweb's own
    tables with their indexes: what the server allows one durable checkpoint per step, before
    any Python runs."""
    import psycopg

    with psycopg.connect(BENCH_URL, autocommit=True) as conn:
        for probe, table in (("job", "jobs_job"), ("run", "jobs_steprun"), ("ev", "jobs_jobevent")):
            conn.execute(f"DROP TABLE IF EXISTS bench_probe_{probe}")
            conn.execute(f"CREATE TABLE bench_probe_{probe} (LIKE {table} INCLUDING ALL)")
        conn.execute("INSERT INTO bench_probe_job SELECT * FROM jobs_job ORDER BY id LIMIT 1")
        (job_pk,) = conn.execute("SELECT id FROM bench_probe_job").fetchone() or (None,)
        sql = (
            "WITH j AS (UPDATE bench_probe_job SET revision = revision + 1, last_event_hash = %s, "
            "updated_at = now() WHERE id = %s RETURNING id, revision, status), "
            "s AS (INSERT INTO bench_probe_run (job_id, step_index, step_name, attempt, status, "
            "idempotency_key, input, output, stdout, stderr, worker, started_at, finished_at) "
            "SELECT j.id, j.revision, 's', 1, 'succeeded', 'k', '{}', %s::jsonb, '', '', 'w', "
            "now(), now() FROM j), "
            "e AS (INSERT INTO bench_probe_ev (job_id, revision, type, actor, reason_code, payload, "
            "created_at, prev_hash, hash) SELECT j.id, j.revision, 'step_succeeded', 'engine', "
            "'step_succeeded', %s::jsonb, now(), %s, %s FROM j) SELECT status FROM j"
        )
        head = "0" * 64
        payload = json.dumps({"step": "s", "step_index": 1, "attempt": 1, "duration_ms": 0})
        t0 = time.perf_counter()
        for _ in range(n):
            conn.execute(sql, (head, job_pk, "1", payload, head, head), prepare=True)
        elapsed = time.perf_counter() - t0
        for probe in ("job", "run", "ev"):
            conn.execute(f"DROP TABLE bench_probe_{probe}")
    return round(n / elapsed, 1)


# --- latencies -----------------------------------------------------------------------------


def _record_step(name: str, path: Path) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "python",
        "with": {"function": "record", "args": {"path": str(path)}},
    }


def bench_wake(samples: int) -> dict[str, Any]:
    from approvals.models import ApprovalRequest
    from approvals.services import approval_decide
    from gaitweb.lib.actors import Actor

    log = DATA_DIR / "wake.log"
    steps: list[dict[str, Any]] = []
    for i in range(samples):
        steps += [
            {"name": f"ok{i}", "kind": "approval", "with": {"summary": f"go {i}?"}},
            _record_step(f"after{i}", log),
        ]
    from jobs.models import JobEvent

    cluster = Cluster()
    latencies, with_service, after_commit = [], [], []
    try:
        warm_up()
        job_id = submit(steps)
        reviewer = Actor.system("bench-reviewer")
        for i in range(samples):
            request = wait_for(
                lambda: ApprovalRequest.objects.filter(
                    job__job_id=job_id, status="pending", job__status="decision_needed"
                ).first(),
                timeout=30,
            )
            time.sleep(0.05)
            t0 = time.time()
            approval_decide(
                actor=reviewer, request_id=request.request_id, decision="approve", reason="bench"
            )
            t1 = time.time()  # the decision (and the wake-up) committed just before this
            line = wait_for(lambda i=i: _line_for(log, f"after{i}"), timeout=30, interval=0.002)
            resumed = (
                JobEvent.objects.filter(job__job_id=job_id, type="resumed")
                .order_by("-revision")
                .first()
            )
            # from the resume being written (its commit enqueues the wake-up) to the next step
            # running; and from the reviewer's call, including approval_decide's own work
            latencies.append(float(line[4]) - resumed.created_at.timestamp())
            with_service.append(float(line[4]) - t0)
            after_commit.append(float(line[4]) - t1)
        wait_for(lambda: status(job_id) == "completed", timeout=30)
    finally:
        cluster.kill()
        cancel_unfinished()
    return {
        **summary_ms(latencies),
        "from_approve_call": summary_ms(with_service),
        "from_approve_return": summary_ms(after_commit),
    }


def _first_line_after(path: Path, not_pid: str, after: float) -> list[str] | None:
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[3] != not_pid and float(parts[4]) > after:
            return parts
    return None


def _line_for(path: Path, step: str) -> list[str] | None:
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[1] == step:
            return parts
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def bench_stop(samples: int) -> dict[str, Any]:
    from gaitweb.lib.actors import Actor
    from jobs.services import job_stop

    cluster = Cluster()
    latencies = []
    try:
        warm_up()
        for i in range(samples):
            pidfile = DATA_DIR / f"stop-{i}.pid"
            job_id = submit(
                [
                    {
                        "name": "long",
                        "kind": "command",
                        "with": {"shell": True, "command": f"echo $$ > {pidfile}; exec sleep 60"},
                    }
                ]
            )
            wait_for(lambda p=pidfile: p.exists() and p.read_text().strip(), timeout=30)
            pid = int(pidfile.read_text())
            time.sleep(0.1 + (i % 5) * 0.05)  # land anywhere in the heartbeat's poll period
            t0 = time.perf_counter()
            job_stop(actor=Actor.system("bench-operator"), job_id=job_id, reason="bench")
            wait_for(lambda p=pid: not _alive(p), timeout=10, interval=0.001)
            latencies.append(time.perf_counter() - t0)
    finally:
        cluster.kill()
        cancel_unfinished()
    return summary_ms(latencies)


def bench_recovery(samples: int) -> dict[str, Any]:
    from django.conf import settings

    from jobs.models import Job

    results = []
    for i in range(samples):
        log = DATA_DIR / f"recovery-{i}.log"
        a, b = Cluster(), Cluster()
        try:
            warm_up()
            job_id = submit(
                [
                    {
                        **_record_step(f"s{k}", log),
                        "idempotent": True,
                        "with": {"function": "record", "args": {"path": str(log), "seconds": 0.2}},
                    }
                    for k in range(400)
                ]
            )
            owner = wait_for(
                lambda j=job_id: (
                    Job.objects.filter(job_id=j).values_list("lease_owner", flat=True).get()
                ),
                timeout=30,
            )
            time.sleep(0.5)
            pid = int(owner.rsplit(":", 1)[1])
            victim, survivor = (a, b) if a.owns(pid) else (b, a)
            t0 = time.time()
            victim.kill()
            line = wait_for(
                lambda p=str(pid), t=t0, f=log: _first_line_after(f, p, t),
                timeout=120,
                interval=0.01,
            )
            results.append(float(line[4]) - t0)
            cancel_unfinished()
            survivor.kill()
        finally:
            for c in (a, b):
                if c.proc.poll() is None:
                    c.kill()
    return {
        "p50": round(statistics.median(results), 2),
        "max": round(max(results), 2),
        "n": len(results),
        "lease_seconds": settings.GAIT["LEASE_SECONDS"],
        "sweep_seconds": settings.GAIT["SWEEP_SECONDS"],
    }


# --- a 3-step job end to end -------------------------------------------------------------------


def bench_e2e3(samples: int, rounds: int) -> dict[str, Any]:
    """A trivial 3-step job, submit → completed, one job at a time on one worker; next to it a
    3-step DBOS workflow started through a DBOS queue on the same server (bench/dbos_workload.py),
    the order alternating from round to round. Times run from just before the submit (the
    enqueue) to the completion time the engine (DBOS) records."""
    from jobs.models import Job

    def gaitweb(idempotent: bool) -> list[float]:
        steps = [
            {
                "name": f"s{k}",
                "kind": "python",
                "with": {"function": "noop"},
                "idempotent": idempotent,
            }
            for k in range(3)
        ]
        out = []
        for _ in range(samples):
            t0 = time.time()
            job_id = submit(steps)
            wait_for(lambda j=job_id: status(j) == "completed", timeout=30, interval=0.003)
            finished = Job.objects.filter(job_id=job_id).values_list("finished_at", flat=True).get()
            out.append(finished.timestamp() - t0)
        return out

    got: dict[str, list[float]] = {"idempotent": [], "non_idempotent": [], "dbos": []}
    medians: dict[str, list[float]] = {k: [] for k in got}
    dbos_info: dict[str, Any] = {}
    cluster = Cluster(GAIT_Q_WORKERS="1")
    try:
        warm_up()
        gaitweb(True)
        for r in range(rounds):
            order = ["gaitweb", "dbos"] if r % 2 == 0 else ["dbos", "gaitweb"]
            for part in order:
                if part == "dbos":
                    dbos_info = _dbos("e2e3", str(samples))
                    values = [ms / 1000 for ms in dbos_info.get("e2e_ms", [])]
                    got["dbos"] += values
                    if values:
                        medians["dbos"].append(statistics.median(values))
                else:
                    for idem in (True, False) if r % 2 == 0 else (False, True):
                        key = "idempotent" if idem else "non_idempotent"
                        values = gaitweb(idem)
                        got[key] += values
                        medians[key].append(statistics.median(values))
    finally:
        cluster.kill()
        cancel_unfinished()
    out: dict[str, Any] = {
        "gaitweb": {
            **summary_ms(got["idempotent"]),
            "p90": round(pct([v * 1000 for v in got["idempotent"]], 90), 1),
        },
        "gaitweb_non_idempotent": {
            **summary_ms(got["non_idempotent"]),
            "p90": round(pct([v * 1000 for v in got["non_idempotent"]], 90), 1),
        },
        "round_medians_ms": {k: [round(v * 1000, 1) for v in vs] for k, vs in medians.items()},
    }
    if got["dbos"]:
        out["dbos_queue"] = {
            **summary_ms(got["dbos"]),
            "p90": round(pct([v * 1000 for v in got["dbos"]], 90), 1),
            "queue_poll_s": dbos_info.get("poll_s"),
            "version": dbos_info.get("version"),
        }
    else:
        out["dbos_error"] = dbos_info.get("error")
    return out


# --- commits per one-step job ------------------------------------------------------------------


class _SqlCount:
    """Counts what one connection sends: statements, write transactions (an autocommit write, or
    an atomic block that wrote) and read-only autocommit round trips."""

    WRITES = ("INSERT", "UPDATE", "DELETE")

    def __init__(self) -> None:
        self.statements = 0
        self.write_commits = 0
        self.reads = 0
        self.block_wrote = False
        self.notifies = 0

    def is_write(self, sql: str) -> bool:
        head = sql.lstrip().split(None, 1)[0].upper()
        if head in self.WRITES:
            return True
        if head == "WITH":
            upper = sql.upper()
            return any(f"{w} " in upper for w in self.WRITES)
        return False

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        from django.db import connection

        self.statements += 1
        write = self.is_write(sql)
        if "pg_notify" in sql or sql.lstrip().upper().startswith("NOTIFY"):
            self.notifies += 1
        if connection.in_atomic_block:
            self.block_wrote = self.block_wrote or write
        elif write:
            self.write_commits += 1
        else:
            self.reads += 1
        return execute(sql, params, many, context)

    def committed(self) -> None:
        if self.block_wrote:
            self.write_commits += 1
        self.block_wrote = False

    def snapshot(self) -> dict[str, int]:
        return {
            "statements": self.statements,
            "write_commits": self.write_commits,
            "read_round_trips": self.reads,
        }


def bench_commits(n: int = 20) -> dict[str, Any]:
    """What one short job costs the database, phase by phase, counted on the connection that
    does the work: the submit (with its enqueue), the cluster broker's dequeue, the task
    (claim, step, checkpoint-and-complete) and the acknowledgement; next to a raw django-q2 task
    through the same broker. Runs in this process on the cluster's own code paths (the broker
    class of Q_CLUSTER, the task function, django-q2's acknowledge), one job at a time."""
    from django.db import connection
    from django_q.brokers import get_broker
    from django_q.models import OrmQ
    from django_q.signals import pre_execute
    from django_q.signing import SignedPackage
    from django_q.tasks import async_task

    import jobs.engine.sweep as engine
    from jobs.enqueue import DelayedORM

    spec = [{"name": "only", "kind": "python", "with": {"function": "noop"}}]
    spec_idem = [{**spec[0], "idempotent": True}]
    OrmQ.objects.all().delete()
    broker = get_broker()
    # no sweep chain here: its rows would be dequeued in place of the job's
    broker._next_check = float("inf")  # type: ignore[attr-defined]
    counter = _SqlCount()
    real_commit = connection.commit

    def commit() -> None:
        real_commit()
        counter.committed()

    connection.commit = commit  # type: ignore[method-assign]
    phases: dict[str, Counter[str]] = {}

    def phase(kind: str, name: str, fn: Any) -> Any:
        before = counter.snapshot()
        value = fn()
        after = counter.snapshot()
        bucket = phases.setdefault(kind, Counter())
        for k, v in after.items():
            bucket[f"{name}.{k}"] += v - before[k]
            bucket[f"total.{k}"] += v - before[k]
        return value

    def one(kind: str, enqueue: Any) -> None:
        phase(kind, "submit", enqueue)
        tasks = phase(kind, "dequeue", broker.dequeue)
        assert tasks and len(tasks) == 1, tasks
        ack_id, payload = tasks[0]
        task = SignedPackage.loads(payload)
        module, _, fname = task["func"].rpartition(".")
        fn = getattr(__import__(module, fromlist=[fname]), fname)
        engine._sweep_checked_at = time.monotonic() + 3600  # type: ignore[attr-defined]
        # as django-q2's worker and monitor do: pre_execute, the task, then the monitor's
        # acknowledgement if the task still carries its ack_id
        task["ack_id"] = ack_id
        pre_execute.send(sender="django_q", func=fn, task=task)
        phase(kind, "task", lambda: fn(*task["args"], **task["kwargs"]))
        if task.get("ack_id"):
            phase(kind, "acknowledge", lambda: broker.acknowledge(task["ack_id"]))

    try:
        with connection.execute_wrapper(counter):
            for _ in range(n):
                one("job", lambda: submit(spec))
                one("job_idempotent", lambda: submit(spec_idem))
                one(
                    "raw_task",
                    lambda: async_task(
                        "jobs.tasks.noop", q_options={"broker": DelayedORM(), "save": False}
                    ),
                )
    finally:
        connection.commit = real_commit  # type: ignore[method-assign]
    return {
        kind: {k: round(v / n, 2) for k, v in sorted(c.items())} for kind, c in phases.items()
    } | {"jobs": n}


# --- throughput ----------------------------------------------------------------------------


def _max_id(model: Any) -> int:
    from django.db.models import Max

    return int(model.objects.aggregate(m=Max("id"))["m"] or 0)


def _raw_left(lo: int, hi: int, committed: Any) -> int:
    """Tasks of one raw enqueue (broker ids in ``(lo, hi]``) not yet run and acknowledged: rows
    still due (``lock`` before the commit) or taken by a pusher and not yet deleted by the
    monitor's acknowledgement (a taken row's ``lock`` moves ``retry`` ahead, an hour). The
    engine's sweep chain keeps two or three rows of its own in the broker, due a few seconds
    after they were written: neither condition counts them."""
    from datetime import timedelta

    from django.db.models import Q
    from django_q.models import OrmQ

    taken = committed + timedelta(seconds=600)
    return (
        OrmQ.objects.filter(id__gt=lo, id__lte=hi)
        .filter(Q(lock__lte=committed) | Q(lock__gt=taken))
        .count()
    )


def _jobs_left(lo: int, hi: int) -> int:
    from jobs.models import Job

    return Job.objects.filter(id__gt=lo, id__lte=hi).exclude(status="completed").count()


def bench_jobs(n: int, rounds: int) -> dict[str, Any]:
    """``n`` one-step jobs and ``n`` raw django-q2 no-op tasks (enqueued with the same options as
    the engine's) through the same two clusters, ``rounds`` times, the order alternating from
    round to round. Each workload is enqueued in one transaction (the jobs by ``job_submit``,
    the tasks by ``async_task``), so both reach the clusters as one backlog at its commit; the
    clock runs from that commit to the last job completed, or the last task run and
    acknowledged: what the clusters drain, not how fast one client submits (``submit_per_s``;
    bench/api_bench.py for the API). ``ratio_vs_raw`` is the median of the per-round ratios."""
    from django.db import transaction
    from django.utils import timezone
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from jobs.enqueue import DelayedORM
    from jobs.models import Job

    spec = [{"name": "only", "kind": "python", "with": {"function": "noop"}, "idempotent": True}]
    runs: dict[str, list[float]] = {"jobs": [], "raw": [], "submit": [], "enqueue": []}
    a, b = Cluster(), Cluster()
    try:
        warm_up()
        time.sleep(1.0)

        def jobs_run() -> None:
            t = time.perf_counter()
            lo = _max_id(Job)
            with transaction.atomic():
                for _ in range(n):
                    submit(spec)
                hi = _max_id(Job)
            assert hi - lo == n  # no other client submits meanwhile
            t0 = time.perf_counter()
            runs["submit"].append(n / (t0 - t))
            wait_for(lambda: _jobs_left(lo, hi) == 0, timeout=900, interval=0.02)
            runs["jobs"].append(n / (time.perf_counter() - t0))

        def raw_run() -> None:
            t = time.perf_counter()
            lo = _max_id(OrmQ)
            with transaction.atomic():
                for _ in range(n):
                    async_task("jobs.tasks.noop", q_options={"broker": DelayedORM(), "save": False})
                hi = _max_id(OrmQ)
            t0 = time.perf_counter()
            committed = timezone.now()
            runs["enqueue"].append(n / (t0 - t))
            wait_for(lambda: _raw_left(lo, hi, committed) == 0, timeout=900, interval=0.02)
            runs["raw"].append(n / (time.perf_counter() - t0))

        for r in range(rounds):
            for run in (jobs_run, raw_run) if r % 2 == 0 else (raw_run, jobs_run):
                run()
                time.sleep(0.5)
    finally:
        a.kill()
        b.kill()
        cancel_unfinished()
    ratios = [j / w for j, w in zip(runs["jobs"], runs["raw"], strict=True)]
    return {
        "jobs": n,
        "rounds": rounds,
        "jobs_per_s": round(statistics.median(runs["jobs"]), 1),
        "raw_django_q2_noop_tasks_per_s": round(statistics.median(runs["raw"]), 1),
        "ratio_vs_raw": round(statistics.median(ratios), 2),
        "per_round": {
            "jobs_per_s": [round(v, 1) for v in runs["jobs"]],
            "raw_per_s": [round(v, 1) for v in runs["raw"]],
            "ratio": [round(v, 2) for v in ratios],
        },
        "submit_per_s": round(statistics.median(runs["submit"]), 1),
        "raw_enqueue_per_s": round(statistics.median(runs["enqueue"]), 1),
        "clusters": 2,
        "workers_per_cluster": int(os.environ.get("GAIT_Q_WORKERS", "2")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="steps,e2e3,wake,stop,commits,recovery,jobs")
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    quick = args.quick

    recreate_database(BENCH_URL)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)

    n_steps = 2000
    result: dict[str, Any] = {"database": BENCH_URL.rpartition("@")[2], "cpus": os.cpu_count()}
    if "steps" in only:
        steps = bench_steps(n_steps, rounds=1 if quick else 5)
        result["steps_per_s"] = {
            "gaitweb": steps["gaitweb_idempotent_steps_per_s"],
            "gaitweb_non_idempotent": steps["gaitweb_non_idempotent_steps_per_s"],
            "dbos": steps.get("dbos_steps_per_s"),
            "ratio": steps.get("ratio_vs_dbos"),
            "ratio_non_idempotent": steps.get("ratio_vs_dbos_non_idempotent"),
        }
        result["commit_rate_per_s"] = steps["commit_rate_per_s"]
        result["steps_detail"] = steps
    if "e2e3" in only:
        result["e2e_3_steps_ms"] = bench_e2e3(10 if quick else 30, rounds=1 if quick else 4)
    if "commits" in only:
        result["per_short_job"] = bench_commits(5 if quick else 20)
    if "wake" in only:
        result["wake_latency_ms"] = bench_wake(10 if quick else 40)
    if "stop" in only:
        result["stop_latency_ms"] = bench_stop(5 if quick else 25)
    if "recovery" in only:
        result["recovery_s"] = bench_recovery(1 if quick else 3)
    if "jobs" in only:
        result["throughput"] = bench_jobs(200 if quick else 1000, rounds=1 if quick else 4)
        result["jobs_per_s"] = result["throughput"]["jobs_per_s"]
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
