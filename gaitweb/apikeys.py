"""API key services: create (the key is returned once), list, revoke, authenticate.

A key is ``gw_<prefix>_<secret>``: ``prefix`` is 12 hex digits stored in clear and unique (the
row is found by it), ``secret`` is 256 random bits (urlsafe base64). The row stores
``sha256(key)``; authentication compares it with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.canonical import iso_utc
from gaitweb.lib.errors import InvalidInput, NotFound
from gaitweb.models import API_KEY_PREFIX_LEN, ApiKey

KEY_PREFIX = "gw_"
IDENTITY_MAX = 256
NAME_MAX = 128
# last_used_at is a hint for admins, not an audit log: write it at most once a minute per key
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class CreatedKey:
    api_key: ApiKey
    key: str  # the only time the full key exists outside the caller's hands


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def scopes_parse(value: Any) -> list[str]:
    """``"submit,read"`` or ``["submit", "read"]`` -> sorted known scopes; unknown -> error."""
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",") if s.strip()]
    elif isinstance(value, Iterable):
        items = [str(s).strip() for s in value]
    else:
        items = []
    unknown = sorted(set(items) - Scope.ALL)
    if unknown or not items:
        raise InvalidInput(
            reasons.INVALID_SCOPES,
            f"scopes must be a non-empty list of {', '.join(sorted(Scope.ALL))}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else ""),
            details={"field": "scopes", "allowed": sorted(Scope.ALL)},
        )
    return sorted(set(items))


def apikey_create(
    *,
    actor: Actor,
    identity: str,
    scopes: Any,
    name: str = "",
    user: Any = None,
) -> CreatedKey:
    """Create a key bound to ``identity`` with ``scopes``. Only admins create keys."""
    actor.require(Scope.ADMIN)
    identity = (identity or "").strip()
    if not identity and user is not None:
        identity = user.get_username()
    if not identity or len(identity) > IDENTITY_MAX:
        raise InvalidInput(
            reasons.INVALID_IDENTITY,
            f"an identity of 1-{IDENTITY_MAX} characters is required",
            details={"field": "identity"},
        )
    name = (name or "").strip()
    if len(name) > NAME_MAX:
        raise InvalidInput(reasons.NAME_TOO_LONG, f"name is longer than {NAME_MAX} characters")
    parsed = scopes_parse(scopes)
    for _ in range(5):
        prefix = secrets.token_hex(API_KEY_PREFIX_LEN // 2)
        raw = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                row = ApiKey.objects.create(
                    name=name,
                    prefix=prefix,
                    secret_hash=_hash(raw),
                    identity=identity,
                    scopes=parsed,
                    user=user,
                    created_by=actor.name[:256],
                )
        except IntegrityError:  # a 48-bit prefix collision: draw again
            continue
        return CreatedKey(api_key=row, key=raw)
    raise RuntimeError("could not draw a unique API key prefix")


def apikey_list(*, actor: Actor, include_revoked: bool = True) -> list[ApiKey]:
    actor.require(Scope.ADMIN)
    qs = ApiKey.objects.select_related("user")
    if not include_revoked:
        qs = qs.filter(revoked_at__isnull=True)
    return list(qs)


def apikey_revoke(*, actor: Actor, prefix: str) -> ApiKey:
    """Revoke by prefix (``gw_abc…`` or the bare 12 hex digits). Revoking twice is a no-op."""
    actor.require(Scope.ADMIN)
    bare = (prefix or "").strip().removeprefix(KEY_PREFIX).split("_", 1)[0]
    row = ApiKey.objects.filter(prefix=bare).first()
    if row is None:
        raise NotFound(
            reasons.APIKEY_NOT_FOUND, f"no API key with prefix {bare!r}", details={"prefix": bare}
        )
    if row.revoked_at is None:
        ApiKey.objects.filter(pk=row.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_by=actor.name[:256]
        )
        row.refresh_from_db()
    return row


_BY_PREFIX_FIELDS = (
    "id",
    "name",
    "prefix",
    "secret_hash",
    "identity",
    "scopes",
    "user_id",
    "created_by",
    "created_at",
    "last_used_at",
    "revoked_at",
    "revoked_by",
)


# per connection (a thread's own DatabaseWrapper): the lookup's SQL, the model's attnames and
# each column's converters, built on first use instead of on every request
_BY_PREFIX_PLANS: weakref.WeakKeyDictionary[Any, tuple[str, list[str], list[Any]]] = (
    weakref.WeakKeyDictionary()
)


def _by_prefix_plan(connection: Any) -> tuple[str, list[str], list[Any]]:
    plan = _BY_PREFIX_PLANS.get(connection)
    if plan is None:
        quote = connection.ops.quote_name
        fields: list[Any] = [
            ApiKey._meta.get_field("user" if name == "user_id" else name)
            for name in _BY_PREFIX_FIELDS
        ]
        sql = (
            f"SELECT {', '.join(quote(c) for c in _BY_PREFIX_FIELDS)}"
            f" FROM {quote(ApiKey._meta.db_table)} WHERE prefix = %s"
        )
        # the backends' converters take an expression (SQLite's read its output_field): give
        # them the column expression a queryset would compile
        cols = [f.get_col(ApiKey._meta.db_table) for f in fields]
        converters = [
            (col, col.get_db_converters(connection) + connection.ops.get_db_converters(col))
            for col in cols
        ]
        plan = _BY_PREFIX_PLANS[connection] = (sql, [f.attname for f in fields], converters)
    return plan


def _apikey_by_prefix(prefix: str) -> ApiKey | None:
    """One indexed SELECT, without the ORM's query compilation: this runs on every API
    request, and its CPU is a measurable share of a submit (bench/api_bench.py)."""
    from django.db import DEFAULT_DB_ALIAS, connections

    connection = connections[DEFAULT_DB_ALIAS]
    sql, attnames, converters = _by_prefix_plan(connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [prefix])
        found = cursor.fetchone()
    if found is None:
        return None
    # the fields' converters (JSON, datetimes), run the way a queryset would, then from_db
    values = list(found)
    for i, (col, fns) in enumerate(converters):
        for fn in fns:
            values[i] = fn(values[i], col, connection)
    return ApiKey.from_db(connection.alias, attnames, values)


def apikey_authenticate(raw: str) -> ApiKey | None:
    """The active key ``raw`` names, or None. One indexed lookup by prefix, then a
    constant-time comparison of the hashes (an unknown prefix is hashed too, so timing does not
    tell a wrong prefix from a wrong secret)."""
    if not isinstance(raw, str) or not raw.startswith(KEY_PREFIX) or len(raw) > 200:
        return None
    prefix, sep, secret = raw[len(KEY_PREFIX) :].partition("_")
    if not sep or not secret or len(prefix) != API_KEY_PREFIX_LEN:
        return None
    row = _apikey_by_prefix(prefix)
    expected = row.secret_hash if row is not None else "0" * 64
    if not hmac.compare_digest(expected, _hash(raw)) or row is None:
        return None
    if row.revoked_at is not None:
        return None
    if row.user is not None and not row.user.is_active:
        return None
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
        row.last_used_at = now
    return row


def apikey_actor(row: ApiKey) -> Actor:
    """The actor an API key acts as: named by its identity (the journal's ``actor``), with its
    scopes — never more than its linked user's, when it has one."""
    scopes = frozenset(row.scopes) & Scope.ALL
    if row.user is not None:
        scopes &= Actor.from_user(row.user).scopes
    return Actor(
        name=row.identity, scopes=scopes, user=row.user, identity=row.identity, kind="apikey"
    )


def apikey_as_dict(row: ApiKey) -> dict[str, Any]:
    return {
        "prefix": row.prefix,
        "display": row.display_prefix,
        "name": row.name,
        "identity": row.identity,
        "scopes": list(row.scopes),
        "user": row.user.get_username() if row.user_id and row.user else None,
        "created_by": row.created_by,
        "created_at": iso_utc(row.created_at),
        "last_used_at": iso_utc(row.last_used_at),
        "revoked_at": iso_utc(row.revoked_at),
        "active": row.revoked_at is None,
    }
