"""`gait apikey create|list|revoke` and the API key admin: the key is shown once, stored hashed."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from rest_framework.test import APIClient

from gaitweb.models import ApiKey
from jobs.management.commands.gait import main

pytestmark = pytest.mark.django_db


def gait(capsys: Any, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_apikey_create_prints_a_working_key_once_and_list_shows_only_the_prefix(
    capsys: Any,
) -> None:
    code, out = gait(
        capsys,
        "apikey",
        "create",
        "--identity",
        "agent-x",
        "--scopes",
        "submit,read",
        "--name",
        "ci",
    )
    assert code == 0 and out["key"].startswith("gw_")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {out['key']}")
    assert (
        client.post("/api/v1/jobs", {"job_id": "from-cli-key"}, format="json").json()["identity"]
        == "agent-x"
    )
    code, listed = gait(capsys, "apikey", "list")
    assert code == 0 and [k["identity"] for k in listed["api_keys"]] == ["agent-x"]
    assert out["key"] not in json.dumps(listed) and listed["api_keys"][0]["scopes"] == [
        "read",
        "submit",
    ]


def test_apikey_create_refuses_unknown_scopes_with_exit_6(capsys: Any) -> None:
    code, out = gait(capsys, "apikey", "create", "--identity", "a", "--scopes", "read,root")
    assert code == 6 and out["error_code"] == "invalid_scopes"
    assert not ApiKey.objects.exists()


def test_apikey_revoke_stops_the_key(capsys: Any) -> None:
    _, out = gait(capsys, "apikey", "create", "--identity", "agent-y", "--scopes", "read")
    code, revoked = gait(capsys, "apikey", "revoke", out["api_key"]["display"].rstrip("_…"))
    assert code == 0 and revoked["api_key"]["active"] is False
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {out['key']}")
    assert client.get("/api/v1/jobs").status_code == 401
    code, missing = gait(capsys, "apikey", "revoke", "gw_ffffffffffff")
    assert code == 6 and missing["error_code"] == "apikey_not_found"


def test_the_admin_creates_a_key_showing_it_once_and_revokes_it(cast: Any) -> None:
    from django.test import Client

    cast.admin.is_staff = True  # Django admin needs staff status on top of the admin role
    cast.admin.save()
    client = Client()
    client.force_login(cast.admin)
    r = client.post(
        "/admin/gaitweb/apikey/add/",
        {"name": "dash", "identity": "agent-z", "scopes": ["read", "submit"]},
        follow=True,
    )
    assert r.status_code == 200
    row = ApiKey.objects.get(identity="agent-z")
    shown = [str(m) for m in r.context["messages"]]
    key = next(m.split(": ", 1)[1].split(" ")[0] for m in shown if "API key for agent-z" in m)
    assert key.startswith(f"gw_{row.prefix}_") and key not in row.secret_hash
    listing = client.get("/admin/gaitweb/apikey/").content.decode()
    assert row.prefix in listing and key not in listing
    client.post(
        "/admin/gaitweb/apikey/", {"action": "revoke_selected", "_selected_action": [row.pk]}
    )
    row.refresh_from_db()
    assert row.revoked_at is not None and row.revoked_by == cast.admin.username


def test_a_key_created_in_the_admin_never_travels_in_a_cookie(cast: Any) -> None:
    """Messages are session-backed (settings.MESSAGE_STORAGE): with the default cookie storage
    the new key rode to the browser in the ``messages`` cookie, signed but readable."""
    from django.contrib.sessions.models import Session
    from django.test import Client

    cast.admin.is_staff = True
    cast.admin.save()
    client = Client()
    client.force_login(cast.admin)
    created = client.post("/admin/gaitweb/apikey/add/", {"identity": "agent-c", "scopes": ["read"]})
    assert created.status_code == 302
    row = ApiKey.objects.get(identity="agent-c")

    set_cookies = " ".join(morsel.OutputString() for morsel in created.cookies.values())
    assert "messages" not in created.cookies and row.prefix not in set_cookies
    shown = client.get(created["Location"]).content.decode()
    full_key = re.compile(rf"gw_{row.prefix}_[A-Za-z0-9_-]{{20,}}")
    key = full_key.search(shown)  # shown once, on the next page
    assert key is not None and key.group(0) not in set_cookies
    assert full_key.search(client.get(created["Location"]).content.decode()) is None
    # and once shown, it is gone from the session store too
    assert all(key.group(0) not in str(s.get_decoded()) for s in Session.objects.all())


def test_only_admins_may_create_keys_in_the_admin(cast: Any) -> None:
    from django.test import Client

    cast.operator.is_staff = True
    cast.operator.save()
    client = Client()
    client.force_login(cast.operator)
    r = client.post("/admin/gaitweb/apikey/add/", {"identity": "sneaky", "scopes": ["admin"]})
    assert r.status_code == 403
    assert not ApiKey.objects.exists()
