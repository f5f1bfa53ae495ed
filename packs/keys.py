"""Ed25519 signing keys: create, rotate, list, export; load the active signer; the trust store.

The private key never touches the database. It lives either in a file under
GAIT["KEYS_DIR"] (mode 0600, written with O_EXCL) or in the environment variable named by
GAIT["SIGNING_KEY_ENV"]; the ``SigningKey`` row keeps the public half, the key id and *where*
the private half is (``file:/path`` or ``env:NAME``). Encoding follows Gait (Clyra-AI/proof
signing): base64 of the 64-byte private key (seed + public key) and base64 of the raw 32-byte
public key. Packs are verified against every registered key, active or retired, so rotation
never strands an old pack.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.canonical import iso_utc
from gaitweb.lib.errors import Conflict, InvalidInput, NotFound
from packs.models import SigningKey, SigningKeyStatus
from packs.spec import Signer, key_id_of, public_key_raw

FILE_PREFIX = "file:"
ENV_PREFIX = "env:"


# --- encodings --------------------------------------------------------------------------------


def private_key_encode(key: Ed25519PrivateKey) -> str:
    """Gait's private key text: base64 of seed (32 bytes) + public key (32 bytes)."""
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(seed + public_key_raw(key.public_key())).decode("ascii")


def private_key_parse(text: str, *, source: str) -> Ed25519PrivateKey:
    """Gait's base64 64-byte form, a base64 32-byte seed, or a PKCS#8 PEM."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                reasons.SIGNING_KEY_INVALID, f"{source}: not an Ed25519 private key ({exc})"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidInput(reasons.SIGNING_KEY_INVALID, f"{source}: not an Ed25519 private key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(reasons.SIGNING_KEY_INVALID, f"{source}: not base64") from None
    if len(raw) not in (32, 64):
        raise InvalidInput(
            reasons.SIGNING_KEY_INVALID,
            f"{source}: an Ed25519 private key is 32 or 64 bytes, not {len(raw)}",
        )
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and raw[32:] != public_key_raw(key.public_key()):
        raise InvalidInput(
            reasons.SIGNING_KEY_INVALID, f"{source}: the public half does not match the seed"
        )
    return key


def public_key_parse(data: bytes, *, source: str, raw_ok: bool = True) -> Ed25519PublicKey:
    """A public key as PEM (SubjectPublicKeyInfo), base64 or hex of the raw 32 bytes, or (a key
    file, ``raw_ok``) the raw 32 bytes themselves."""
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                reasons.PUBLIC_KEY_INVALID, f"{source}: not a public key ({exc})"
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidInput(reasons.PUBLIC_KEY_INVALID, f"{source}: not an Ed25519 public key")
        return key
    raw: bytes | None = None
    if raw_ok and len(data) == 32:
        raw = data
    else:
        text = stripped.decode("ascii", errors="replace")
        if len(text) == 64:
            try:
                raw = bytes.fromhex(text)
            except ValueError:
                raw = None
        if raw is None:
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raw = None
    if raw is None or len(raw) != 32:
        raise InvalidInput(
            reasons.PUBLIC_KEY_INVALID,
            f"{source}: not an Ed25519 public key (PEM, base64 or hex of 32 bytes)",
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _row_public_key(row: SigningKey) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(row.public_key))


# --- storage of the private half ---------------------------------------------------------------


def _keys_dir() -> Path:
    path = Path(str(settings.GAIT["KEYS_DIR"]))
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _env_name() -> str:
    return str(settings.GAIT["SIGNING_KEY_ENV"])


def _write_private(key: Ed25519PrivateKey, key_id: str) -> Path:
    path = _keys_dir() / f"{key_id}.key"
    # O_EXCL + 0600 at creation: the key is never readable by others, not even for an instant
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(private_key_encode(key) + "\n")
    return path


def _read_private_file(path: Path) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise Conflict(
            reasons.SIGNING_KEY_UNAVAILABLE,
            f"the private key file {path} is missing",
            hint="gait keys rotate",
        ) from None
    if mode & 0o077:
        raise Conflict(
            reasons.SIGNING_KEY_INSECURE,
            f"the private key file {path} is readable by others (mode {oct(mode & 0o777)})",
            hint=f"chmod 600 {path}",
        )
    return private_key_parse(path.read_text(), source=str(path))


# --- services ---------------------------------------------------------------------------------


def key_as_dict(row: SigningKey) -> dict[str, Any]:
    public = _row_public_key(row)
    return {
        "key_id": row.key_id,
        "alg": "ed25519",
        "status": row.status,
        "public_key": base64.b64encode(public_key_raw(public)).decode("ascii"),
        "private_location": row.private_location,
        "created_at": iso_utc(row.created_at),
        "retired_at": iso_utc(row.retired_at),
    }


def _register(key: Ed25519PublicKey, *, location: str) -> SigningKey:
    try:
        with transaction.atomic():
            return SigningKey.objects.create(
                key_id=key_id_of(key),
                public_key=public_key_raw(key).hex(),
                private_location=location,
                status=SigningKeyStatus.ACTIVE,
            )
    except IntegrityError:
        raise Conflict(
            reasons.SIGNING_KEY_EXISTS,
            "a signing key is already active (or this key is already registered)",
            hint="gait keys rotate",
        ) from None


def key_init(*, actor: Actor, from_env: bool = False) -> SigningKey:
    """Create the first signing key (a new key file), or with ``from_env`` register the key in
    the signing-key environment variable. Refused while another key is active."""
    actor.require(Scope.ADMIN)
    if SigningKey.objects.filter(status=SigningKeyStatus.ACTIVE).exists():
        raise Conflict(
            reasons.SIGNING_KEY_EXISTS, "a signing key is already active", hint="gait keys rotate"
        )
    if from_env:
        name = _env_name()
        text = os.environ.get(name, "")
        if not text.strip():
            raise InvalidInput(
                reasons.SIGNING_KEY_ENV_UNSET, f"environment variable {name} is not set"
            )
        key = private_key_parse(text, source=f"${name}")
        return _register(key.public_key(), location=ENV_PREFIX + name)
    key = Ed25519PrivateKey.generate()
    key_id = key_id_of(key.public_key())
    path = _write_private(key, key_id)
    try:
        return _register(key.public_key(), location=FILE_PREFIX + str(path))
    except Conflict:
        path.unlink(missing_ok=True)  # lost a race with another init: leave no orphan key
        raise


@dataclass(frozen=True)
class KeyRotation:
    active: SigningKey
    retired: list[SigningKey]


def key_rotate(*, actor: Actor) -> KeyRotation:
    """Retire the active key (it stays trusted for verification) and activate a new one. The
    retired key's private file is left in place for the operator to archive or delete."""
    actor.require(Scope.ADMIN)
    key = Ed25519PrivateKey.generate()
    key_id = key_id_of(key.public_key())
    path = _write_private(key, key_id)
    try:
        with transaction.atomic():
            now = timezone.now()
            retired = list(
                SigningKey.objects.select_for_update().filter(status=SigningKeyStatus.ACTIVE)
            )
            for row in retired:
                row.status = SigningKeyStatus.RETIRED
                row.retired_at = now
                row.save(update_fields=["status", "retired_at"])
            active = SigningKey.objects.create(
                key_id=key_id,
                public_key=public_key_raw(key.public_key()).hex(),
                private_location=FILE_PREFIX + str(path),
                status=SigningKeyStatus.ACTIVE,
            )
    except IntegrityError:
        path.unlink(missing_ok=True)
        raise Conflict(
            reasons.SIGNING_KEY_ROTATION_CONFLICT,
            "another rotation won; run it again if needed",
            retryable=True,
        ) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return KeyRotation(active=active, retired=retired)


