"""REST API benchmark (docs/api.md): the production server (gunicorn, 2 worker processes) on
PostgreSQL, driven over real HTTP. Prints one JSON object.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gaitweb GAIT_DATA_DIR=/tmp/gaitweb_bench \\
        .venv/bin/python bench/api_bench.py [--submits 3000] [--concurrency 16] [--threads 8] \\
        [--jobs 100000] [--events 1000000] [--requests 200]

Phases:
1. ``submit``: ``POST /api/v1/jobs`` (agent-driven jobs, no steps) from ``--concurrency``
   keep-alive clients spread over 2 load processes. Target ≥ 300 submits/s.
2. ``status``: ``GET /api/v1/jobs/{id}`` for the jobs just submitted, same concurrency.
   Target p99 ≤ 100 ms.
3. ``large``: the database is topped up to ``--jobs`` jobs and ``--events`` events with bulk
   SQL (``INSERT … SELECT generate_series``; journals are filler rows, not valid chains — list
   and detail never verify them), then single-client latency of the jobs list (first page,
   a status filter, a label filter, 20 pages deep by cursor), job detail and a job's events page.
   Target p95 ≤ 150 ms.

Everything runs in its own database ``<name>_apibench`` (created, migrated and kept: a second
run skips the seeding). Gunicorn runs gthread workers (``--threads`` per process); the API key
throttle is raised for the run. The load generator shares the machine with the server and
PostgreSQL, so figures are a floor, and ``cpu_count`` and the load average are reported.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _log(msg: str) -> None:
    print(f"[api_bench] {msg}", file=sys.stderr, flush=True)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return round(ordered[k], 2)


def _summary(latencies_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": _pct(latencies_ms, 50),
        "p95_ms": _pct(latencies_ms, 95),
        "p99_ms": _pct(latencies_ms, 99),
        "max_ms": round(max(latencies_ms), 2) if latencies_ms else float("nan"),
        "mean_ms": round(statistics.fmean(latencies_ms), 2) if latencies_ms else float("nan"),
    }


# --- database ----------------------------------------------------------------------------------


def bench_database_url() -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gaitweb")
    if not base.startswith("postgres"):
        raise SystemExit("api_bench needs PostgreSQL (DATABASE_URL=postgres://…)")
    server, _, name = base.rpartition("/")
    name = name.split("?")[0]
    target = name if name.endswith("_apibench") else f"{name}_apibench"
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,)).fetchone():
            conn.execute(f'CREATE DATABASE "{target}"')
    return f"{server}/{target}"


def _env(db_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=db_url,
        DJANGO_SETTINGS_MODULE="gaitweb.settings",
        GAIT_API_RATE_APIKEY="10000000/min",
        LOG_LEVEL="ERROR",
        GAIT_LOG_LEVEL="ERROR",
    )
    env.update(extra)
    return env


def _django(db_url: str) -> None:
    os.environ.update(_env(db_url))
    import django

    django.setup()


def _api_key(
    db_url: str, identity: str = "bench-agent", scopes: str = "submit,read,control"
) -> str:
    _django(db_url)
    from gaitweb.apikeys import apikey_create
    from gaitweb.lib.actors import Actor

    return apikey_create(
        actor=Actor.system("bench"), identity=identity, scopes=scopes, name="api_bench"
    ).key


# --- server --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db_url: str, threads: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [
        sys.executable, "-m", "gunicorn", "gaitweb.wsgi",
        "--bind", f"127.0.0.1:{port}",
        "--workers", "2",
        *(["--worker-class", "gthread", "--threads", str(threads)] if threads > 1 else ["--worker-class", "sync"]),
        "--log-level", "warning",
        "--backlog", "2048",
    ]  # fmt: skip
    log = open(Path(os.environ.get("GAIT_DATA_DIR", "/tmp")) / "api_bench_gunicorn.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(db_url), stdout=log, stderr=log, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code in (200, 503):
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("gunicorn exited; see api_bench_gunicorn.log")
        time.sleep(0.2)
    raise SystemExit("gunicorn did not answer within 30 s")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


# --- CPU accounting (same machine: /proc) -------------------------------------------------------


def _proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _pg_backend_pids(db_url: str) -> list[int]:
    import psycopg

    name = db_url.rsplit("/", 1)[1]
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return [r[0] for r in rows]


class CpuMeter:
    """CPU seconds used by the gunicorn workers and by PostgreSQL backends of the bench
    database during a phase: what one request costs, whatever else runs on the machine."""

    def __init__(self, server_pid: int, db_url: str) -> None:
        self.server_pid, self.db_url = server_pid, db_url

    def sample(self) -> dict[int, float]:
        pids = [self.server_pid, *_children(self.server_pid), *_pg_backend_pids(self.db_url)]
        return {pid: _proc_cpu_s(pid) for pid in pids}

    @staticmethod
    def per_request_ms(
        before: dict[int, float], after: dict[int, float], requests: int, server: set[int]
    ) -> dict[str, float]:
        web = sum(after[p] - before.get(p, 0.0) for p in after if p in server)
        db = sum(after[p] - before.get(p, 0.0) for p in after if p not in server)
        return {
            "server_cpu_ms_per_request": round(web * 1000 / max(1, requests), 3),
            "postgres_cpu_ms_per_request": round(db * 1000 / max(1, requests), 3),
        }


# --- load ------------------------------------------------------------------------------------------


def _worker(args: tuple[str, str, str, list[str], int]) -> tuple[list[float], int, list[str]]:
    """One load process: ``threads`` keep-alive connections working through ``items``.
    Plain http.client: the load generator shares the CPUs with the server, so it must be cheap."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    url, key, phase, items, threads = args
    host = urlsplit(url)
    latencies: list[float] = []
    errors = 0
    created: list[str] = []
    lock = threading.Lock()
    queue = list(items)

    def run() -> None:
        nonlocal errors
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        while True:
            with lock:
                if not queue:
                    break
                item = queue.pop()
            t0 = time.perf_counter()
            try:
                if phase == "submit":
                    body = json.dumps({"job_id": item, "labels": {"bench": "api"}})
                    conn.request("POST", "/api/v1/jobs", body=body, headers=headers)
                    expected = 201
                else:
                    conn.request("GET", f"/api/v1/jobs/{item}", headers=headers)
                    expected = 200
                response = conn.getresponse()
                response.read()
                ok = response.status == expected
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
                ok = False
            dt = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(dt)
                if ok:
                    created.append(item)
                else:
                    errors += 1
        conn.close()

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies, errors, created


