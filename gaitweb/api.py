"""REST API plumbing shared by every app's ``api.py`` (docs/api.md).

- ``ApiKeyAuthentication``: ``Authorization: Bearer gw_<prefix>_<secret>`` (gaitweb.apikeys).
  Browser sessions work too (DRF's ``SessionAuthentication``, which enforces CSRF).
- ``ScopePermission``: each view names the scope each method needs (``required_scopes``);
  services check again (``actor.require``), so the API cannot do more than the CLI.
- ``exception_handler``: ONE error envelope ``{"error": {"code", "message", "details", "hint"}}``
  for service errors (``GaitError``: the CLI's reason codes) and DRF's own (401, 403, 404, 405,
  406, 415, 429, parse and validation errors). An unexpected exception is logged and answered
  with the same envelope (500, ``internal_error``), never an HTML page.
- ``KeysetPagination``: cursor pagination over a unique ordering (``created_at``, ``id``), so
  pages stay stable while rows are inserted.
- ``ApiRateThrottle``: fixed-window counters per API key (or user, or client address) in a
  store shared by every process: the cache when it is Redis, else one atomic upsert on a table.

The base view (``ApiView``) and the schema class live in gaitweb/api_views.py: DRF's
``rest_framework.views`` reads the classes named in settings at import, so this module must not
import it.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DataError
from django.db.models import Q, QuerySet
from django.http import Http404
from django.utils.dateparse import parse_datetime
from rest_framework import exceptions, serializers
from rest_framework.authentication import (
    BaseAuthentication,
    get_authorization_header,
)
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.utils import json as drf_json

from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import Forbidden, GaitError, InvalidInput, NotFound, api_body
from gaitweb.lib.parsing import JSON_MAX_DEPTH, json_loads

log = logging.getLogger("gaitweb.api")


# --- authentication ------------------------------------------------------------------------------


class ApiKeyPrincipal:
    """``request.user`` for an API key with no linked Django user: authenticated, no perms."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, identity: str) -> None:
        self.username = identity

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer gw_…``. No header: not this scheme (session auth may apply).
    A Bearer header with a wrong, revoked or malformed key: 401, never a fallback."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        # settings.REST_FRAMEWORK names this module's classes, so DRF may import it before the
        # app registry is ready: the models (and gaitweb.apikeys, which imports them) wait
        from gaitweb.apikeys import apikey_authenticate

        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("the Authorization header must be 'Bearer <key>'")
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("invalid API key") from None
        row = apikey_authenticate(raw)
        if row is None:
            raise exceptions.AuthenticationFailed("invalid or revoked API key")
        user = row.user if row.user is not None else ApiKeyPrincipal(row.identity)
        return user, row

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="gaitweb"'


def actor_of(request: Request) -> Actor:
    """Who is acting: the API key (its identity and scopes) or the logged-in user."""
    cached = getattr(request, "_gait_actor", None)
    if cached is not None:
        return cached
    from gaitweb.apikeys import apikey_actor  # after app loading, as in ApiKeyAuthentication
    from gaitweb.models import ApiKey

    if isinstance(request.auth, ApiKey):
        actor = apikey_actor(request.auth)
    else:
        actor = Actor.from_user(request.user)
    request._gait_actor = actor  # type: ignore[attr-defined]
    return actor


# --- permissions ---------------------------------------------------------------------------------


