"""`gait pack …` and `gait keys …`: JSON output and the exit codes scripts rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jobs.journal import event_append
from jobs.management.commands.gait import main
from jobs.models import Job
from packs.keys import public_key_pem
from packs.models import Pack
from packs.services import pack_render
from packs.spec import Signer
from tests.packs.helpers import entries_of, job_with_history, reassemble, rezip

pytestmark = pytest.mark.django_db


def gait(capsys: Any, *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


@pytest.fixture
def pack_file(job: Job, tmp_path: Path, capsys: Any) -> Path:
    gait(capsys, "keys", "init")
    code, _ = gait(
        capsys,
        "pack",
        "build",
        "--type",
        "job",
        "--from",
        job.job_id,
        "--out",
        str(tmp_path / "p.zip"),
    )
    assert code == 0
    return tmp_path / "p.zip"


def test_pack_build_writes_the_file_and_reports_the_pack(
    job: Job, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "out" / "refund.zip"

    code, payload = gait(
        capsys, "pack", "build", "--type", "job", "--from", job.job_id, "--out", str(out)
    )

    assert code == 0
    assert payload["ok"] is True
    assert payload["operation"] == "pack_build"
    pack = Pack.objects.get()
    assert payload["pack"]["pack_id"] == pack.pack_id
    assert out.read_bytes() == bytes(pack.data)


def test_pack_build_names_the_file_after_the_pack_by_default(
    job: Job, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    code, payload = gait(capsys, "pack", "build", "--from", job.job_id)

    assert code == 0
    assert (tmp_path / f"pack_{payload['pack']['pack_id']}.zip").exists()


def test_pack_build_of_an_unknown_job_exits_6(db: Any, capsys: Any) -> None:
    code, payload = gait(capsys, "pack", "build", "--type", "job", "--from", "nope")
    assert (code, payload["error_code"]) == (6, "job_not_found")


def test_pack_build_of_another_pack_type_exits_6(job: Job, capsys: Any) -> None:
    code, payload = gait(capsys, "pack", "build", "--type", "run", "--from", job.job_id)
    assert (code, payload["error_code"]) == (6, "pack_type_unsupported")


def test_pack_verify_exits_0_for_a_good_pack(pack_file: Path, capsys: Any) -> None:
    code, payload = gait(capsys, "pack", "verify", str(pack_file), "--require-signature")

    assert code == 0
    assert payload["ok"] is True
    assert payload["signature_status"] == "verified"
    for field in (
        "pack_id",
        "pack_type",
        "source_ref",
        "files_checked",
        "missing_files",
        "hash_mismatches",
        "undeclared_files",
        "signatures_valid",
        "chain_ok",
    ):
        assert field in payload


def test_pack_verify_exits_2_for_a_tampered_pack(pack_file: Path, capsys: Any) -> None:
    files = entries_of(pack_file.read_bytes())
    files["job_payload.json"] = files["job_payload.json"].replace(b"completed", b"cancelled")
    pack_file.write_bytes(rezip(files))

    code, payload = gait(capsys, "pack", "verify", str(pack_file))

    assert code == 2
    assert payload["ok"] is False
    assert payload["hash_mismatches"][0]["path"] == "job_payload.json"


def test_pack_verify_exits_2_for_a_stripped_signature_unless_allow_unsigned(
    pack_file: Path, capsys: Any
) -> None:
    pack_file.write_bytes(reassemble(entries_of(pack_file.read_bytes())))

    code, payload = gait(capsys, "pack", "verify", str(pack_file))
    assert code == 2 and payload["ok"] is False
    assert payload["signature_status"] == "missing"
    assert "pack_unsigned" in payload["summary"]
    assert gait(capsys, "pack", "verify", str(pack_file), "--require-signature")[0] == 2
    code, payload = gait(capsys, "pack", "verify", str(pack_file), "--allow-unsigned")
    assert code == 0 and payload["accepted_unsigned"] is True
    assert payload["summary"].startswith("ACCEPTED UNSIGNED (unsigned, accepted because")
    code, payload = gait(
        capsys, "pack", "verify", str(pack_file), "--allow-unsigned", "--require-signature"
    )
    assert code == 6 and payload["error_code"] == "verify_options_conflict"


def test_pack_verify_trusts_a_public_key_file(job: Job, tmp_path: Path, capsys: Any) -> None:
    outside = Ed25519PrivateKey.generate()
    (tmp_path / "pub.pem").write_text(public_key_pem(outside.public_key()))
    (tmp_path / "p.zip").write_bytes(pack_render(job_id=job.job_id, signer=Signer.of(outside)).data)

    assert gait(capsys, "pack", "verify", str(tmp_path / "p.zip"), "--require-signature")[0] == 2
    code, payload = gait(
        capsys,
        "pack",
        "verify",
        str(tmp_path / "p.zip"),
        "--require-signature",
        "--public-key",
        str(tmp_path / "pub.pem"),
    )
    assert code == 0, payload
    assert payload["signature_status"] == "verified"


def test_pack_verify_exits_6_for_bad_input(tmp_path: Path, capsys: Any, db: Any) -> None:
    (tmp_path / "note.txt").write_text("not a zip")

    assert (
        gait(capsys, "pack", "verify", str(tmp_path / "missing.zip"))[1]["error_code"]
        == "pack_file_not_found"
    )
    code, payload = gait(capsys, "pack", "verify", str(tmp_path / "note.txt"))
    assert (code, payload["error_code"]) == (6, "pack_not_a_zip")
    code, payload = gait(
        capsys,
        "pack",
        "verify",
        str(tmp_path / "note.txt"),
        "--public-key",
        str(tmp_path / "nope.pem"),
    )
    assert (code, payload["error_code"]) == (6, "public_key_file_not_found")


def test_pack_verify_without_a_file_is_a_usage_error_exiting_6(capsys: Any) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["pack", "verify", "--json"])
    assert excinfo.value.code == 6


def test_pack_inspect_summarizes_the_pack(pack_file: Path, capsys: Any) -> None:
    code, payload = gait(capsys, "pack", "inspect", str(pack_file))

    assert code == 0
    assert payload["source_ref"] == "refund-42"
    assert payload["job_payload"]["status"] == "completed"
    assert payload["job_lineage"]["event_count"] == 7
    assert payload["job_lineage"]["last_event_type"] == "completed"
    assert [c["checkpoint_id"] for c in payload["job_lineage"]["checkpoint_refs"]] == [
        "cp_0001",
        "cp_0002",
    ]


def test_pack_diff_exits_0_for_identical_packs(
    pack_file: Path, tmp_path: Path, capsys: Any
) -> None:
    copy = tmp_path / "copy.zip"
    copy.write_bytes(pack_file.read_bytes())

    code, payload = gait(capsys, "pack", "diff", str(pack_file), str(copy))

    assert code == 0
    assert payload["identical"] is True
    assert payload["events"]["changed"] == []


def test_pack_diff_exits_2_and_names_the_events_that_differ(
    job: Job, pack_file: Path, tmp_path: Path, capsys: Any
) -> None:
    event_append(Job.objects.get(pk=job.pk), type="labelled", actor="otto", reason_code="labelled")
    later = tmp_path / "later.zip"
    gait(capsys, "pack", "build", "--from", job.job_id, "--out", str(later))

    code, payload = gait(capsys, "pack", "diff", str(pack_file), str(later))

    assert code == 2
    assert payload["ok"] is True and payload["identical"] is False
    assert payload["changed_files"] == ["job_events.jsonl", "job_state.json", "proof_records.jsonl"]
    assert payload["events"]["added"] == [
        {"revision": 8, "type": "pack_built"},
        {"revision": 9, "type": "labelled"},
    ]
    assert payload["events"]["changed"] == [] and payload["events"]["removed"] == []


def test_pack_diff_of_two_jobs_reports_changed_events(db: Any, tmp_path: Path, capsys: Any) -> None:
    job_with_history("a-1")
    job_with_history("a-2")
    gait(capsys, "pack", "build", "--from", "a-1", "--out", str(tmp_path / "a1.zip"))
    gait(capsys, "pack", "build", "--from", "a-2", "--out", str(tmp_path / "a2.zip"))

    code, payload = gait(capsys, "pack", "diff", str(tmp_path / "a1.zip"), str(tmp_path / "a2.zip"))

    assert code == 2
    assert payload["events"]["changed_count"] == 7


def test_keys_cli_init_rotate_list_and_export(db: Any, tmp_path: Path, capsys: Any) -> None:
    code, first = gait(capsys, "keys", "init")
    assert code == 0
    assert gait(capsys, "keys", "init")[1]["error_code"] == "signing_key_exists"
    code, rotated = gait(capsys, "keys", "rotate")
    assert code == 0 and rotated["retired"][0]["key_id"] == first["key"]["key_id"]
    code, listed = gait(capsys, "keys", "list")
    assert [k["status"] for k in listed["keys"]] == ["active", "retired"]
    code, exported = gait(
        capsys, "keys", "export-public", "--format", "pem", "--out", str(tmp_path / "k.pem")
    )
    assert code == 0 and exported["key_id"] == rotated["key"]["key_id"]
    assert (tmp_path / "k.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "private" not in (tmp_path / "k.pem").read_text().lower()


def test_pack_verify_exits_2_for_a_forged_pack(pack_file: Path, capsys: Any) -> None:
    from tests.packs.helpers import forge

    pack_file.write_bytes(forge(entries_of(pack_file.read_bytes())))

    code, payload = gait(capsys, "pack", "verify", str(pack_file))

    assert code == 2 and payload["ok"] is False and payload["chain_ok"] is True
    assert [e["code"] for e in payload["errors"]] == ["pack_unsigned"]
    assert payload["summary"].startswith("FAILED")


def test_pack_diff_compares_content_an_edited_events_file_is_different_and_named(
    pack_file: Path, tmp_path: Path, capsys: Any
) -> None:
    """The user edited job_events.jsonl inside a copy of a pack (the manifest untouched) and
    diffed it against the original: not identical, exit 2, and the edited side fails verification."""
    files = entries_of(pack_file.read_bytes())
    files["job_events.jsonl"] = files["job_events.jsonl"].replace(b'"otto"', b'"mallory"', 1)
    assert b"mallory" in files["job_events.jsonl"]
    edited = tmp_path / "edited.zip"
    edited.write_bytes(rezip(files))

    code, payload = gait(capsys, "pack", "diff", str(pack_file), str(edited))

    assert code == 2
    assert payload["identical"] is False and payload["changed"] is True
    assert payload["manifest_delta"] is False  # the manifests agree: only the content differs
    assert payload["changed_files"] == ["job_events.jsonl"]
    assert payload["events"]["changed_count"] == 1
    assert payload["failing_verification"] == ["right"]
    assert payload["left_verify"]["ok"] is True
    assert payload["right_verify"]["hash_mismatches"] == ["job_events.jsonl"]
    assert "right" in payload["summary"] and "job_events.jsonl" in payload["summary"]

    # and the other way round: which side fails follows the file
    code, payload = gait(capsys, "pack", "diff", str(edited), str(pack_file))
    assert code == 2 and payload["failing_verification"] == ["left"]


def test_pack_diff_of_a_pack_and_its_byte_copy_is_identical_and_both_verify(
    pack_file: Path, tmp_path: Path, capsys: Any
) -> None:
    copy = tmp_path / "copy.zip"
    copy.write_bytes(pack_file.read_bytes())
    code, payload = gait(capsys, "pack", "diff", str(pack_file), str(copy))
    assert code == 0 and payload["identical"] is True
    assert payload["failing_verification"] == [] and payload["summary"] == "identical"