def load(
    url: str, key: str, phase: str, items: list[str], concurrency: int, processes: int = 2
) -> dict[str, Any]:
    per = max(1, concurrency // processes)
    chunks = [items[i::processes] for i in range(processes)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes) as pool:
        # warm-up outside the measured window: connections, imports, first queries
        pool.map(_worker, [(url, key, "status", ["warm-up"] * 3, 1) for _ in chunks], chunksize=1)
        t0 = time.perf_counter()
        results = pool.map(_worker, [(url, key, phase, c, per) for c in chunks], chunksize=1)
        wall = time.perf_counter() - t0
    latencies = [x for r in results for x in r[0]]
    errors = sum(r[1] for r in results)
    done = [x for r in results for x in r[2]]
    return {
        "requests": len(latencies),
        "errors": errors,
        "wall_s": round(wall, 3),
        "per_second": round(len(done) / wall, 1),
        **_summary(latencies),
        "_ids": done,
    }


# --- large database ---------------------------------------------------------------------------------


_JOBS_SQL = """
INSERT INTO jobs_job (job_id, status, stop_reason, status_reason_code, identity, policy_digest,
    policy_ref, environment_fingerprint, spec, cursor, step_count, revision, last_event_hash,
    checkpoint_count, lease_owner, stopped_by, created_by, labels, outputs, created_at, updated_at)
SELECT 'bulk-' || %(run)s || '-' || g,
       (ARRAY['queued','running','waiting','paused','decision_needed','blocked','completed','failed','cancelled','emergency_stopped'])[1 + g %% 10],
       '', 'submitted', 'agent-' || (g %% 50), '', '', 'env_bench', '{}'::jsonb, 0, 0, 10, repeat('a', 64),
       0, '', '', 'bench', jsonb_build_object('team', 'team-' || (g %% 20)), '{}'::jsonb,
       now() - (g || ' seconds')::interval, now()
FROM generate_series(1, %(n)s) AS g
"""

# EVENTS_PER_JOB events on each job that has none yet (revisions 1..N: unique per job)
_EVENTS_SQL = """
INSERT INTO jobs_jobevent (job_id, revision, type, actor, reason_code, payload, created_at, prev_hash, hash)
SELECT j.id, r, CASE WHEN r = 1 THEN 'submitted' ELSE 'checkpoint_added' END, 'bench',
       CASE WHEN r = 1 THEN 'submitted' ELSE 'checkpoint_progress' END,
       jsonb_build_object('summary', 'step ' || r), j.created_at + (r || ' seconds')::interval,
       repeat('0', 64), md5(j.id::text || '-' || r) || md5(r::text || '-' || j.id)
FROM (SELECT id, created_at FROM jobs_job j0
      WHERE NOT EXISTS (SELECT 1 FROM jobs_jobevent e WHERE e.job_id = j0.id)) AS j
CROSS JOIN generate_series(1, %(per)s) AS r
LIMIT %(missing)s
"""
EVENTS_PER_JOB = 10


def seed_large(db_url: str, n_jobs: int, n_events: int, budget_s: float) -> dict[str, Any]:
    """Top the bench database up to n_jobs jobs and n_events events with set-based SQL
    (journals are filler rows, not valid chains: list, detail and events pages never verify)."""
    import psycopg

    t0 = time.perf_counter()
    out = {"jobs_inserted": 0, "events_inserted": 0}
    with psycopg.connect(db_url, autocommit=True) as conn:

        def count(table: str) -> int:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

        def add_jobs(n: int) -> None:
            conn.execute(_JOBS_SQL, {"run": uuid.uuid4().hex[:6], "n": n})
            out["jobs_inserted"] += n

        if count("jobs_job") < n_jobs:
            add_jobs(n_jobs - count("jobs_job"))
        for _ in range(3):
            missing = n_events - count("jobs_jobevent")
            if missing <= 0:
                break
            cur = conn.execute(_EVENTS_SQL, {"per": EVENTS_PER_JOB, "missing": missing})
            out["events_inserted"] += cur.rowcount
            if cur.rowcount < missing:  # every job has a journal: add jobs to hold the rest
                add_jobs(-(-(missing - cur.rowcount) // EVENTS_PER_JOB))
        conn.execute("ANALYZE jobs_job")
        conn.execute("ANALYZE jobs_jobevent")
        out["jobs_total"] = count("jobs_job")
        out["events_total"] = count("jobs_jobevent")
    out["seed_s"] = round(time.perf_counter() - t0, 1)
    if out["seed_s"] > budget_s:
        _log(f"seeding took {out['seed_s']} s (budget {budget_s} s)")
    return out


def latency(url: str, key: str, paths: list[str], repeat: int) -> dict[str, Any]:
    import httpx

    times: list[float] = []
    statuses: set[int] = set()
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        for path in paths[:3]:
            client.get(path)  # warm-up
        for i in range(repeat):
            path = paths[i % len(paths)]
            t0 = time.perf_counter()
            r = client.get(path)
            times.append((time.perf_counter() - t0) * 1000)
            statuses.add(r.status_code)
    return {"requests": repeat, "statuses": sorted(statuses), **_summary(times)}


def deep_pages(url: str, key: str, pages: int) -> list[str]:
    """Cursor URLs 1..pages deep into the unfiltered list (the client follows ``next``)."""
    import httpx

    out = []
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        path = "/api/v1/jobs?page_size=50"
        for _ in range(pages):
            nxt = client.get(path).json()["next"]
            if not nxt:
                break
            parts = urlsplit(nxt)
            path = f"{parts.path}?{parts.query}"
            out.append(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submits", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--threads",
        type=int,
        default=4,
        help="gthread threads per gunicorn worker (1: sync workers)",
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--requests", type=int, default=200, help="requests per large-database endpoint"
    )
    parser.add_argument("--seed-budget", type=float, default=300.0)
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()

    db_url = bench_database_url()
    _log(f"database {db_url.rsplit('/', 1)[-1]}: migrating")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=_env(db_url),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    key = _api_key(db_url)
    # the large database's jobs belong to identities agent-0 … agent-49: an operator's view
    # (cross_identity) reads them all, one agent's key reads its own 2 %
    ops_key = _api_key(db_url, "bench-ops", "read,cross_identity")
    agent_key = _api_key(db_url, "agent-7", "read")
    proc, url = start_server(db_url, args.threads)
    result: dict[str, Any] = {
        "server": {
            "workers": 2,
            "worker_class": "gthread" if args.threads > 1 else "sync",
            "threads": args.threads,
        },
        "cpu_count": os.cpu_count(),
        # where the throttle counts: REDIS_URL's Redis, else one upsert per request in PostgreSQL
        "throttle_store": "redis" if os.environ.get("REDIS_URL") else "database",
        "load_avg_before": os.getloadavg()[0],
        "targets": {"submits_per_s": 300, "status_p99_ms": 100, "list_detail_p95_ms": 150},
    }
    try:
        run = uuid.uuid4().hex[:8]
        ids = [f"bench-{run}-{i}" for i in range(args.submits)]
        meter = CpuMeter(proc.pid, db_url)
        server_pids = {proc.pid, *_children(proc.pid)}
        _log(f"submit: {args.submits} jobs, concurrency {args.concurrency}")
        before = meter.sample()
        submit = load(url, key, "submit", ids, args.concurrency)
        submit.update(
            CpuMeter.per_request_ms(before, meter.sample(), submit["requests"], server_pids)
        )
        done = submit.pop("_ids")
        result["submit"] = submit
        _log(f"status: {len(done)} GETs")
        before = meter.sample()
        status = load(url, key, "status", done, args.concurrency)
        status.update(
            CpuMeter.per_request_ms(before, meter.sample(), status["requests"], server_pids)
        )
        status.pop("_ids")
        result["status"] = status
        # latency without queueing behind our own load: one client, one request at a time
        result["status_serial"] = latency(
            url, key, [f"/api/v1/jobs/{j}" for j in done[:300]], min(300, len(done))
        )
        cost = submit["server_cpu_ms_per_request"] + submit["postgres_cpu_ms_per_request"]
        result["submit_capacity_estimate_per_s"] = (
            round((os.cpu_count() or 1) * 1000 / cost, 1) if cost else None
        )
        if not args.skip_large:
            _log(f"large: topping up to {args.jobs} jobs / {args.events} events")
            result["large_seed"] = seed_large(db_url, args.jobs, args.events, args.seed_budget)
            import psycopg

            with psycopg.connect(db_url) as conn:
                sample = [r[0] for r in conn.execute(
                    "SELECT j.job_id FROM jobs_job j WHERE EXISTS (SELECT 1 FROM jobs_jobevent e WHERE e.job_id = j.id) "
                    "ORDER BY random() LIMIT 50"
                ).fetchall()]  # fmt: skip
            deep = deep_pages(url, ops_key, 20)
            result["large"] = {
                "list_first_page": latency(
                    url, ops_key, ["/api/v1/jobs?page_size=50"], args.requests
                ),
                "list_one_identitys_jobs": latency(
                    url, agent_key, ["/api/v1/jobs?page_size=50"], args.requests
                ),
                "list_status_filter": latency(
                    url,
                    ops_key,
                    [
                        "/api/v1/jobs?status=failed&page_size=50",
                        "/api/v1/jobs?status=waiting,paused&page_size=50",
                    ],
                    args.requests,
                ),
                "list_label_filter": latency(
                    url, ops_key, ["/api/v1/jobs?label=team=team-7&page_size=50"], args.requests
                ),
                "list_deep_cursor_pages": latency(
                    url, ops_key, deep or ["/api/v1/jobs"], args.requests
                ),
                "detail": latency(
                    url, ops_key, [f"/api/v1/jobs/{j}" for j in sample], args.requests
                ),
                "events_page": latency(
                    url,
                    ops_key,
                    [f"/api/v1/jobs/{j}/events?page_size=50" for j in sample],
                    args.requests,
                ),
            }
        result["load_avg_after"] = os.getloadavg()[0]
        large = result.get("large", {})
        result["verdict"] = {
            "submits_per_s_ok": result["submit"]["per_second"] >= 300
            and result["submit"]["errors"] == 0,
            "status_p99_ok": result["status"]["p99_ms"] <= 100 and result["status"]["errors"] == 0,
            "status_serial_p99_ok": result["status_serial"]["p99_ms"] <= 100,
            "list_detail_p95_ok": all(v["p95_ms"] <= 150 for v in large.values())
            if large
            else None,
        }
    finally:
        stop_server(proc)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