class ScopePermission(BasePermission):
    """The view's ``required_scopes`` maps HTTP methods to a scope (``"*"`` for the rest).
    Unauthenticated -> 401; authenticated without the scope -> 403 ``permission_denied``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        scopes: dict[str, str | None] = getattr(view, "required_scopes", {})
        scope = scopes.get(request.method or "", scopes.get("*"))
        if scope is None:
            return True
        if not request.user or not request.user.is_authenticated:
            raise exceptions.NotAuthenticated()
        actor = actor_of(request)
        if not actor.can(scope):
            raise GaitError(
                reasons.PERMISSION_DENIED,
                f"{actor.name} lacks the '{scope}' permission",
                details={"required_scope": scope},
                http_status=403,
            )
        return True


# --- input hygiene -------------------------------------------------------------------------------


def unknown_fields_check(names: Iterable[Any], allowed: Iterable[str], where: str = "body") -> None:
    """Refuse a field nobody declared: a misspelt field would otherwise be dropped silently
    (``{"polcy": "strict"}`` would submit a job bound to no policy). ``unknown_field`` names
    the first one in ``details.field`` and all of them in ``details.fields``."""
    known = set(allowed)
    unknown = sorted({str(n) for n in names} - known)
    if unknown:
        raise InvalidInput(
            reasons.UNKNOWN_FIELD,
            f"unknown {'field' if where == 'body' else 'parameter'}"
            f"{'s' if len(unknown) > 1 else ''} in the {where}: {', '.join(unknown)}",
            details={"field": unknown[0], "fields": unknown, "allowed": sorted(known)},
            hint="check the spelling against the API schema (/api/v1/schema/)",
        )


class StrictInput(serializers.Serializer):
    """The base of every API input serializer, for bodies and query strings alike: a field it
    does not declare is refused with ``unknown_field`` (gaitweb.api_views.ApiView.input and
    .query accept nothing else)."""

    where = "body"

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown_fields_check(data.keys(), self.fields.keys(), self.where)
        return super().to_internal_value(data)


class StrictQuery(StrictInput):
    """The base of every query-string serializer (its refusals say "parameter")."""

    where = "query"


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser behind a nesting guard (the default parser, settings.REST_FRAMEWORK).

    ``json.load`` recurses once per level: a body nested 20,000 deep raised ``RecursionError``
    (a 500) before ``json_safe_check`` could see the value. Here the body — already bounded by
    the request size guard (gaitweb.lib.middleware) — is read, its nesting counted without
    recursion (gaitweb.lib.parsing), and parsed only when it is at most ``JSON_MAX_DEPTH`` deep;
    deeper is ``400 json_too_deep``."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = get_encoding(parser_context or {})
        raw = stream.read() if stream is not None else b""
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        parse_constant = drf_json.strict_constant if self.strict else None
        try:
            return json_loads(text, what="body", parse_constant=parse_constant)
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None


SAFE_INT = 2**53 - 1


def json_safe_check(value: Any, where: str = "body", _depth: int = 0) -> None:
    """Refuse JSON the journal cannot hash or the database cannot store, before any service
    sees it: integers beyond ±2^53 (JCS, RFC 8785), non-finite floats, NUL characters and lone
    surrogates (PostgreSQL text/jsonb), nesting deeper than 64."""

    def bad(message: str) -> InvalidInput:
        return InvalidInput(
            reasons.INVALID_JSON_VALUE, f"{where}: {message}", details={"field": where}
        )

    if _depth > JSON_MAX_DEPTH:
        raise bad("nested too deeply")
    if isinstance(value, str):
        if "\x00" in value:
            raise bad("text may not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise bad("text is not valid Unicode (lone surrogate)") from None
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -SAFE_INT <= value <= SAFE_INT:
            raise bad("integers must be within ±(2^53 - 1)")
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise bad("numbers must be finite")
    elif isinstance(value, dict):
        for k, v in value.items():
            json_safe_check(k, where, _depth + 1)
            json_safe_check(v, where, _depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            json_safe_check(v, where, _depth + 1)


# --- errors ----------------------------------------------------------------------------------------


def set_rollback() -> None:
    """Roll back an ATOMIC_REQUESTS transaction on error (what DRF's own handler does;
    rest_framework.views cannot be imported here: it reads this module's classes from settings)."""
    from django.db import connections

    for db in connections.all():
        if db.settings_dict.get("ATOMIC_REQUESTS") and db.in_atomic_block:
            db.set_rollback(True)


def _as_gait_error(exc: Exception, context: dict[str, Any]) -> tuple[GaitError, dict[str, str]]:
    """Any exception a view raised as the ``GaitError`` the API answers with (its reason code
    and status), and the headers that go with it."""
    headers: dict[str, str] = {}
    if isinstance(exc, GaitError):
        return exc, headers
    if isinstance(exc, Http404):
        return NotFound(reasons.NOT_FOUND, "not found"), headers
    if isinstance(exc, DjangoPermissionDenied):
        return Forbidden(reasons.PERMISSION_DENIED, str(exc) or "permission denied"), headers
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        fields = sorted(detail) if isinstance(detail, dict) else []
        message = "invalid input: " + ", ".join(fields) if fields else "invalid input"
        return InvalidInput(reasons.INVALID_INPUT, message, details={"fields": detail}), headers
    if isinstance(exc, exceptions.APIException):
        code = str(exc.default_code)
        message = str(exc.detail) if not isinstance(exc.detail, list | dict) else code
        details: dict[str, Any] = {}
        if isinstance(exc, exceptions.PermissionDenied) and message.startswith("CSRF Failed"):
            code = reasons.CSRF_FAILED
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
        if isinstance(exc, exceptions.Throttled):
            wait = int(exc.wait or 1)
            headers["Retry-After"] = str(wait)
            details["retry_after"] = wait
            message = f"too many requests; retry in {wait} s"
        return GaitError(code, message, details=details, http_status=exc.status_code), headers
    if isinstance(exc, RequestDataTooBig):
        return GaitError(reasons.REQUEST_TOO_LARGE, str(exc), http_status=413), headers
    if isinstance(exc, SuspiciousOperation):
        return InvalidInput(reasons.BAD_REQUEST, str(exc)), headers
    if isinstance(exc, DataError):
        # a value the database cannot hold (e.g. an integer out of range): the input's fault
        return InvalidInput(reasons.INVALID_INPUT, "a value is out of range for its field"), headers
    log.exception("internal error in %s", context.get("view").__class__.__name__)
    internal = GaitError(
        reasons.INTERNAL_ERROR, "internal error; see the server log", http_status=500
    )
    return internal, headers


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Every error a view raises, answered with the one envelope (gaitweb.lib.errors.api_body)."""
    error, headers = _as_gait_error(exc, context)
    set_rollback()
    return Response(api_body(error), status=error.http_status, headers=headers)


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="stable reason code, the same as the CLI's error_code")
    message = serializers.CharField()
    details = serializers.DictField(child=serializers.JSONField())
    hint = serializers.CharField(allow_blank=True)


class ErrorEnvelopeSerializer(serializers.Serializer):
    error = ErrorSerializer()


# --- throttling --------------------------------------------------------------------------------


def _rate(name: str) -> tuple[int, int] | None:
    rates = getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_THROTTLE_RATES", {})
    raw = rates.get(name)
    if not raw:
        return None
    num, _, period = str(raw).partition("/")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period.strip()[0].lower()]
    return int(num), seconds


THROTTLE_UPSERT = """
INSERT INTO gaitweb_throttlecounter (ident, window_start, count) VALUES (%s, %s, 1)
ON CONFLICT (ident) DO UPDATE SET
    count = CASE WHEN gaitweb_throttlecounter.window_start = EXCLUDED.window_start
                 THEN gaitweb_throttlecounter.count + 1 ELSE 1 END,
    window_start = EXCLUDED.window_start
RETURNING count
"""


@functools.cache
def _redis_client(url: str) -> Any:
    """One Redis client (and connection pool) per process and server: Django's RedisCache
    builds a new client on every call, and its ``incr`` costs an EXISTS round trip first."""
    import redis

    return redis.Redis.from_url(url)


def throttle_count(ident: str, window: int, period: int) -> int:
    """Requests counted for ``ident`` in ``window`` (this one included), in the store every
    process shares: Redis (one INCR + EXPIRE round trip), another cache with its ``incr``; or —
    when the cache is the database cache, which cannot increment atomically — one upsert on
    ``gaitweb_throttlecounter`` (gaitweb.models.ThrottleCounter)."""
    from django.core.cache import caches
    from django.core.cache.backends.db import DatabaseCache
    from django.core.cache.backends.redis import RedisCache

    cache = caches["default"]
    if isinstance(cache, DatabaseCache):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(THROTTLE_UPSERT, [ident[:200], window])
            return int(cursor.fetchone()[0])
    key = f"gaitweb:throttle:{ident}:{window}"
    if isinstance(cache, RedisCache):
        # the key the cache itself would use (prefix, version), on the first server of its
        # LOCATION (RedisCache's parsed list), where RedisCache sends its own writes
        full_key = cache.make_and_validate_key(key)
        server: str = cache._servers[0]  # type: ignore[attr-defined]
        pipe = _redis_client(server).pipeline()
        pipe.incr(full_key)
        pipe.expire(full_key, period + 5)
        count, _ = pipe.execute()
        return int(count)
    try:
        return int(cache.incr(key))
    except ValueError:
        return 1 if cache.add(key, 1, timeout=period + 5) else int(cache.incr(key))


class ApiRateThrottle(BaseThrottle):
    """Fixed-window request counter per API key / user / client address, in a store shared by
    every process (``throttle_count``). Rates: ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``
    ``apikey`` / ``user`` / ``anon``. A fixed window lets a client send up to twice the rate
    across a window boundary; that is the price of one statement per request."""

    def _ident(self, request: Request) -> tuple[str, str]:
        from gaitweb.models import ApiKey  # after app loading, as in ApiKeyAuthentication

        if isinstance(request.auth, ApiKey):
            return "apikey", request.auth.prefix
        user = request.user
        if user is not None and user.is_authenticated and getattr(user, "pk", None):
            return "user", str(user.pk)
        return "anon", self.get_ident(request)

    def allow_request(self, request: Request, view: Any) -> bool:
        kind, ident = self._ident(request)
        rate = _rate(kind)
        if rate is None:
            return True
        limit, period = rate
        now = time.time()
        window = int(now // period)
        self.wait_seconds = period - (now % period)
        try:
            count = throttle_count(f"{kind}:{ident}:{period}", window, period)
        except Exception:  # the store is down: do not take the API down with it
            log.warning("throttle store unavailable", exc_info=True)
            return True
        return count <= limit

    def wait(self) -> float | None:
        return max(1.0, getattr(self, "wait_seconds", 1.0))


# --- pagination --------------------------------------------------------------------------------


def _encode(values: list[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return (
        base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode())
        .decode()
        .rstrip("=")
    )


def _bad_cursor() -> InvalidInput:
    return InvalidInput(
        reasons.INVALID_CURSOR,
        "the cursor is not one this API returned",
        details={"field": "cursor"},
    )


def _decode(cursor: str, n: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json_loads(raw, what="cursor")
    except (ValueError, TypeError, InvalidInput):
        values = None
    if not isinstance(values, list) or len(values) != n:
        raise _bad_cursor()
    return values


def int_param(request: Request, name: str, *, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise InvalidInput(
            reasons.for_field(reasons.FIELD_INVALID, name),
            f"{name} must be an integer from {lo} to {hi}",
            details={"field": name},
        )
    return value


class KeysetPagination:
    """Cursor (keyset) pagination over ``ordering``, which must be unique (end it with ``id``).

    The cursor is the last row's ordering values; the next page is ``WHERE (ordering) after
    (cursor)``, which an index on the ordering answers without counting or offsets. Rows
    inserted while a client pages are either before its cursor (not seen) or after (seen
    once): never a duplicate, never a skipped row that existed when paging began."""

    def __init__(self, ordering: Sequence[str], *, datetime_fields: Sequence[str] = ()) -> None:
        self.ordering = list(ordering)
        self.datetime_fields = set(datetime_fields)

    def _after(self, values: list[Any]) -> Q:
        q = Q()
        for i, spec in enumerate(self.ordering):
            name = spec.lstrip("-")
            op = "lt" if spec.startswith("-") else "gt"
            term = Q(**{f"{name}__{op}": values[i]})
            for prev in range(i):
                term &= Q(**{self.ordering[prev].lstrip("-"): values[prev]})
            q |= term
        return q

    def _values(self, raw: list[Any]) -> list[Any]:
        out: list[Any] = []
        for spec, value in zip(self.ordering, raw, strict=True):
            name = spec.lstrip("-")
            if name in self.datetime_fields:
                parsed = parse_datetime(value) if isinstance(value, str) else None
                if parsed is None:
                    raise _bad_cursor()
                out.append(parsed)
            elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
                raise _bad_cursor()
            else:
                out.append(value)
        return out

    def paginate(self, request: Request, qs: QuerySet[Any]) -> tuple[list[Any], str | None]:
        gait: dict[str, Any] = settings.GAIT
        size = int_param(
            request,
            "page_size",
            default=int(gait.get("LIST_DEFAULT_PAGE_SIZE", 50)),
            lo=1,
            hi=int(gait.get("LIST_MAX_PAGE_SIZE", 500)),
        )
        cursor = request.query_params.get("cursor")
        qs = qs.order_by(*self.ordering)
        if cursor:
            qs = qs.filter(self._after(self._values(_decode(cursor, len(self.ordering)))))
        rows = list(qs[: size + 1])
        if len(rows) <= size:
            return rows, None
        rows = rows[:size]
        last = rows[-1]
        return rows, _encode([getattr(last, spec.lstrip("-")) for spec in self.ordering])

    @staticmethod
    def response(request: Request, results: list[Any], next_cursor: str | None) -> dict[str, Any]:
        next_url = None
        if next_cursor:
            params = request.query_params.copy()
            params["cursor"] = next_cursor
            next_url = request.build_absolute_uri(request.path) + "?" + params.urlencode()
        return {"results": results, "next": next_url, "next_cursor": next_cursor}


def page_serializer(item: type[serializers.Serializer], name: str) -> type[serializers.Serializer]:
    """The schema of one page of ``item``s."""
    return type(
        name,
        (serializers.Serializer,),
        {
            "results": item(many=True),
            "next": serializers.CharField(allow_null=True, help_text="URL of the next page"),
            "next_cursor": serializers.CharField(allow_null=True),
        },
    )
