"""The well-known keys document and pack download."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.test import Client

from gaitweb.lib.actors import Actor
from jobs.models import Job
from packs.keys import key_init, key_rotate
from packs.services import pack_build, pack_verify
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def client_for(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_the_well_known_keys_document_lists_current_and_retired_keys_without_login(
    admin: Actor,
) -> None:
    old = key_init(actor=admin)
    new = key_rotate(actor=admin).active

    response = Client().get("/.well-known/gait/keys.json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    doc = response.json()
    assert {(k["key_id"], k["status"]) for k in doc["keys"]} == {
        (old.key_id, "retired"),
        (new.key_id, "active"),
    }
    assert all(k["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----") for k in doc["keys"])
    assert "private_location" not in response.content.decode()


def test_a_reader_downloads_the_stored_pack(job: Job, cast: Any, admin: Actor) -> None:
    key_init(actor=admin)
    pack = pack_build(actor=Actor.system("tester"), job_id=job.job_id).pack

    response = client_for(cast.viewer).get(f"/packs/{pack.pack_id}/download")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == f'attachment; filename="pack_{pack.pack_id}.zip"'
    assert response.content == bytes(pack.data)
    assert pack_verify(source=io.BytesIO(response.content)).ok


def test_download_needs_a_login(job: Job) -> None:
    pack = pack_build(actor=Actor.system("tester"), job_id=job.job_id).pack

    response = Client().get(f"/packs/{pack.pack_id}/download")

    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_download_needs_the_read_scope(job: Job, cast: Any) -> None:
    pack = pack_build(actor=Actor.system("tester"), job_id=job.job_id).pack

    assert client_for(cast.outsider).get(f"/packs/{pack.pack_id}/download").status_code == 403


def test_an_unknown_or_malformed_pack_id_is_not_found(cast: Any) -> None:
    client = client_for(cast.viewer)
    assert client.get(f"/packs/{'0' * 64}/download").status_code == 404
    assert client.get("/packs/not-a-pack/download").status_code == 404


def test_the_admin_shows_keys_and_packs_read_only(job: Job, cast: Any, admin: Actor) -> None:
    from django.contrib.auth.models import User

    key = key_init(actor=admin)
    pack = pack_build(actor=Actor.system("tester"), job_id=job.job_id).pack
    User.objects.filter(pk=cast.admin.pk).update(is_staff=True)
    client = client_for(cast.admin)

    keys_page = client.get("/admin/packs/signingkey/")
    packs_page = client.get("/admin/packs/pack/")
    detail = client.get(f"/admin/packs/pack/{pack.pk}/change/")

    assert b"Select signing key to view" in keys_page.content
    assert key.key_id.encode() in keys_page.content
    assert pack.pack_id.encode() in packs_page.content
    assert f"/packs/{pack.pack_id}/download".encode() in detail.content
    assert client.get("/admin/packs/signingkey/add/").status_code == 403
    assert client.get(f"/admin/packs/pack/{pack.pk}/delete/").status_code == 403
