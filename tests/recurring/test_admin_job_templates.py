"""Admins manage templates in Django admin with the services' validation."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from jobs.models import JobTemplate
from tests.conftest import PASSWORD


def _admin_client(cast: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    cast.admin.is_staff = True
    cast.admin.save()
    assert client.login(username=cast.admin.username, password=PASSWORD)
    return client


def _post(client: Client, url: str, data: dict[str, Any]) -> Any:
    client.get(url)
    return client.post(url, {**data, "csrfmiddlewaretoken": client.cookies["csrftoken"].value})


FORM = {
    "template_id": "daily-brief",
    "name": "Daily brief",
    "description": "",
    "spec": "{}",
    "identity": "brief-bot",
    "policy": "",
    "labels": "{}",
    "cron": "@daily",
    "timezone": "Europe/Berlin",
    "continuity": "resume",
    "overlap": "skip",
    "catch_up": "once",
    "enabled": "on",
    "fires-TOTAL_FORMS": "0",
    "fires-INITIAL_FORMS": "0",
}


@pytest.mark.django_db
def test_an_admin_adds_a_template_and_it_is_scheduled(cast: Any) -> None:
    client = _admin_client(cast)
    r = _post(client, "/admin/jobs/jobtemplate/add/", FORM)
    assert r.status_code == 302, r.content.decode()[:2000]
    t = JobTemplate.objects.get()
    assert t.next_fire_at is not None and t.created_by == cast.admin.username
    assert t.continuity_handle.startswith("cont_")


@pytest.mark.django_db
def test_the_admin_form_refuses_a_bad_cron_with_its_reason_code(cast: Any) -> None:
    client = _admin_client(cast)
    r = _post(client, "/admin/jobs/jobtemplate/add/", {**FORM, "cron": "every day"})
    assert r.status_code == 200 and "invalid_cron" in r.content.decode()
    assert not JobTemplate.objects.exists()


@pytest.mark.django_db
def test_the_admin_form_refuses_deeply_nested_json_with_a_reason_code(cast: Any) -> None:
    from tests.hostile import deep_json

    client = _admin_client(cast)
    for field in ("spec", "labels"):
        r = _post(client, "/admin/jobs/jobtemplate/add/", {**FORM, field: deep_json()})
        assert r.status_code == 200 and "json_too_deep" in r.content.decode(), field
    assert not JobTemplate.objects.exists()
