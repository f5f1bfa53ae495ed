"""`gait mcp`: serve gaitweb's MCP tools on stdio (gaitweb/mcp_server.py).

stdout carries the protocol, so this verb prints nothing there: a refusal to start (no or a bad
API key) goes to stderr, with the CLI's exit codes.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from gaitweb.cli import error_payload
from gaitweb.lib.errors import EXIT_OK, GaitError
from gaitweb.mcp_server import mcp_actor, serve_stdio

API_KEY_ENV = "GAIT_MCP_API_KEY"


def _serve(args: Any) -> int:
    try:
        actor = mcp_actor(
            api_key=args.api_key or os.environ.get(API_KEY_ENV, ""),
            identity=args.identity or "",
            scopes=args.scopes or "",
        )
    except GaitError as exc:
        sys.stderr.write(json.dumps(error_payload("mcp", exc), default=str) + "\n")
        return exc.exit_code
    serve_stdio(actor)
    return EXIT_OK


def register(groups: Any) -> None:
    p = groups.add_parser(
        "mcp",
        help="serve gaitweb's tools to an agent over MCP (stdio)",
        description="Acts as an API key (--api-key or GAIT_MCP_API_KEY) or a local identity "
        "(--identity, with --scopes). Configure your agent to run: "
        "python manage.py gait mcp --api-key gw_…",
    )
    p.add_argument("--api-key", dest="api_key", help=f"API key (default: ${API_KEY_ENV})")
    p.add_argument("--identity", help="act as this identity (local operator use)")
    p.add_argument(
        "--scopes",
        help="with --identity: comma-separated scopes (default read,submit,control)",
    )
    p.add_argument("--transport", choices=["stdio"], default="stdio")
    p.set_defaults(func=_serve)
