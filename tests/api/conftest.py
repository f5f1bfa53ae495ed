"""Fixtures for the REST API tests: API keys with chosen scopes, clients that carry them, and
CSRF-enforcing session clients for the cast."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from gaitweb.lib.actors import Actor

POLICY_YAML = """\
schema_id: gait.gate.policy
schema_version: 1.0.0
default_verdict: allow
rules:
  - name: refunds-need-approval
    priority: 10
    effect: require_approval
    match:
      tool_names: [payments.refund]
    reason_codes: [refund_requires_approval]
  - name: no-deletes
    priority: 20
    effect: block
    match:
      tool_names: [db.drop]
    reason_codes: [destructive_tool_blocked]
"""


@pytest.fixture(autouse=True)
def _api_settings(settings: Any, tmp_path: Any) -> None:
    # generous limits: throttling has its own test that lowers them
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            "apikey": "100000/min",
            "user": "100000/min",
            "anon": "100000/min",
        },
    }
    settings.GAIT = {**settings.GAIT, "KEYS_DIR": tmp_path / "keys"}


@pytest.fixture
def make_key(db: Any) -> Callable[..., str]:
    """``make_key("submit,read", identity="agent-7")`` -> the raw key."""
    from gaitweb.apikeys import apikey_create

    def make(
        scopes: str = "submit,read,control",
        identity: str = "agent-7",
        user: Any = None,
        name: str = "",
    ) -> str:
        return apikey_create(
            actor=Actor.system("test"), identity=identity, scopes=scopes, name=name, user=user
        ).key

    return make


@pytest.fixture
def key_client(make_key: Callable[..., str]) -> Callable[..., APIClient]:
    """An API client authenticated with a fresh key of the given scopes."""

    def make(
        scopes: str = "submit,read,control", identity: str = "agent-7", **kw: Any
    ) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(scopes, identity=identity, **kw)}")
        return client

    return make


@pytest.fixture
def agent(key_client: Callable[..., APIClient]) -> APIClient:
    """The integrator's agent: submit, read, control as identity agent-7."""
    return key_client("submit,read,control", identity="agent-7")


@pytest.fixture
def reviewer_key(key_client: Callable[..., APIClient]) -> APIClient:
    # a reviewer decides other identities' jobs: without cross_identity it would see none
    return key_client("approve,read,cross_identity", identity="rita")


@pytest.fixture
def admin_key(key_client: Callable[..., APIClient]) -> APIClient:
    return key_client("admin", identity="root")


@pytest.fixture
def session_client(cast: Any) -> Callable[[str], APIClient]:
    """A logged-in browser session for one of the cast, with CSRF checks enforced."""
    from tests.conftest import PASSWORD

    def make(who: str) -> APIClient:
        client = APIClient(enforce_csrf_checks=True)
        assert client.login(username=getattr(cast, who).username, password=PASSWORD)
        return client

    return make


def error_code(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details", "hint"}, body
    return body["error"]["code"]


def submit(client: APIClient, **body: Any) -> Any:
    return client.post("/api/v1/jobs", body, format="json")
