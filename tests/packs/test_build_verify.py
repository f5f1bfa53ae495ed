"""pack_build and pack_verify: round trip, determinism, storage and journaling, the format."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

import pytest

from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.canonical import canonical_json, digest, sha256_hex
from gaitweb.lib.errors import Forbidden, NotFound
from jobs.journal import chain_verify, event_append
from jobs.models import Job, JobEvent
from packs import spec
from packs.keys import key_init
from packs.models import Pack
from packs.selectors import pack_get
from packs.services import pack_build, pack_render, pack_verify
from tests.packs.helpers import entries_of, job_with_history

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("tester")


def test_a_built_pack_verifies(job: Job, admin: Actor) -> None:
    key_init(actor=admin)
    built = pack_build(actor=SYSTEM, job_id=job.job_id)

    result = pack_verify(source=io.BytesIO(bytes(built.pack.data)))

    assert result.ok, result.as_dict()
    assert result.pack_id == built.pack.pack_id
    assert result.pack_type == "job"
    assert result.source_ref == "refund-42"
    assert result.files_checked == 5
    assert result.signature_status == "verified"
    assert result.signatures_valid == 1
    assert result.chain_ok
    assert result.chain["events_checked"] == 7
    assert result.proof_records_verified == 4
    assert (
        result.missing_files,
        result.hash_mismatches,
        result.undeclared_files,
        result.errors,
    ) == ([], [], [], [])


def test_an_unsigned_pack_fails_verification_unless_allow_unsigned_and_then_says_so(
    job: Job,
) -> None:
    built = pack_build(actor=SYSTEM, job_id=job.job_id)  # no signing key: built unsigned
    assert built.pack.key_id == ""

    refused = pack_verify(source=io.BytesIO(bytes(built.pack.data)))
    accepted = pack_verify(source=io.BytesIO(bytes(built.pack.data)), allow_unsigned=True)

    assert not refused.ok and refused.signature_status == "missing"
    assert [e["code"] for e in refused.errors] == ["pack_unsigned"]
    assert refused.signature_required and not refused.accepted_unsigned
    assert refused.chain_ok  # everything else holds: only the missing signature fails it
    assert accepted.ok and accepted.signature_status == "missing"
    assert accepted.accepted_unsigned and not accepted.signature_required
    assert accepted.notes == ["unsigned, accepted because allow_unsigned"]
    assert accepted.errors == []


def test_the_pack_holds_the_entries_of_packspec_v1_in_sorted_order(job: Job) -> None:
    data = bytes(pack_build(actor=SYSTEM, job_id=job.job_id).pack.data)

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == [
        "job_events.jsonl",
        "job_payload.json",
        "job_state.json",
        "job_steps.jsonl",
        "pack_manifest.json",
        "proof_records.jsonl",
    ]
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr >> 16 == 0o100644
        assert info.compress_type == zipfile.ZIP_DEFLATED


def test_every_json_entry_is_canonical_and_events_carry_revision_prev_hash_and_hash(
    job: Job,
) -> None:
    files = entries_of(bytes(pack_build(actor=SYSTEM, job_id=job.job_id).pack.data))

    for name in ("job_payload.json", "job_state.json", "pack_manifest.json"):
        assert canonical_json(json.loads(files[name])) == files[name]
    lines = files["job_events.jsonl"].splitlines()
    assert len(lines) == 7
    db_hashes = list(
        JobEvent.objects.filter(job=job, revision__lte=7)
        .order_by("revision")
        .values_list("hash", flat=True)
    )
    for line, db_hash in zip(lines, db_hashes, strict=True):
        event = json.loads(line)
        assert canonical_json(event) == line
        assert event["hash"] == db_hash
        assert set(event) >= {"revision", "prev_hash", "hash", "type", "job_id"}


def test_the_manifest_follows_design_section_8(job: Job, admin: Actor) -> None:
    key = key_init(actor=admin)
    files = entries_of(bytes(pack_build(actor=SYSTEM, job_id=job.job_id).pack.data))
    manifest = json.loads(files["pack_manifest.json"])

    assert manifest["schema_id"] == "gait.pack.manifest"
    assert manifest["schema_version"] == "1.0.0"
    assert manifest["created_at"] == "1980-01-01T00:00:00Z"
    assert manifest["pack_type"] == "job"
    assert manifest["source_ref"] == "refund-42"
    assert [c["path"] for c in manifest["contents"]] == sorted(set(files) - {"pack_manifest.json"})
    for entry in manifest["contents"]:
        assert entry["sha256"] == sha256_hex(files[entry["path"]])
    unsigned = {k: v for k, v in manifest.items() if k != "signatures"}
    assert manifest["pack_id"] == digest({**unsigned, "pack_id": ""})
    [sig] = manifest["signatures"]
    assert sig["alg"] == "ed25519"
    assert sig["key_id"] == key.key_id == sha256_hex(bytes.fromhex(key.public_key))
    assert sig["signed_digest"] == digest(unsigned)
    assert len(base64.b64decode(sig["sig"])) == 64


def test_payload_and_state_tell_the_same_story_as_the_journal(job: Job) -> None:
    files = entries_of(bytes(pack_build(actor=SYSTEM, job_id=job.job_id).pack.data))
    payload = json.loads(files["job_payload.json"])
    state = json.loads(files["job_state.json"])

    assert payload == {
        "schema_id": "gait.pack.job",
        "schema_version": "1.0.0",
        "created_at": state["created_at"],
        "job_id": "refund-42",
        "status": "completed",
        "stop_reason": "completed",
        "status_reason_code": "job_succeeded",
        "environment_fingerprint": "env_test",
        "checkpoint_count": 2,
        "approval_count": 1,
    }
    assert state["revision"] == 7
    assert state["last_event_hash"] == JobEvent.objects.get(job=job, revision=7).hash
    assert [c["checkpoint_id"] for c in state["checkpoints"]] == ["cp_0001", "cp_0002"]
    assert state["approvals"][0]["actor"] == "rita"
    steps = [json.loads(line) for line in files["job_steps.jsonl"].splitlines()]
    assert steps[0]["output"] == {"amount": 420, "currency": "EUR"}
    assert steps[0]["stdout"] == "GET /invoices/42 200\n"


def test_building_the_same_job_twice_gives_identical_bytes(job: Job, admin: Actor) -> None:
    key_init(actor=admin)
    first = pack_render(job_id=job.job_id)
    pack_build(actor=SYSTEM, job_id=job.job_id)  # journals pack_built in between

    second = pack_render(job_id=job.job_id)

    assert second.data == first.data


def test_rebuilding_an_unchanged_job_returns_the_stored_pack_without_a_new_event(job: Job) -> None:
    first = pack_build(actor=SYSTEM, job_id=job.job_id)
    revision = Job.objects.get(pk=job.pk).revision

    second = pack_build(actor=SYSTEM, job_id=job.job_id)

    assert (first.created, second.created) == (True, False)
    assert second.pack.pk == first.pack.pk
    assert Pack.objects.filter(job=job).count() == 1
    assert Job.objects.get(pk=job.pk).revision == revision


def test_building_a_pack_stores_it_and_journals_pack_built_on_the_job(job: Job) -> None:
    built = pack_build(actor=Actor.system("vera"), job_id=job.job_id)

    pack = Pack.objects.get(pk=built.pack.pk)
    assert pack.sha256 == sha256_hex(bytes(pack.data))
    assert pack.size == len(bytes(pack.data))
    assert pack.job_revision == 7
    assert pack.created_by == "vera"
    event = JobEvent.objects.get(job=job, revision=8)
    assert event.type == "pack_built"
    assert event.actor == "vera"
    assert event.payload["pack_id"] == pack.pack_id
    assert event.payload["sha256"] == pack.sha256
    assert chain_verify(Job.objects.get(pk=job.pk)).ok


def test_a_job_that_moved_on_gets_a_new_pack_covering_the_pack_built_event(job: Job) -> None:
    key_init(actor=SYSTEM)
    first = pack_build(actor=SYSTEM, job_id=job.job_id)

    j = Job.objects.get(pk=job.pk)
    event_append(j, type="labelled", actor="otto", reason_code="labelled")

    second = pack_build(actor=SYSTEM, job_id=job.job_id)

    assert second.created and second.pack.pack_id != first.pack.pack_id
    assert second.pack.job_revision == 9  # includes the first pack_built (8) and the new event
    assert pack_verify(source=io.BytesIO(bytes(second.pack.data))).ok


def test_an_empty_job_still_gives_a_verifiable_pack(db: Any) -> None:
    Job.objects.create(job_id="empty-1", status="queued")
    key_init(actor=SYSTEM)

    built = pack_build(actor=SYSTEM, job_id="empty-1")
    result = pack_verify(source=io.BytesIO(bytes(built.pack.data)))

    assert result.ok, result.as_dict()
    assert result.chain["events_checked"] == 0


def test_a_pack_is_never_built_over_a_broken_journal(job: Job) -> None:
    JobEvent.objects.filter(job=job, revision=3).update(payload={"checkpoint_id": "cp_9999"})

    with pytest.raises(Exception) as excinfo:
        pack_build(actor=SYSTEM, job_id=job.job_id)

    assert getattr(excinfo.value, "code", None) == "journal_chain_broken"
    assert not Pack.objects.exists()


def test_building_a_pack_of_an_unknown_job_is_refused(db: Any) -> None:
    with pytest.raises(NotFound) as excinfo:
        pack_build(actor=SYSTEM, job_id="no-such-job")
    assert excinfo.value.code == "job_not_found"


def test_building_needs_the_control_scope_reading_is_not_enough(job: Job) -> None:
    # building stores a row and journals pack_built: a write
    reader = Actor(name="vera", scopes=frozenset({Scope.READ}), kind="user")
    for actor in (Actor(name="nobody"), reader):
        with pytest.raises(Forbidden) as refused:
            pack_build(actor=actor, job_id=job.job_id)
        assert refused.value.details == {"required_scope": "control"}
    assert not Pack.objects.exists()
    assert not JobEvent.objects.filter(job=job, type="pack_built").exists()


def test_pack_get_returns_the_stored_pack_by_pack_id(job: Job) -> None:
    built = pack_build(actor=SYSTEM, job_id=job.job_id)

    assert pack_get(actor=SYSTEM, pack_id=built.pack.pack_id).pk == built.pack.pk
    with pytest.raises(NotFound):
        pack_get(actor=SYSTEM, pack_id="0" * 64)


def test_the_proof_records_chain_over_every_other_entry(job: Job, admin: Actor) -> None:
    key_init(actor=admin)
    files = entries_of(bytes(pack_build(actor=SYSTEM, job_id=job.job_id).pack.data))
    records = [json.loads(line) for line in files["proof_records.jsonl"].split(b"\n")]

    assert [r["event"]["entry_path"] for r in records] == [
        "job_events.jsonl",
        "job_payload.json",
        "job_state.json",
        "job_steps.jsonl",
    ]
    previous = ""
    for record in records:
        assert record["event"]["entry_sha256"] == sha256_hex(files[record["event"]["entry_path"]])
        assert record["integrity"].get("previous_record_hash", "") == previous
        assert record["integrity"]["record_hash"] == spec.proof_record_hash(record)
        assert record["integrity"]["signature"].startswith("base64:")
        previous = record["integrity"]["record_hash"]


def test_a_pack_of_ten_thousand_events_round_trips(db: Any) -> None:
    job = job_with_history("big-1", extra_events=2000)
    key_init(actor=SYSTEM)

    built = pack_build(actor=SYSTEM, job_id=job.job_id)
    result = pack_verify(source=io.BytesIO(bytes(built.pack.data)))

    assert result.ok
    assert result.chain["events_checked"] == 2007


@pytest.mark.django_db(transaction=True)
def test_a_build_outside_any_transaction_reads_one_snapshot_and_verifies() -> None:
    # no test transaction around it: on PostgreSQL this runs the REPEATABLE READ snapshot path
    job = job_with_history("snapshot-1")
    key_init(actor=SYSTEM)

    built = pack_build(actor=SYSTEM, job_id=job.job_id)

    assert built.created
    assert pack_verify(source=io.BytesIO(bytes(built.pack.data))).ok
    assert Job.objects.get(pk=job.pk).revision == 8
