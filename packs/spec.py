"""PackSpec v1 (Gait's pack format) as pure functions: the bytes of a pack, no database.

Follows Gait's published rules (Clyra-AI/gait ``docs/contracts/packspec_v1.md`` and its
``core/pack``): the manifest lists every entry but itself with its sha256; ``pack_id`` is the
sha256 of the JCS of the manifest with ``pack_id: ""`` and no ``signatures``; the signature is
Ed25519 over the 32 raw bytes of ``signed_digest`` = sha256 of the JCS of the manifest with the
real ``pack_id`` and no ``signatures``; ``key_id`` is the sha256 hex of the raw public key;
``proof_records.jsonl`` is a hash chain of proof records (Clyra-AI/proof record v1.0), one per
other entry. docs/packs.md spells the rules out for third-party verifiers.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gaitweb.lib.canonical import canonical_json, sha256_hex

MANIFEST_PATH = "pack_manifest.json"
PROOF_RECORDS_PATH = "proof_records.jsonl"
MANIFEST_SCHEMA_ID = "gait.pack.manifest"
MANIFEST_SCHEMA_VERSION = "1.0.0"
EPOCH = "1980-01-01T00:00:00Z"
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
ALG_ED25519 = "ed25519"
# Proof records name their producer; Gait's own producer writes "gait.pack" / "gait".
PROOF_SOURCE = "gaitweb.pack"
PROOF_PRODUCT = "gaitweb"


def jcs(value: Any) -> bytes:
    """RFC 8785 bytes of ``value`` (gaitweb.lib.canonical's fast path)."""
    return canonical_json(value)


def jcs_digest(value: Any) -> str:
    return sha256_hex(jcs(value))


@dataclass(frozen=True)
class Entry:
    path: str
    data: bytes

    @property
    def sha256(self) -> str:
        return sha256_hex(self.data)


def entry_type(path: str) -> str:
    """The ``type`` of a manifest entry, derived from its name as Gait does."""
    lower = path.strip().lower()
    if lower.endswith(".json"):
        return "json"
    if lower.endswith(".jsonl"):
        return "jsonl"
    if lower.endswith(".zip"):
        return "zip"
    return "blob"


def jsonl(values: Iterable[Any]) -> bytes:
    """One JCS document per line, each line ending in a newline."""
    return b"".join(jcs(v) + b"\n" for v in values)


# --- keys and signatures --------------------------------------------------------------------


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(key: Ed25519PublicKey) -> str:
    """sha256 hex of the raw 32-byte public key."""
    return sha256_hex(public_key_raw(key))


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def of(cls, private_key: Ed25519PrivateKey) -> Signer:
        return cls(private_key=private_key, key_id=key_id_of(private_key.public_key()))

    def sign_b64(self, data: bytes) -> str:
        return base64.b64encode(self.private_key.sign(data)).decode("ascii")


def signature_valid(public_key: Ed25519PublicKey, sig_b64: str, data: bytes) -> bool:
    try:
        raw = base64.b64decode(sig_b64, validate=True)
    except (ValueError, TypeError):
        return False
    if len(raw) != 64:
        return False
    try:
        public_key.verify(raw, data)
    except InvalidSignature:
        return False
    return True


# --- proof records ----------------------------------------------------------------------------


def proof_record_hash(record: Mapping[str, Any]) -> str:
    """Clyra-AI/proof ``ComputeHash``: the record's fields with ``integrity`` reduced to
    ``previous_record_hash`` (an empty string when absent), JCS, ``sha256:`` + hex."""
    payload: dict[str, Any] = {k: record.get(k) for k in _PROOF_HASHED}
    payload["agent_id"] = record.get("agent_id", "")
    for optional in ("relations", "relationship"):
        if record.get(optional) is not None:
            payload[optional] = record[optional]
    integrity = record.get("integrity") or {}
    payload["integrity"] = {"previous_record_hash": integrity.get("previous_record_hash", "")}
    return "sha256:" + jcs_digest(payload)


_PROOF_HASHED = (
    "record_id",
    "record_version",
    "timestamp",
    "source",
    "source_product",
    "agent_id",
    "record_type",
    "event",
    "controls",
    "metadata",
)


def _proof_record(
    *,
    pack_type: str,
    source_ref: str,
    producer_version: str,
    entry: Entry,
    previous: str,
    signer: Signer | None,
) -> dict[str, Any]:
    event = {
        "pack_type": pack_type,
        "source_ref": source_ref,
        "producer_version": producer_version,
        "entry_path": entry.path,
        "entry_type": entry_type(entry.path),
        "entry_sha256": entry.sha256,
        "entry_size_bytes": len(entry.data),
        "entry_permissions": FILE_MODE,
    }
    id_basis = {
        "timestamp": EPOCH,
        "source": PROOF_SOURCE,
        "source_product": PROOF_PRODUCT,
        "agent_id": PROOF_PRODUCT,
        "record_type": "tool_invocation",
        "event": event,
    }
    record: dict[str, Any] = {
        "record_id": f"prf-{EPOCH}-{jcs_digest(id_basis)[:8]}",
        "record_version": "1.0",
        "timestamp": EPOCH,
        "source": PROOF_SOURCE,
        "source_product": PROOF_PRODUCT,
        "agent_id": PROOF_PRODUCT,
        "record_type": "tool_invocation",
        "event": event,
        "controls": {"permissions_enforced": False},
        "metadata": {"artifact_kind": "gait.pack.entry"},
        "integrity": {"previous_record_hash": previous} if previous else {},
    }
    record_hash = proof_record_hash(record)
    integrity: dict[str, Any] = {"record_hash": record_hash}
    if previous:
        integrity["previous_record_hash"] = previous
    if signer is not None:
        # Gait signs the UTF-8 bytes of the record hash string ("sha256:…")
        integrity["signing_key_id"] = signer.key_id
        integrity["signature"] = "base64:" + signer.sign_b64(record_hash.encode("ascii"))
    record["integrity"] = integrity
    return record


def proof_records_build(
    *,
    pack_type: str,
    source_ref: str,
    producer_version: str,
    entries: Iterable[Entry],
    signer: Signer | None,
) -> bytes:
    """One chained proof record per entry (sorted by path), lines joined by newlines as Gait
    writes them (no trailing newline)."""
    lines: list[bytes] = []
    previous = ""
    for entry in sorted(entries, key=lambda e: e.path):
        if entry.path in (PROOF_RECORDS_PATH, MANIFEST_PATH):
            continue
        record = _proof_record(
            pack_type=pack_type,
            source_ref=source_ref,
            producer_version=producer_version,
            entry=entry,
            previous=previous,
            signer=signer,
        )
        lines.append(jcs(record))
        previous = record["integrity"]["record_hash"]
    return b"\n".join(lines)


# --- manifest -------------------------------------------------------------------------------


def pack_id_compute(manifest: Mapping[str, Any]) -> str:
    """sha256 hex of JCS(manifest with ``pack_id: ""`` and no ``signatures``)."""
    body = {k: v for k, v in manifest.items() if k != "signatures"}
    body["pack_id"] = ""
    return jcs_digest(body)


def signed_digest_compute(manifest: Mapping[str, Any]) -> str:
    """sha256 hex of JCS(manifest with its real ``pack_id`` and no ``signatures``)."""
    return jcs_digest({k: v for k, v in manifest.items() if k != "signatures"})


def manifest_build(
    *,
    pack_type: str,
    source_ref: str,
    producer_version: str,
    entries: Iterable[Entry],
    signer: Signer | None,
) -> dict[str, Any]:
    contents = sorted(
        ({"path": e.path, "sha256": e.sha256, "type": entry_type(e.path)} for e in entries),
        key=lambda c: c["path"],
    )
    manifest: dict[str, Any] = {
        "schema_id": MANIFEST_SCHEMA_ID,
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "created_at": EPOCH,
        "producer_version": producer_version,
        "pack_id": "",
        "pack_type": pack_type,
        "source_ref": source_ref,
        "contents": contents,
    }
    manifest["pack_id"] = pack_id_compute(manifest)
    if signer is not None:
        signed = signed_digest_compute(manifest)
        manifest["signatures"] = [
            {
                "alg": ALG_ED25519,
                "key_id": signer.key_id,
                "sig": signer.sign_b64(bytes.fromhex(signed)),
                "signed_digest": signed,
            }
        ]
    return manifest


# --- the zip --------------------------------------------------------------------------------


def zip_write(entries: Iterable[Entry]) -> bytes:
    """Deterministic zip: entries sorted by path, 1980-01-01 mtime, Unix 0644 regular files,
    deflate at a fixed level, no extra fields, no comment."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for entry in sorted(entries, key=lambda e: e.path):
            info = zipfile.ZipInfo(entry.path, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so external_attr carries the mode on every platform
            info.external_attr = (0o100000 | FILE_MODE) << 16
            zf.writestr(info, entry.data, compresslevel=6)
    return buffer.getvalue()


def pack_assemble(
    *,
    pack_type: str,
    source_ref: str,
    producer_version: str,
    entries: list[Entry],
    signer: Signer | None,
) -> tuple[dict[str, Any], bytes]:
    """Add proof records and the manifest to ``entries``; return (manifest, zip bytes)."""
    proof = Entry(
        PROOF_RECORDS_PATH,
        proof_records_build(
            pack_type=pack_type,
            source_ref=source_ref,
            producer_version=producer_version,
            entries=entries,
            signer=signer,
        ),
    )
    declared = [*entries, proof]
    manifest = manifest_build(
        pack_type=pack_type,
        source_ref=source_ref,
        producer_version=producer_version,
        entries=declared,
        signer=signer,
    )
    data = zip_write([*declared, Entry(MANIFEST_PATH, jcs(manifest))])
    return manifest, data
