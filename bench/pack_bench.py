"""Evidence pack build and verify times, and verify's peak memory on a 100 MB pack. Prints JSON.

    .venv/bin/python bench/pack_bench.py [--events 10000] [--big-mb 100] [--repeat 5]

Runs against a throwaway test database created from the configured one (DATABASE_URL, or
SQLite under GAIT_DATA_DIR) and dropped afterwards, with a signing key in a temporary
directory, so packs are signed as in production.

- build: ``pack_build`` of a job with ``--events`` journal events (render from one snapshot,
  chain check, JCS, proof records, zip, sign, store the Pack row, journal ``pack_built``);
  ``render`` is the same without the write (median of ``--repeat``).
- verify: ``pack_verify`` of that pack (median of ``--repeat``).
- big: a job whose step runs carry ~``--big-mb`` MB of incompressible logs, rendered to a file;
  a fresh child process verifies it and reports its peak RSS growth and the peak of Python
  allocations (tracemalloc) during verify. Streaming keeps both near the 1 MiB read buffers,
  far below the pack's size.

Targets (docs/packs.md): build <= 1 s and verify <= 0.5 s for 10,000 events; verify streams.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gaitweb.settings")

import django  # noqa: E402

django.setup()


def _verify_child(path: str, public_key_file: str) -> None:
    """Run in a fresh process: verify ``path`` and report time and memory."""
    import tracemalloc

    from packs.keys import public_key_parse
    from packs.services import pack_verify

    key = public_key_parse(Path(public_key_file).read_bytes(), source=public_key_file)
    # ru_maxrss survives exec on Linux (it would report the parent's peak): read this process's
    # own high-water mark from /proc, reset just before verifying.
    clear = Path("/proc/self/clear_refs")
    if clear.exists():
        clear.write_text("5")
    before_mb = _status_mb("VmRSS")
    tracemalloc.start()
    started = time.perf_counter()
    result = pack_verify(source=path, public_keys=[key], trust_registered_keys=False)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_mb = _status_mb("VmHWM")
    print(
        json.dumps(
            {
                "ok": result.ok,
                "seconds": round(seconds, 3),
                "python_alloc_peak_mb": round(peak / 2**20, 2),
                "rss_before_mb": round(before_mb, 1),
                "rss_peak_mb": round(peak_mb, 1),
                "rss_growth_mb": round(peak_mb - before_mb, 1),
            }
        )
    )


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _job_with_events(job_id: str, events: int):  # type: ignore[no-untyped-def]
    from django.db import transaction

    from jobs.journal import event_build
    from jobs.models import Job, JobEvent

    with transaction.atomic():
        job = Job.objects.create(
            job_id=job_id,
            status="running",
            status_reason_code="submitted",
            environment_fingerprint="env_bench",
        )
        rows = []
        for i in range(events):
            rows.append(
                event_build(
                    job,
                    type="checkpoint_added" if i % 10 else "step_succeeded",
                    actor="agent-bench",
                    reason_code="checkpoint_progress",
                    payload={
                        "i": i,
                        "summary": f"processed batch {i} of {events}",
                        "items": [i, i + 1, i + 2],
                    },
                )
            )
        JobEvent.objects.bulk_create(rows, batch_size=2000)
        job.save(update_fields=["revision", "last_event_hash"])
    return job


def _job_with_big_logs(job_id: str, megabytes: int) -> str:
    from django.db import transaction
    from django.utils import timezone

    from jobs.models import StepRun

    job = _job_with_events(job_id, 100)
    per_run = 16 * 1024  # the engine's default log tail cap
    runs = (
        int(megabytes * 1_000_000 / (per_run * 0.75)) + 1
    )  # base64 of random bytes deflates to ~75%
    now = timezone.now()
    with transaction.atomic():
        batch = []
        for i in range(runs):
            log = base64.b64encode(os.urandom(per_run * 3 // 4)).decode()
            batch.append(
                StepRun(
                    job=job,
                    step_index=i,
                    step_name=f"step-{i}",
                    attempt=1,
                    status="failed",
                    stdout=log,
                    started_at=now,
                    finished_at=now,
                )
            )
            if len(batch) == 500:
                StepRun.objects.bulk_create(batch)
                batch = []
        StepRun.objects.bulk_create(batch)
    return job.job_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--big-mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--verify-child", nargs=2, metavar=("PACK", "PUBKEY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.verify_child:
        _verify_child(*args.verify_child)
        return

    from django.conf import settings
    from django.db import connection

    tmp = Path(tempfile.mkdtemp(prefix="pack_bench_"))
    settings.GAIT["KEYS_DIR"] = tmp / "keys"
    os.environ.pop(settings.GAIT["SIGNING_KEY_ENV"], None)
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        from gaitweb.lib.actors import Actor
        from packs.keys import key_export_public, key_init
        from packs.services import pack_build, pack_render, pack_verify

        actor = Actor.system("bench")
        key_init(actor=actor)
        job = _job_with_events("bench-10k", args.events)

        started = time.perf_counter()
        built = pack_build(actor=actor, job_id=job.job_id)
        build_seconds = time.perf_counter() - started
        data = bytes(built.pack.data)

        renders = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            pack_render(job_id=job.job_id)
            renders.append(time.perf_counter() - started)

        verifies = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = pack_verify(source=io.BytesIO(data))
            verifies.append(time.perf_counter() - started)
            assert result.ok, result.as_dict()

        big_id = _job_with_big_logs("bench-big", args.big_mb)
        big_path = tmp / "big.zip"
        started = time.perf_counter()
        big_path.write_bytes(pack_render(job_id=big_id).data)
        big_render = time.perf_counter() - started
        pub = tmp / "pub.pem"
        pub.write_text(key_export_public(fmt="pem"))
        child = subprocess.run(
            [sys.executable, __file__, "--verify-child", str(big_path), str(pub)],
            capture_output=True,
            text=True,
            check=True,
        )
        big = json.loads(child.stdout.strip().splitlines()[-1])

        print(
            json.dumps(
                {
                    "benchmark": "pack",
                    "database": connection.vendor,
                    "python": platform.python_version(),
                    "events": args.events,
                    "pack_bytes": len(data),
                    "build_seconds": round(build_seconds, 3),
                    "render_seconds_median": round(statistics.median(renders), 3),
                    "verify_seconds_median": round(statistics.median(verifies), 3),
                    "verify_seconds_min": round(min(verifies), 3),
                    "verify_seconds_max": round(max(verifies), 3),
                    "render_seconds_min": round(min(renders), 3),
                    "load_average": os.getloadavg()[0],
                    "targets": {"build_seconds": 1.0, "verify_seconds": 0.5},
                    "build_ok": build_seconds <= 1.0,
                    "verify_ok": statistics.median(verifies) <= 0.5,
                    "big_pack": {
                        "pack_mb": round(big_path.stat().st_size / 1e6, 1),
                        "render_seconds": round(big_render, 2),
                        "verify": big,
                    },
                },
                indent=2,
            )
        )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        for path in sorted(tmp.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        tmp.rmdir()


if __name__ == "__main__":
    main()
