"""`gait jobs stats` and the engine's `gait job …` verbs (signal).

``register(groups)`` adds the ``jobs`` group; ``register_job_verbs(job_subparsers)`` is called by
jobs/cli.py to add verbs to the ``job`` group.
"""

from __future__ import annotations

import json
from typing import Any

from gaitweb.cli import add_json_flag, run_handler
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import EXIT_OK, InvalidInput
from gaitweb.lib.parsing import json_loads
from jobs.engine.sweep import engine_bootstrap
from jobs.selectors import job_snapshot
from jobs.services import job_signal
from jobs.stats import job_stats


def _stats(args: Any) -> tuple[int, dict[str, Any]]:
    stats = job_stats(actor=None)
    summary = (
        f"created {stats['created']}, started {stats['started']}, succeeded {stats['succeeded']}, "
        f"failed {stats['failed']}, cancelled {stats['cancelled']}, running {stats['running']}, "
        f"queue depth {stats['queue_depth']['jobs_runnable']}"
    )
    steps = stats["steps"]
    summary += (
        f"\nsteps: started {steps['started']}, running {steps['running']}, succeeded "
        f"{steps['succeeded']}, failed {steps['failed']}, retried {steps['retried']}, "
        f"in doubt {steps['in_doubt']}"
    )
    gate = stats["gate"]
    if gate["warning"]:  # first, so a glance at the output cannot miss it
        summary = f"{gate['warning']}\n{summary}"
    if gate["ungated_active_jobs"]:
        summary += f"\nungated: {gate['ungated_active_jobs']} unfinished job(s) bound to no policy"
    return EXIT_OK, {"ok": True, "operation": "stats", "stats": stats, "summary": summary}


def _signal(args: Any) -> tuple[int, dict[str, Any]]:
    payload: Any = None
    if args.payload is not None:
        try:
            payload = json_loads(args.payload, what="--payload")
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                reasons.INVALID_SIGNAL_PAYLOAD,
                f"--payload is not JSON: {exc}",
                details={"field": "payload"},
            ) from None
    name = args.actor or "cli"
    job = job_signal(actor=Actor.system(name), job_id=args.id, name=args.name, payload=payload)
    return EXIT_OK, {
        "ok": True,
        "operation": "signal",
        "job_id": job.job_id,
        "job": job_snapshot(job),
        "signal": args.name,
        "summary": f"{job.job_id}: signal {args.name} delivered ({job.status})",
    }


def _bootstrap(args: Any) -> tuple[int, dict[str, Any]]:
    result = engine_bootstrap()
    return EXIT_OK, {
        "ok": True,
        "operation": "engine_bootstrap",
        **result,
        "summary": "sweep schedule ready",
    }


def register_job_verbs(sub: Any) -> None:
    p = sub.add_parser(
        "signal", help="deliver a named signal (JSON payload) to a job's wait_event step"
    )
    p.add_argument("--id", required=True, help="job id")
    p.add_argument("--name", required=True, help="signal name")
    p.add_argument("--payload", help="JSON payload (default null)")
    p.add_argument("--actor")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_signal, args, "signal"))


def register(groups: Any) -> None:
    jobs = groups.add_parser("jobs", help="engine-wide views: stats")
    sub = jobs.add_subparsers(dest="verb", required=True, parser_class=type(jobs))
    p = sub.add_parser("stats", help="job counters, queue depth, running jobs, recent reason codes")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_stats, args, "stats"))
    p = sub.add_parser(
        "bootstrap", help="create the sweep schedule and start the sweep (idempotent)"
    )
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_bootstrap, args, "engine_bootstrap"))
