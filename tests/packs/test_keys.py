"""Signing keys: where the private half lives, rotation, trust, and an independent check."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import Conflict, Forbidden, InvalidInput
from jobs.models import Job
from packs import keys
from packs.keys import (
    key_export_public,
    key_init,
    key_list,
    key_rotate,
    keys_published,
    signer_active,
)
from packs.models import SigningKey
from packs.services import pack_build, pack_verify
from tests.packs.helpers import entries_of, job_with_history

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("tester")


def test_key_init_writes_a_private_file_readable_only_by_its_owner(
    admin: Actor, keys_dir: Path
) -> None:
    row = key_init(actor=admin)

    path = keys_dir / f"{row.key_id}.key"
    assert row.private_location == f"file:{path}"
    assert path.stat().st_mode & 0o777 == 0o600
    private = keys.private_key_parse(path.read_text(), source="test")
    assert keys.key_id_of(private.public_key()) == row.key_id
    assert row.status == "active"


def test_the_database_holds_only_the_public_half(admin: Actor, keys_dir: Path) -> None:
    row = key_init(actor=admin)
    secret = (keys_dir / f"{row.key_id}.key").read_text().strip()
    seed_hex = base64.b64decode(secret)[:32].hex()

    stored = json.dumps(list(SigningKey.objects.values()), default=str)

    assert seed_hex not in stored and secret not in stored
    assert bytes.fromhex(row.public_key) == base64.b64decode(secret)[32:]


def test_a_second_init_is_refused_while_a_key_is_active(admin: Actor) -> None:
    key_init(actor=admin)
    with pytest.raises(Conflict) as excinfo:
        key_init(actor=admin)
    assert excinfo.value.code == "signing_key_exists"
    assert SigningKey.objects.count() == 1


def test_key_management_needs_the_admin_scope(db: Any) -> None:
    with pytest.raises(Forbidden):
        key_init(actor=Actor(name="viewer", scopes=frozenset({"read"})))
    assert not SigningKey.objects.exists()


def test_the_database_allows_only_one_active_key(admin: Actor) -> None:
    from django.db import IntegrityError, transaction

    key_init(actor=admin)
    with pytest.raises(IntegrityError), transaction.atomic():
        SigningKey.objects.create(key_id="f" * 64, public_key="0" * 64, status="active")


def test_rotation_retires_the_old_key_and_signs_new_packs_with_the_new_one(admin: Actor) -> None:
    old = key_init(actor=admin)

    rotation = key_rotate(actor=admin)

    assert [r.key_id for r in rotation.retired] == [old.key_id]
    assert SigningKey.objects.get(key_id=old.key_id).status == "retired"
    assert SigningKey.objects.get(key_id=old.key_id).retired_at is not None
    assert signer_active().key_id == rotation.active.key_id
    assert [k.status for k in key_list()] == ["active", "retired"]


def test_rotation_keeps_old_packs_verifiable(job: Job, admin: Actor) -> None:
    old = key_init(actor=admin)
    old_pack = bytes(pack_build(actor=SYSTEM, job_id=job.job_id).pack.data)
    key_rotate(actor=admin)
    new_job = job_with_history("refund-43")
    new_pack = pack_build(actor=SYSTEM, job_id=new_job.job_id).pack

    old_result = pack_verify(source=io.BytesIO(old_pack))
    new_result = pack_verify(source=io.BytesIO(bytes(new_pack.data)))

    assert old_result.ok and old_result.key_ids == [old.key_id]
    assert new_result.ok and new_pack.key_id != old.key_id


def test_a_key_in_the_environment_signs_once_registered(
    job: Job, admin: Actor, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    private = Ed25519PrivateKey.generate()
    monkeypatch.setenv(settings.GAIT["SIGNING_KEY_ENV"], keys.private_key_encode(private))

    with pytest.raises(Conflict) as excinfo:
        pack_build(actor=SYSTEM, job_id=job.job_id)
    assert excinfo.value.code == "signing_key_unregistered"

    row = key_init(actor=admin, from_env=True)
    pack = pack_build(actor=SYSTEM, job_id=job.job_id).pack

    assert row.private_location == "env:GAIT_SIGNING_KEY"
    assert pack.key_id == keys.key_id_of(private.public_key()) == row.key_id
    assert pack_verify(source=io.BytesIO(bytes(pack.data))).ok


def test_a_private_key_file_readable_by_others_is_refused(
    job: Job, admin: Actor, keys_dir: Path
) -> None:
    row = key_init(actor=admin)
    (keys_dir / f"{row.key_id}.key").chmod(0o644)

    with pytest.raises(Conflict) as excinfo:
        pack_build(actor=SYSTEM, job_id=job.job_id)
    assert excinfo.value.code == "signing_key_insecure"


def test_export_public_gives_base64_pem_and_hex_of_the_same_key(admin: Actor) -> None:
    row = key_init(actor=admin)

    b64 = key_export_public(fmt="base64").strip()
    pem = key_export_public(key_id=row.key_id[:12], fmt="pem")
    hexed = key_export_public(fmt="hex").strip()

    assert base64.b64decode(b64).hex() == hexed == row.public_key
    assert keys.key_id_of(keys.public_key_parse(pem.encode(), source="pem")) == row.key_id
    with pytest.raises(InvalidInput):
        key_export_public(fmt="jwk")


def test_the_published_keys_list_current_and_retired_public_halves(admin: Actor) -> None:
    old = key_init(actor=admin)
    new = key_rotate(actor=admin).active

    doc = keys_published()

    assert [(k["key_id"], k["status"]) for k in doc["keys"]] == [
        (new.key_id, "active"),
        (old.key_id, "retired"),
    ]
    assert "private" not in json.dumps(doc)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_the_manifest_signature_independently(
    job: Job, admin: Actor, tmp_path: Path
) -> None:
    key_init(actor=admin)
    files = entries_of(bytes(pack_build(actor=SYSTEM, job_id=job.job_id).pack.data))
    [sig] = json.loads(files["pack_manifest.json"])["signatures"]
    (tmp_path / "pub.pem").write_text(key_export_public(fmt="pem"))
    (tmp_path / "digest.bin").write_bytes(bytes.fromhex(sig["signed_digest"]))
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(sig["sig"]))

    def openssl_verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "openssl",
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                "pub.pem",
                "-rawin",
                "-in",
                "digest.bin",
                "-sigfile",
                "sig.bin",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "OPENSSL_CONF": "/dev/null"},
        )

    ok = openssl_verify()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Signature Verified Successfully" in ok.stdout

    (tmp_path / "digest.bin").write_bytes(bytes(32))  # a different digest must not verify
    assert openssl_verify().returncode != 0


def test_the_signed_digest_is_sha256sum_of_the_canonical_manifest_without_signatures(
    job: Job, admin: Actor
) -> None:
    import hashlib

    import rfc8785

    key_init(actor=admin)
    files = entries_of(bytes(pack_build(actor=SYSTEM, job_id=job.job_id).pack.data))
    manifest = json.loads(files["pack_manifest.json"])
    sig = manifest.pop("signatures")[0]

    assert hashlib.sha256(rfc8785.dumps(manifest)).hexdigest() == sig["signed_digest"]
