"""Authentication, CSRF, throttling and the one error envelope."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from gaitweb.api_views import ApiView
from gaitweb.apikeys import apikey_revoke
from gaitweb.lib.actors import Actor
from gaitweb.models import ApiKey, ThrottleCounter
from jobs.models import Job
from tests.api.conftest import error_code, submit

pytestmark = pytest.mark.django_db


def test_a_request_without_credentials_is_401_with_the_envelope_and_a_bearer_challenge() -> None:
    r = APIClient().get("/api/v1/jobs")
    assert r.status_code == 401
    assert error_code(r) == "not_authenticated"
    assert r["WWW-Authenticate"].startswith("Bearer")


def test_a_wrong_key_is_401_and_never_falls_back_to_anonymous(make_key: Any) -> None:
    raw = make_key("read")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=raw[:-4] + "AAAA".replace("A", "B"))
    assert client.get("/api/v1/jobs").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer " + raw[:-4] + "BBBB")
    r = client.get("/api/v1/jobs")
    assert r.status_code == 401 and error_code(r) == "authentication_failed"
    client.credentials(HTTP_AUTHORIZATION="Bearer gw_nothex_x")
    assert client.get("/api/v1/jobs").status_code == 401


def test_keys_are_stored_hashed_and_looked_up_by_prefix(make_key: Any) -> None:
    raw = make_key("read")
    row = ApiKey.objects.get()
    assert raw.startswith(f"gw_{row.prefix}_")
    assert raw not in row.secret_hash and raw.split("_", 2)[2] not in str(
        ApiKey.objects.values().get()
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/jobs").status_code == 200
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_a_revoked_key_stops_working_at_once(make_key: Any) -> None:
    raw = make_key("read")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/jobs").status_code == 200
    apikey_revoke(actor=Actor.system("t"), prefix=raw[:15])
    r = client.get("/api/v1/jobs")
    assert r.status_code == 401 and error_code(r) == "authentication_failed"


def test_a_key_linked_to_a_user_never_exceeds_the_users_scopes(cast: Any, key_client: Any) -> None:
    # the viewer may only read: a key with submit scope linked to them still cannot submit
    client = key_client("submit,read", identity="vera-bot", user=cast.viewer)
    assert client.get("/api/v1/jobs").status_code == 200
    r = submit(client, job_id="j-vera")
    assert r.status_code == 403 and error_code(r) == "permission_denied"


def test_a_missing_scope_is_403_permission_denied_naming_the_scope(key_client: Any) -> None:
    r = submit(key_client("read"), job_id="j1")
    assert r.status_code == 403
    assert error_code(r) == "permission_denied"
    assert r.json()["error"]["details"] == {"required_scope": "submit"}


def test_session_writes_without_a_csrf_token_are_refused(session_client: Any) -> None:
    client = session_client("operator")
    r = submit(client, job_id="j-csrf")
    assert r.status_code == 403 and error_code(r) == "csrf_failed"

    assert not Job.objects.filter(job_id="j-csrf").exists()


def test_session_writes_with_the_csrf_token_succeed_and_reads_need_none(
    session_client: Any,
) -> None:
    client = session_client("operator")
    assert client.get("/api/v1/jobs").status_code == 200
    client.get("/api/v1/health")  # any response: the token comes from the cookie jar below
    from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret

    secret = _get_new_csrf_string()
    client.cookies["csrftoken"] = secret
    r = client.post(
        "/api/v1/jobs",
        {"job_id": "j-csrf-ok"},
        format="json",
        HTTP_X_CSRFTOKEN=_mask_cipher_secret(secret),
    )
    assert r.status_code == 201, r.content
    assert r.json()["created_by"] == "otto_operator"


def test_an_outsider_with_a_session_is_forbidden(session_client: Any) -> None:
    r = session_client("outsider").get("/api/v1/jobs")
    assert r.status_code == 403 and error_code(r) == "permission_denied"


@pytest.mark.parametrize(
    "method, path, kwargs, status, code",
    [
        ("get", "/api/v1/no-such-thing", {}, 404, "not_found"),
        ("get", "/api/v1/jobs/nope", {}, 404, "job_not_found"),
        ("delete", "/api/v1/jobs", {}, 405, "method_not_allowed"),
        (
            "post",
            "/api/v1/jobs",
            {"data": "job_id=x", "content_type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        (
            "post",
            "/api/v1/jobs",
            {"data": "{not json", "content_type": "application/json"},
            400,
            "parse_error",
        ),
        (
            "post",
            "/api/v1/jobs",
            {"data": {"labels": "nope"}, "format": "json"},
            400,
            "invalid_input",
        ),
        (
            "post",
            "/api/v1/jobs",
            {"data": {"job_id": "bad id!"}, "format": "json"},
            400,
            "invalid_job_id",
        ),
        ("get", "/api/v1/jobs?page_size=0", {}, 400, "invalid_input"),
        ("get", "/api/v1/jobs?cursor=bm9wZQ", {}, 400, "invalid_cursor"),
        ("get", "/api/v1/jobs?status=sleeping", {}, 400, "invalid_status"),
    ],
)
def test_every_error_uses_the_envelope_with_a_stable_code(
    agent: APIClient, method: str, path: str, kwargs: dict, status: int, code: str
) -> None:
    before = Job.objects.count()
    r = getattr(agent, method)(path, **kwargs)
    assert r.status_code == status, r.content
    assert error_code(r) == code
    assert Job.objects.count() == before


def test_throttling_answers_429_with_retry_after_per_key(settings: Any, key_client: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"apikey": "3/min", "user": "3/min", "anon": "3/min"},
    }
    first, second = key_client("read", identity="a"), key_client("read", identity="b")
    assert [first.get("/api/v1/jobs").status_code for _ in range(3)] == [200, 200, 200]
    r = first.get("/api/v1/jobs")
    assert r.status_code == 429 and error_code(r) == "throttled"
    assert 1 <= int(r["Retry-After"]) <= 60
    assert r.json()["error"]["details"]["retry_after"] == int(r["Retry-After"])
    # the counter is per key: another key is not affected
    assert second.get("/api/v1/jobs").status_code == 200


def test_throttle_counters_are_shared_through_the_database_when_there_is_no_redis(
    settings: Any, make_key: Any
) -> None:
    # the fallback store, whatever this run's cache is (CI runs with Redis)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "gaitweb_cache",
        }
    }
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"apikey": "4/min"},
    }
    raw = make_key("read")
    # two clients with the same key stand in for two worker processes: one counter
    one, two = APIClient(), APIClient()
    for c in (one, two):
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert [c.get("/api/v1/jobs").status_code for c in (one, two, one, two, one)] == [
        200,
        200,
        200,
        200,
        429,
    ]
    counter = ThrottleCounter.objects.get()
    assert counter.ident.startswith("apikey:") and counter.count == 5


def test_with_a_cache_backend_the_throttle_counts_in_the_cache(
    settings: Any, key_client: Any
) -> None:
    from django.core.cache import caches

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "throttle-test",
        }
    }
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"apikey": "2/min"},
    }
    caches["default"].clear()
    client = key_client("read")
    assert [client.get("/api/v1/jobs").status_code for _ in range(3)] == [200, 200, 429]
    assert not ThrottleCounter.objects.exists()


def test_with_redis_the_throttle_counts_in_redis_with_an_expiry(
    settings: Any, key_client: Any
) -> None:
    import os
    import uuid

    redis = pytest.importorskip("redis")
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {url}")
    from django.core.cache import caches

    prefix = f"gaitweb-test-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": prefix,
        }
    }
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"apikey": "2/min"},
    }
    client = key_client("read")
    assert [client.get("/api/v1/jobs").status_code for _ in range(3)] == [200, 200, 429]
    assert not ThrottleCounter.objects.exists()
    server = redis.Redis.from_url(url)
    keys = server.keys(f"{prefix}:*gaitweb:throttle:apikey:*")
    try:
        # the counter is the cache's own key, so a cache reader sees the same count
        assert len(keys) == 1 and int(server.get(keys[0])) == 3
        assert 0 < server.ttl(keys[0]) <= 65
        assert caches["default"].get(keys[0].decode().split(":", 2)[2]) == 3
    finally:
        server.delete(*keys)


def test_the_schema_and_swagger_ui_are_served_by_the_app_without_a_cdn() -> None:
    import re

    from django.test import Client

    client = Client()
    schema = client.get("/api/v1/schema/")
    assert schema.status_code == 200 and b"openapi: 3" in schema.content
    assert b"bearerFormat: gw_<prefix>_<secret>" in schema.content
    page = client.get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/") for a in assets), assets
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost|testserver)", html)
    bundle = next(a for a in assets if a.endswith("swagger-ui-bundle.js"))
    assert client.get(bundle).status_code == 200


def test_every_operation_in_swagger_has_its_own_summary_and_no_inherited_description() -> None:
    """The user opened /api/v1/docs/: each operation must say what it does, not the base view's
    docstring ("Base of every gaitweb API view…")."""
    import inspect

    import yaml
    from django.test import Client

    schema = yaml.safe_load(Client().get("/api/v1/schema/").content)
    base_doc = inspect.cleandoc(ApiView.__doc__ or "")
    assert base_doc
    ops = [
        (f"{method.upper()} {path}", op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(ops) >= 45
    missing = [name for name, op in ops if not (op.get("summary") or "").strip()]
    assert missing == [], missing
    leaked = [
        name
        for name, op in ops
        if base_doc[:40] in (op.get("summary") or "")
        or base_doc[:40] in (op.get("description") or "")
    ]
    assert leaked == [], leaked
    summaries = [op["summary"] for _, op in ops]
    assert len(set(summaries)) == len(summaries), "two operations share a summary"
