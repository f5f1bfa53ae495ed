"""`python manage.py gait …`: the Gait-compatible command surface.

Verbs live with their apps (jobs/cli.py, approvals/cli.py, packs/cli.py); this command only
builds the parser from their ``register`` functions and exits with the verb's exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from django.core.management.base import BaseCommand

from gaitweb.cli import error_payload
from gaitweb.lib import reasons
from gaitweb.lib.errors import EXIT_INVALID_INPUT, InvalidInput

CLI_MODULES = [
    "jobs.cli",
    "jobs.cli_engine",
    "jobs.cli_job_templates",
    "approvals.cli",
    "packs.cli",
    "gaitweb.cli_apikey",
    "gaitweb.cli_mcp",
]


class _Parser(argparse.ArgumentParser):
    wants_json = False  # set by main(): argument errors are reported as JSON too

    def error(self, message: str) -> None:  # argparse's exit 2 means "verification failed" here
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        if _Parser.wants_json:
            refusal = InvalidInput(reasons.INVALID_ARGUMENTS, message, hint=f"{self.prog} --help")
            sys.stdout.write(json.dumps(error_payload(None, refusal)) + "\n")
        sys.exit(EXIT_INVALID_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gait", description="gaitweb command line (Gait-compatible)")
    groups = parser.add_subparsers(dest="group", required=True, parser_class=_Parser)
    for name in CLI_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(groups)
    return parser


def main(argv: list[str]) -> int:
    """Parse ``argv`` (without the ``gait`` prefix), run the verb, return its exit code.
    Tests call this directly and read stdout."""
    _Parser.wants_json = "--json" in argv
    args = build_parser().parse_args(argv)
    return int(args.func(args))


class Command(BaseCommand):
    help = "gaitweb CLI: gait job|jobs|pack|keys|gate|policy|apikey …"

    def create_parser(
        self, prog_name: str, subcommand: str, **kwargs: Any
    ) -> argparse.ArgumentParser:
        return build_parser()

    def run_from_argv(self, argv: list[str]) -> None:
        from django.db import connections

        try:
            code = main(argv[2:])
        finally:
            connections.close_all()
        sys.stdout.flush()
        sys.exit(code)

    def handle(
        self, *args: Any, **options: Any
    ) -> None:  # pragma: no cover - run_from_argv handles it
        raise NotImplementedError
