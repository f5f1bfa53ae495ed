"""Every way of tampering with a pack is caught by pack_verify, and says where."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gaitweb.lib.actors import Actor
from gaitweb.lib.canonical import canonical_json, digest
from jobs.models import Job
from packs import spec
from packs.keys import key_init
from packs.services import PackVerifyResult, pack_build, pack_verify
from packs.spec import Signer
from tests.packs.helpers import edit_lines, entries_of, forge, reassemble, rezip

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed(job: Job, admin: Actor) -> dict[str, bytes]:
    key_init(actor=admin)
    return entries_of(bytes(pack_build(actor=Actor.system("tester"), job_id=job.job_id).pack.data))


def verify(data: bytes, **kwargs: Any) -> PackVerifyResult:
    return pack_verify(source=io.BytesIO(data), **kwargs)


def _edit_event(lines: list[bytes], revision: int, **changes: Any) -> list[bytes]:
    out = []
    for line in lines:
        event = json.loads(line)
        if event["revision"] == revision:
            event.update(changes)
            line = canonical_json(event) + b"\n"
        out.append(line)
    return out


def test_an_untouched_pack_verifies(signed: dict[str, bytes]) -> None:
    assert verify(rezip(signed)).ok


def test_an_edited_entry_is_a_hash_mismatch(signed: dict[str, bytes]) -> None:
    state = json.loads(signed["job_state.json"])
    state["status"] = "cancelled"
    signed["job_state.json"] = canonical_json(state)

    result = verify(rezip(signed))

    assert not result.ok
    assert [m["path"] for m in result.hash_mismatches] == ["job_state.json"]
    assert result.hash_mismatches[0]["expected"] != result.hash_mismatches[0]["actual"]


def test_an_edited_event_breaks_the_hash_and_the_chain(signed: dict[str, bytes]) -> None:
    signed["job_events.jsonl"] = edit_lines(
        signed["job_events.jsonl"], lambda ls: _edit_event(ls, 4, actor="mallory")
    )

    result = verify(rezip(signed))

    assert not result.ok
    assert [m["path"] for m in result.hash_mismatches] == ["job_events.jsonl"]
    assert not result.chain_ok
    assert result.chain["first_bad_revision"] == 4


def test_an_edited_event_is_caught_by_the_chain_even_with_a_rebuilt_manifest(
    signed: dict[str, bytes],
) -> None:
    signed["job_events.jsonl"] = edit_lines(
        signed["job_events.jsonl"], lambda ls: _edit_event(ls, 4, actor="mallory")
    )

    result = verify(reassemble(signed))

    assert result.hash_mismatches == []
    assert not result.ok
    assert not result.chain_ok
    assert result.chain["reason"] == "hash does not match the event's content"


def test_a_removed_event_breaks_the_chain(signed: dict[str, bytes]) -> None:
    signed["job_events.jsonl"] = edit_lines(signed["job_events.jsonl"], lambda ls: ls[:2] + ls[3:])

    result = verify(reassemble(signed))

    assert not result.ok
    assert not result.chain_ok
    assert result.chain["first_bad_revision"] == 3
    assert "revision gap" in result.chain["reason"]


def test_a_removed_last_event_is_caught_against_the_state(signed: dict[str, bytes]) -> None:
    signed["job_events.jsonl"] = edit_lines(signed["job_events.jsonl"], lambda ls: ls[:-1])

    result = verify(reassemble(signed))

    assert not result.ok
    assert not result.chain_ok
    assert "last_event_hash" in result.chain["reason"]


def test_reordered_events_break_the_chain(signed: dict[str, bytes]) -> None:
    signed["job_events.jsonl"] = edit_lines(
        signed["job_events.jsonl"], lambda ls: [ls[0], ls[2], ls[1], *ls[3:]]
    )

    result = verify(reassemble(signed))

    assert not result.ok
    assert not result.chain_ok
    assert result.chain["first_bad_revision"] == 2


def test_a_payload_that_contradicts_the_state_is_inconsistent(signed: dict[str, bytes]) -> None:
    payload = json.loads(signed["job_payload.json"])
    payload["status"] = "running"
    signed["job_payload.json"] = canonical_json(payload)

    result = verify(reassemble(signed), allow_unsigned=True)  # the re-signing is another test

    assert not result.ok and not result.accepted_unsigned
    assert result.chain_ok and result.hash_mismatches == []
    assert {e["code"] for e in result.errors} == {"job_payload_inconsistent"}


def test_an_approval_count_that_contradicts_the_events_is_inconsistent(
    signed: dict[str, bytes],
) -> None:
    payload = json.loads(signed["job_payload.json"])
    state = json.loads(signed["job_state.json"])
    state["approvals"] = []
    payload["approval_count"] = 0
    signed["job_payload.json"] = canonical_json(payload)
    signed["job_state.json"] = canonical_json(state)

    result = verify(reassemble(signed))

    assert not result.ok
    assert any("approved events" in e["message"] for e in result.errors)


def test_an_added_file_is_undeclared(signed: dict[str, bytes]) -> None:
    signed["notes.txt"] = b"trust me"

    result = verify(rezip(signed))

    assert not result.ok
    assert result.undeclared_files == ["notes.txt"]


def test_a_removed_file_is_missing(signed: dict[str, bytes]) -> None:
    del signed["job_steps.jsonl"]

    result = verify(rezip(signed))

    assert not result.ok
    assert result.missing_files == ["job_steps.jsonl"]


def test_a_removed_manifest_fails_verification(signed: dict[str, bytes]) -> None:
    del signed["pack_manifest.json"]

    result = verify(rezip(signed))

    assert not result.ok
    assert [e["code"] for e in result.errors] == ["manifest_missing"]


def test_a_forged_pack_id_is_caught(signed: dict[str, bytes]) -> None:
    manifest = json.loads(signed["pack_manifest.json"])
    manifest["pack_id"] = "f" * 64
    signed["pack_manifest.json"] = canonical_json(manifest)

    result = verify(rezip(signed))

    assert not result.ok
    assert "pack_id_mismatch" in {e["code"] for e in result.errors}


def test_a_pack_re_signed_with_an_untrusted_key_fails(signed: dict[str, bytes]) -> None:
    mallory = Signer.of(Ed25519PrivateKey.generate())

    result = verify(reassemble(signed, signer=mallory))

    assert not result.ok
    assert result.signature_status == "failed"
    assert any("not trusted" in e for e in result.signature_errors)


def test_a_pack_signed_by_an_explicitly_trusted_public_key_verifies(
    signed: dict[str, bytes],
) -> None:
    other = Ed25519PrivateKey.generate()

    result = verify(reassemble(signed, signer=Signer.of(other)), public_keys=[other.public_key()])

    assert result.ok
    assert result.signature_status == "verified"


def test_a_signature_over_a_different_manifest_fails(signed: dict[str, bytes]) -> None:
    manifest = json.loads(signed["pack_manifest.json"])
    manifest["producer_version"] = "evil-1.0"
    body = {k: v for k, v in manifest.items() if k != "signatures"}
    manifest["pack_id"] = spec.pack_id_compute(body)  # a consistent pack_id, the old signature
    signed["pack_manifest.json"] = canonical_json(manifest)

    result = verify(rezip(signed))

    assert not result.ok
    assert result.signature_status == "failed"
    assert (
        digest({k: v for k, v in manifest.items() if k != "signatures"})
        != manifest["signatures"][0]["signed_digest"]
    )


def test_a_stripped_signature_fails_unless_allow_unsigned(signed: dict[str, bytes]) -> None:
    stripped = reassemble(signed)  # no signer: no manifest signature, no record signatures

    result = verify(stripped)
    assert not result.ok and result.signature_status == "missing"
    assert [e["code"] for e in result.errors] == ["pack_unsigned"]
    accepted = verify(stripped, allow_unsigned=True)
    assert accepted.ok and accepted.accepted_unsigned
    assert accepted.notes == ["unsigned, accepted because allow_unsigned"]


def test_a_forged_pack_with_every_actor_rewritten_and_the_chain_recomputed_fails(
    signed: dict[str, bytes],
) -> None:
    forged = forge(signed)
    events = [json.loads(line) for line in entries_of(forged)["job_events.jsonl"].splitlines()]
    assert {e["actor"] for e in events} == {"mallory"}

    result = verify(forged)

    # consistent in everything a forger can recompute; only the signature is missing
    assert result.chain_ok and result.hash_mismatches == [] and result.missing_files == []
    assert not result.ok
    assert [e["code"] for e in result.errors] == ["pack_unsigned"]
    assert verify(forged, allow_unsigned=True).accepted_unsigned


def test_a_signed_pack_passes(signed: dict[str, bytes]) -> None:
    result = verify(rezip(signed))
    assert result.ok and result.signature_status == "verified" and not result.accepted_unsigned
    assert result.notes == []


def test_a_signed_pack_fails_as_untrusted_when_nothing_is_trusted(
    signed: dict[str, bytes],
) -> None:
    result = verify(rezip(signed), trust_registered_keys=False)

    assert not result.ok
    assert result.signature_status == "skipped"
    assert [e["code"] for e in result.errors] == ["signature_untrusted"]
    accepted = verify(rezip(signed), trust_registered_keys=False, allow_unsigned=True)
    assert accepted.ok and accepted.accepted_unsigned
    assert accepted.notes == [
        "signature not checked (no trusted key), accepted because allow_unsigned"
    ]


def test_allow_unsigned_never_accepts_a_signature_that_does_not_verify(
    signed: dict[str, bytes],
) -> None:
    manifest = json.loads(signed["pack_manifest.json"])
    manifest["signatures"][0]["sig"] = manifest["signatures"][0]["sig"][::-1]
    signed["pack_manifest.json"] = canonical_json(manifest)

    result = verify(rezip(signed), allow_unsigned=True)

    assert not result.ok and result.signature_status == "failed"
    assert "signature_invalid" in {e["code"] for e in result.errors}
    assert not result.accepted_unsigned and result.notes == []


def test_tampered_proof_records_are_caught(signed: dict[str, bytes]) -> None:
    records = [json.loads(line) for line in signed["proof_records.jsonl"].split(b"\n")]
    records[1]["event"]["entry_sha256"] = "0" * 64
    signed["proof_records.jsonl"] = b"\n".join(canonical_json(r) for r in records)
    # a careful tamperer also fixes the manifest's hash and pack_id, but cannot re-sign
    manifest = json.loads(signed["pack_manifest.json"])
    for entry in manifest["contents"]:
        if entry["path"] == "proof_records.jsonl":
            entry["sha256"] = spec.Entry("x", signed["proof_records.jsonl"]).sha256
    manifest.pop("signatures")
    manifest["pack_id"] = spec.pack_id_compute(manifest)
    signed["pack_manifest.json"] = canonical_json(manifest)

    result = verify(rezip(signed))

    assert not result.ok
    assert "proof_records_invalid" in {e["code"] for e in result.errors}
