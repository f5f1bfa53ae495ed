"""Hostile archives are refused before they are read in full, each with its own reason code."""

from __future__ import annotations

import io
import stat
import struct
import warnings
import zipfile
from typing import Any

import pytest

from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import InvalidInput
from jobs.models import Job
from packs.services import pack_build, pack_diff, pack_inspect, pack_verify
from packs.zipsafe import zip_open

pytestmark = pytest.mark.django_db


def make_zip(
    *entries: tuple[str | zipfile.ZipInfo, bytes], compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names, which we want
        with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buffer.getvalue()


def refusal(data: bytes) -> str:
    with pytest.raises(InvalidInput) as excinfo:
        pack_verify(source=io.BytesIO(data))
    return excinfo.value.code


def test_a_file_that_is_not_a_zip_is_refused() -> None:
    assert refusal(b"this is not a zip, it is a note") == "pack_not_a_zip"


def test_an_empty_file_is_refused() -> None:
    assert refusal(b"") == "pack_not_a_zip"


def test_a_truncated_zip_is_refused(job: Job) -> None:
    data = bytes(pack_build(actor=_system(), job_id=job.job_id).pack.data)
    assert refusal(data[: len(data) // 2]) == "pack_not_a_zip"


def test_duplicate_entry_names_are_refused() -> None:
    assert (
        refusal(make_zip(("job_state.json", b"{}"), ("job_state.json", b'{"evil":1}')))
        == "zip_duplicate_entry"
    )


def test_names_that_differ_only_in_case_are_refused() -> None:
    assert (
        refusal(make_zip(("job_state.json", b"{}"), ("JOB_STATE.json", b"{}")))
        == "zip_duplicate_entry"
    )


def test_an_absolute_path_is_refused() -> None:
    assert refusal(make_zip((zipfile.ZipInfo("/etc/cron.d/evil"), b"x"))) == "zip_absolute_path"


def test_a_windows_drive_path_is_refused() -> None:
    assert refusal(make_zip((zipfile.ZipInfo("C:/evil.txt"), b"x"))) == "zip_absolute_path"


def test_a_dot_dot_path_is_refused() -> None:
    assert refusal(make_zip(("../../home/user/.bashrc", b"x"))) == "zip_path_traversal"


def test_a_backslash_dot_dot_path_is_refused() -> None:
    assert refusal(make_zip(("evil\\..\\..\\x", b"x"))) == "zip_path_traversal"


def test_a_symlink_entry_is_refused() -> None:
    link = zipfile.ZipInfo("job_state.json")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    assert refusal(make_zip((link, b"/etc/passwd"))) == "zip_symlink_entry"


def test_too_many_entries_are_refused_before_the_directory_is_parsed() -> None:
    data = make_zip(*[(f"f{i}.txt", b"") for i in range(300)])
    assert refusal(data) == "zip_too_many_entries"


def test_an_entry_declaring_too_many_bytes_is_refused(settings: Any) -> None:
    settings.GAIT = {**settings.GAIT, "PACK_MAX_ENTRY_BYTES": 1000}
    assert refusal(make_zip(("job_events.jsonl", b"x" * 1001))) == "zip_entry_too_large"


def test_entries_declaring_too_many_bytes_in_total_are_refused(settings: Any) -> None:
    settings.GAIT = {**settings.GAIT, "PACK_MAX_TOTAL_BYTES": 1500}
    assert (
        refusal(make_zip(("a.json", b"x" * 1000), ("b.json", b"y" * 1000))) == "zip_total_too_large"
    )


def test_an_archive_over_the_size_limit_is_refused(settings: Any) -> None:
    settings.GAIT = {**settings.GAIT, "PACK_MAX_ARCHIVE_BYTES": 100}
    assert refusal(make_zip(("a.json", b"x" * 1000))) == "zip_archive_too_large"


def test_a_zip_bomb_is_refused_by_its_compression_ratio() -> None:
    # 32 MiB of zeros deflate to about 32 KiB: a 1000:1 ratio
    assert (
        refusal(make_zip(("job_events.jsonl", bytes(32 * 1024 * 1024)))) == "zip_compression_ratio"
    )


def _shrink_declared_size(data: bytes, name: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size an entry declares, in the local header and the directory."""
    out = bytearray(data)
    local = out.find(b"PK\x03\x04")
    while local != -1:
        name_len = struct.unpack_from("<H", out, local + 26)[0]
        if bytes(out[local + 30 : local + 30 + name_len]) == name:
            struct.pack_into("<I", out, local + 22, size)
        local = out.find(b"PK\x03\x04", local + 4)
    central = out.find(b"PK\x01\x02")
    while central != -1:
        name_len = struct.unpack_from("<H", out, central + 28)[0]
        if bytes(out[central + 46 : central + 46 + name_len]) == name:
            struct.pack_into("<I", out, central + 24, size)
        central = out.find(b"PK\x01\x02", central + 4)
    return bytes(out)


def test_an_entry_that_inflates_past_its_declared_size_is_refused_while_streaming() -> None:
    # honest ratio in the directory (100 bytes declared), 5 MiB actually inside
    body = b"".join(b"%08d event\n" % i for i in range(300_000))
    data = _shrink_declared_size(
        make_zip(("job_events.jsonl", body), ("pack_manifest.json", b"{}")),
        b"job_events.jsonl",
        100,
    )
    with zip_open(io.BytesIO(data)) as zf:
        with pytest.raises(InvalidInput) as excinfo:
            zf.sha256("job_events.jsonl")
    assert excinfo.value.code == "zip_entry_size_mismatch"


def test_an_entry_whose_bytes_were_flipped_is_corrupt() -> None:
    data = bytearray(
        make_zip(
            ("job_state.json", b"stored, not deflated: every byte counts"),
            compression=zipfile.ZIP_STORED,
        )
    )
    data[data.find(b"every")] ^= 0x20  # same size, different content, stale CRC
    with zip_open(io.BytesIO(bytes(data))) as zf:
        with pytest.raises(InvalidInput) as excinfo:
            zf.sha256("job_state.json")
    assert excinfo.value.code == "zip_entry_corrupt"


def test_an_encrypted_entry_is_refused() -> None:
    data = bytearray(make_zip(("job_state.json", b"{}")))
    # set bit 0 (encrypted) of the general purpose flags in the local header and the directory
    data[data.find(b"PK\x03\x04") + 6] |= 0x1
    data[data.find(b"PK\x01\x02") + 8] |= 0x1
    assert refusal(bytes(data)) == "zip_encrypted_entry"


def test_a_compression_method_other_than_deflate_is_refused() -> None:
    assert (
        refusal(make_zip(("job_state.json", b"{}"), compression=zipfile.ZIP_BZIP2))
        == "zip_unsupported_compression"
    )


def test_inspect_and_diff_refuse_hostile_zips_too(tmp_path: Any) -> None:
    bomb = make_zip(("../x", b"x"))
    with pytest.raises(InvalidInput) as excinfo:
        pack_inspect(source=io.BytesIO(bomb))
    assert excinfo.value.code == "zip_path_traversal"
    with pytest.raises(InvalidInput) as excinfo:
        pack_diff(left=io.BytesIO(bomb), right=io.BytesIO(bomb))
    assert excinfo.value.code == "zip_path_traversal"


def _system() -> Any:
    return Actor.system("tester")
