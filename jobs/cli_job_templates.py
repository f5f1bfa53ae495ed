"""`gait templates …` and `gait jobs create …`: job templates and recurring jobs (docs/recurring.md).

    gait jobs create "Daily brief" --spec brief.yaml --cron "@daily" --tz Europe/Berlin
    gait jobs create "Nightly brief" --template daily-brief --cron "0 2 * * *"
    gait templates list | show ID | run ID | enable ID | disable ID | fires ID | bootstrap

``jobs create NAME`` defines a job under a name: a template, recurring with ``--cron``;
``--template`` starts from an existing template's spec, identity, policy and labels;
``--run-now`` also starts one run at once. The ``jobs`` group belongs to jobs/cli_engine.py:
``register`` adds ``create`` to it when it exists (``register_jobs_verbs`` is the hook).
"""

from __future__ import annotations

import argparse
from typing import Any

from gaitweb.cli import add_json_flag, run_handler
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import EXIT_OK, InvalidInput
from jobs import recurring, selectors
from jobs.cli import _labels as parse
from jobs.cli import _spec_from_file


def _actor(args: Any) -> Actor:
    name = getattr(args, "actor", None) or "cli"
    return Actor.system(name, identity=name)


def _labels(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None

    return parse(values)


def _ok(
    operation: str, template: Any, *, fires: int = 0, **extra: Any
) -> tuple[int, dict[str, Any]]:
    snap = recurring.template_snapshot(template, fires=fires)
    when = snap["next_fire_at"] or ("disabled" if not template.enabled else "not scheduled")
    payload = {
        "ok": True,
        "operation": operation,
        "template_id": template.template_id,
        "template": snap,
        "summary": f"{template.template_id}: {template.cron or 'no cron'}, next fire {when}",
    }
    payload.update(extra)
    return EXIT_OK, payload


def _spec_file(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None

    return _spec_from_file(path)


# --- handlers ----------------------------------------------------------------------------------


def _create(args: Any) -> tuple[int, dict[str, Any]]:
    actor = _actor(args)
    fields: dict[str, Any] = {}
    if args.template:
        base = selectors.template_get(actor=_actor(args), template_id=args.template)
        fields = {
            "spec": base.spec,
            "identity": base.identity,
            "policy": base.policy,
            "labels": base.labels,
            "description": base.description,
            "continuity": base.continuity,
            "overlap": base.overlap,
            "catch_up": base.catch_up,
            "timezone_name": base.timezone,
        }
    elif not args.spec:
        raise InvalidInput(
            reasons.SPEC_OR_TEMPLATE,
            "give --spec FILE or --template ID",
            hint='gait jobs create "Daily brief" --spec brief.yaml --cron "@daily"',
        )
    if args.spec:
        fields["spec"] = _spec_file(args.spec)
    overrides = {
        "identity": args.identity,
        "policy": args.policy,
        "labels": _labels(args.label),
        "description": args.description,
        "continuity": args.continuity,
        "overlap": args.overlap,
        "catch_up": args.catch_up,
        "timezone_name": args.tz,
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    template = recurring.template_create(
        actor=actor,
        name=args.name,
        template_id=args.id,
        cron=args.cron or "",
        enabled=not args.disabled,
        **fields,
    )
    extra: dict[str, Any] = {}
    if args.run_now:
        fire = recurring.template_run_now(actor=actor, template_id=template.template_id)
        template.refresh_from_db()
        extra["run"] = recurring.fire_snapshot(fire)
    return _ok("jobs_create", template, **extra)


def _list(args: Any) -> tuple[int, dict[str, Any]]:
    enabled = {"all": None, "enabled": True, "disabled": False}[args.state]
    rows = selectors.template_list(actor=_actor(args), enabled=enabled)
    lines = [
        f"{t.template_id}\t{'on ' if t.enabled else 'off'}\t{t.cron or '-'}\t"
        f"next {recurring.template_snapshot(t)['next_fire_at'] or '-'}\truns {t.run_count}"
        for t in rows
    ]
    return EXIT_OK, {
        "ok": True,
        "operation": "templates_list",
        "templates": [recurring.template_snapshot(t) for t in rows],
        "summary": "\n".join(lines) or "no templates",
    }


def _show(args: Any) -> tuple[int, dict[str, Any]]:
    return _ok(
        "templates_show",
        selectors.template_get(actor=_actor(args), template_id=args.id),
        fires=args.fires,
    )


def _run(args: Any) -> tuple[int, dict[str, Any]]:
    fire = recurring.template_run_now(
        actor=_actor(args), template_id=args.id, job_id=args.job_id, labels=_labels(args.label)
    )
    template = selectors.template_get(actor=_actor(args), template_id=args.id)
    code, payload = _ok("templates_run", template, run=recurring.fire_snapshot(fire))
    if fire.job is not None:
        payload["job_id"] = fire.job.job_id
        payload["summary"] = f"{args.id}: started {fire.job.job_id}"
    else:
        payload["summary"] = f"{args.id}: queued behind the active run ({fire.reason_code})"
    return code, payload


def _toggle(enabled: bool) -> Any:
    def handler(args: Any) -> tuple[int, dict[str, Any]]:
        fn = recurring.template_enable if enabled else recurring.template_disable
        template = fn(actor=_actor(args), template_id=args.id)
        return _ok("templates_enable" if enabled else "templates_disable", template)

    return handler


def _fires(args: Any) -> tuple[int, dict[str, Any]]:
    template = selectors.template_get(actor=_actor(args), template_id=args.id)
    fires = [
        recurring.fire_snapshot(f)
        for f in selectors.template_fires(template=template, limit=args.limit)
    ]
    lines = [
        f"{f['slot']}\t{f['trigger']}\t{f['status']}\t{f['reason_code'] or '-'}\t"
        f"{f['job_id'] or '-'}\tlate {f['lateness_ms']} ms"
        for f in fires
    ]
    return EXIT_OK, {
        "ok": True,
        "operation": "templates_fires",
        "template_id": args.id,
        "fires": fires,
        "summary": "\n".join(lines) or "no fires yet",
    }


def _bootstrap(args: Any) -> tuple[int, dict[str, Any]]:
    result = recurring.recurring_bootstrap()
    return EXIT_OK, {
        "ok": True,
        "operation": "templates_bootstrap",
        **result,
        "summary": "recurring fire loop started",
    }


# --- parser ------------------------------------------------------------------------------------


def _schedule_flags(p: Any) -> None:
    p.add_argument("--cron", help='"@daily", "0 9 * * 1-5", or six fields with seconds last')
    p.add_argument("--tz", help="IANA timezone the cron is read in (default UTC)")
    p.add_argument("--continuity", choices=["fresh", "resume"])
    p.add_argument("--overlap", choices=["skip", "queue"], help="while the previous run is active")
    p.add_argument("--catch-up", dest="catch_up", choices=["once", "skip"], help="after downtime")


def register_jobs_verbs(jobs_sub: Any) -> None:
    """Add ``gait jobs create`` to the ``jobs`` group (idempotent)."""
    if "create" in jobs_sub.choices:
        return
    p = jobs_sub.add_parser("create", help="define a (recurring) job: a named template")
    p.add_argument("name", help='a human name, e.g. "Daily brief"')
    p.add_argument("--id", help="template id (default: the name, slugified)")
    p.add_argument("--template", help="start from this template's spec, identity, policy, labels")
    p.add_argument("--spec", help="job spec file (YAML or JSON)")
    p.add_argument("--identity", help="identity the runs are bound to")
    p.add_argument("--policy", help="managed policy name or YAML file")
    p.add_argument("--label", action="append", help="key=value (repeatable)")
    p.add_argument("--description")
    _schedule_flags(p)
    p.add_argument("--disabled", action="store_true", help="create it switched off")
    p.add_argument("--run-now", dest="run_now", action="store_true", help="also start one run now")
    p.add_argument("--actor")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_create, args, "jobs_create"))


def _subparsers_of(parser: Any) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def register(groups: Any) -> None:
    jobs = groups.choices.get("jobs")
    jobs_sub = _subparsers_of(jobs) if jobs is not None else None
    if jobs_sub is None:
        jobs = groups.add_parser("jobs", help="recurring jobs")
        jobs_sub = jobs.add_subparsers(dest="verb", required=True, parser_class=type(jobs))
    register_jobs_verbs(jobs_sub)

    group = groups.add_parser("templates", help="job templates and recurring jobs")
    sub = group.add_subparsers(dest="verb", required=True, parser_class=type(group))

    p = sub.add_parser("list", help="templates with their schedule and next fire")
    p.add_argument("--state", choices=["all", "enabled", "disabled"], default="all")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_list, args, "templates_list"))

    p = sub.add_parser("show", help="one template with its recent fires")
    p.add_argument("id")
    p.add_argument("--fires", type=int, default=10, help="how many recent fires (default 10)")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_show, args, "templates_show"))

    p = sub.add_parser("run", help="start a run now")
    p.add_argument("id")
    p.add_argument("--job-id", dest="job_id")
    p.add_argument("--label", action="append", help="key=value (repeatable)")
    p.add_argument("--actor")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_run, args, "templates_run"))

    for name, handler in (("enable", _toggle(True)), ("disable", _toggle(False))):
        p = sub.add_parser(name, help=f"{name} the schedule")
        p.add_argument("id")
        p.add_argument("--actor")
        add_json_flag(p)
        p.set_defaults(func=lambda args, h=handler, n=name: run_handler(h, args, f"templates_{n}"))

    p = sub.add_parser("fires", help="past fires: runs, skips, refusals, lateness")
    p.add_argument("id")
    p.add_argument("--limit", type=int, default=20)
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_fires, args, "templates_fires"))

    p = sub.add_parser("bootstrap", help="create the schedule and start the fire loop (idempotent)")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_bootstrap, args, "templates_bootstrap"))