def key_list() -> list[SigningKey]:
    return list(SigningKey.objects.order_by("-created_at", "-id"))


def key_get(*, key_id: str | None = None) -> SigningKey:
    """The key with this id (a unique prefix of at least 8 hex digits will do), else the active one."""
    if key_id:
        matches = (
            list(SigningKey.objects.filter(key_id__startswith=key_id.lower())[:2])
            if len(key_id) >= 8
            else []
        )
        if len(matches) != 1:
            raise NotFound(
                reasons.SIGNING_KEY_NOT_FOUND,
                f"no single signing key matches {key_id!r}",
                details={"key_id": key_id},
            )
        return matches[0]
    row = SigningKey.objects.filter(status=SigningKeyStatus.ACTIVE).first()
    if row is None:
        raise NotFound(
            reasons.SIGNING_KEY_NOT_FOUND, "no active signing key", hint="gait keys init"
        )
    return row


def key_export_public(*, key_id: str | None = None, fmt: str = "base64") -> str:
    """The public half as Gait's base64 text, PEM (for openssl) or hex."""
    row = key_get(key_id=key_id)
    public = _row_public_key(row)
    if fmt == "pem":
        return public_key_pem(public)
    if fmt == "hex":
        return row.public_key + "\n"
    if fmt == "base64":
        return base64.b64encode(public_key_raw(public)).decode("ascii") + "\n"
    raise InvalidInput(
        reasons.INVALID_KEY_FORMAT,
        f"unknown public key format {fmt!r}",
        details={"allowed": ["base64", "pem", "hex"]},
    )


