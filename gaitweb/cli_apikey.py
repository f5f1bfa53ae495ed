"""`gait apikey create|list|revoke`: API keys for integrators' agents (docs/api.md).

``create`` prints the key once — it is stored only as a hash and cannot be shown again.
"""

from __future__ import annotations

from typing import Any

from gaitweb.apikeys import apikey_as_dict, apikey_create, apikey_list, apikey_revoke
from gaitweb.cli import add_json_flag, run_handler
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import EXIT_OK, NotFound


def _actor(args: Any) -> Actor:
    # the local CLI runs as the operator of this installation (docs/cli.md)
    return Actor.system(getattr(args, "actor", None) or "cli")


def _create(args: Any) -> tuple[int, dict[str, Any]]:
    user = None
    if args.user:
        from django.contrib.auth import get_user_model

        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: args.user}).first()
        if user is None:
            raise NotFound(
                reasons.USER_NOT_FOUND, f"no user named {args.user!r}", details={"user": args.user}
            )
    created = apikey_create(
        actor=_actor(args),
        identity=args.identity or "",
        scopes=args.scopes,
        name=args.name or "",
        user=user,
    )
    info = apikey_as_dict(created.api_key)
    return EXIT_OK, {
        "key": created.key,
        "api_key": info,
        "summary": f"{created.key}\n(shown once: store it now) identity={info['identity']} scopes={','.join(info['scopes'])}",
    }


def _list(args: Any) -> tuple[int, dict[str, Any]]:
    rows = [apikey_as_dict(k) for k in apikey_list(actor=_actor(args), include_revoked=args.all)]
    lines = [
        f"{r['display']:<20} {r['identity']:<24} {','.join(r['scopes']):<28} "
        f"{'revoked' if r['revoked_at'] else 'active':<8} last used {r['last_used_at'] or 'never'}  {r['name']}"
        for r in rows
    ]
    return EXIT_OK, {"api_keys": rows, "summary": "\n".join(lines) or "no API keys"}


def _revoke(args: Any) -> tuple[int, dict[str, Any]]:
    row = apikey_revoke(actor=_actor(args), prefix=args.prefix)
    return EXIT_OK, {
        "api_key": apikey_as_dict(row),
        "summary": f"revoked {row.display_prefix} ({row.identity})",
    }


def register(groups: Any) -> None:
    apikey = groups.add_parser("apikey", help="API keys for agents and integrations")
    sub = apikey.add_subparsers(dest="verb", required=True, parser_class=type(apikey))

    p = sub.add_parser("create", help="create a key (printed once)")
    p.add_argument("--identity", required=True, help="agent identity the key acts as")
    p.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: submit,control,approve,read,cross_identity,admin "
        "(cross_identity: see every identity's objects, docs/security.md)",
    )
    p.add_argument("--name", default="", help="a label for admins")
    p.add_argument("--user", help="link to a user: the key never has more scopes than they do")
    p.add_argument("--actor", help="who creates it (journal name)")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_create, args, "apikey create"))

    p = sub.add_parser("list", help="list keys (prefix only; the secret is never shown again)")
    p.add_argument(
        "--all", action="store_true", default=True, help="include revoked keys (default)"
    )
    p.add_argument("--active", dest="all", action="store_false", help="only active keys")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_list, args, "apikey list"))

    p = sub.add_parser("revoke", help="revoke a key by its prefix")
    p.add_argument("prefix", help="gw_<prefix> or the 12-digit prefix")
    p.add_argument("--actor", help="who revokes it (journal name)")
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_handler(_revoke, args, "apikey revoke"))