def signer_active() -> Signer | None:
    """The signer for new packs, or None when no key is configured (packs are then unsigned).

    The environment variable wins when set (12-factor deployments), but only for a key that an
    admin registered (``gait keys init --from-env``): an unknown key would sign packs nobody can
    verify."""
    text = os.environ.get(_env_name(), "")
    if text.strip():
        key = private_key_parse(text, source=f"${_env_name()}")
        signer = Signer.of(key)
        row = SigningKey.objects.filter(key_id=signer.key_id).first()
        if row is None:
            raise Conflict(
                reasons.SIGNING_KEY_UNREGISTERED,
                f"the key in ${_env_name()} is not registered",
                hint="gait keys init --from-env",
            )
        if row.status != SigningKeyStatus.ACTIVE:
            raise Conflict(
                reasons.SIGNING_KEY_RETIRED,
                f"the key in ${_env_name()} was retired",
                hint="set the new key or unset the variable",
            )
        return signer
    row = SigningKey.objects.filter(status=SigningKeyStatus.ACTIVE).first()
    if row is None:
        return None
    if row.private_location.startswith(ENV_PREFIX):
        raise Conflict(
            reasons.SIGNING_KEY_UNAVAILABLE,
            f"the active key lives in ${row.private_location[len(ENV_PREFIX) :]}, which is not set",
        )
    if not row.private_location.startswith(FILE_PREFIX):
        raise Conflict(reasons.SIGNING_KEY_UNAVAILABLE, "the active key has no private location")
    signer = Signer.of(_read_private_file(Path(row.private_location[len(FILE_PREFIX) :])))
    if signer.key_id != row.key_id:
        raise Conflict(
            reasons.SIGNING_KEY_MISMATCH, "the private key file does not match the registered key"
        )
    return signer


def trusted_public_keys() -> dict[str, Ed25519PublicKey]:
    """Every registered key, active or retired, by key id."""
    return {row.key_id: _row_public_key(row) for row in SigningKey.objects.all()}


def keys_published() -> dict[str, Any]:
    """The document served at /.well-known/gait/keys.json: public halves only."""
    keys = []
    for row in key_list():
        public = _row_public_key(row)
        keys.append(
            {
                "key_id": row.key_id,
                "alg": "ed25519",
                "status": row.status,
                "public_key": base64.b64encode(public_key_raw(public)).decode("ascii"),
                "public_key_pem": public_key_pem(public),
                "created_at": iso_utc(row.created_at),
                "retired_at": iso_utc(row.retired_at),
            }
        )
    return {"schema_id": "gaitweb.signing_keys", "schema_version": "1.0.0", "keys": keys}
