"""Opening untrusted zips: refuse hostile archives before reading them, then stream entries.

Everything a pack verifier reads comes through ``zip_open``. It refuses, each with its own
reason code and before any entry is decompressed: files that are not zips, archives that are too
big, too many entries (counted from the end-of-central-directory record, before the directory is
parsed), duplicate names, absolute or ``..`` paths, symlinks and other non-regular files,
encrypted entries, compression methods other than stored/deflate, entries whose declared size or
compression ratio is out of bounds. Reading then streams through ``SafeZip.open``, which
decompresses with a cap: an entry that inflates past its declared size (a zip bomb lying in its
directory) is refused the moment it does, so nothing is ever held in memory whole.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings

from gaitweb.lib import reasons
from gaitweb.lib.errors import InvalidInput

CHUNK = 1024 * 1024
MiB = 1024 * 1024


@dataclass(frozen=True)
class ZipLimits:
    max_archive_bytes: int = 1024 * MiB
    max_entries: int = 256
    max_entry_bytes: int = 1024 * MiB
    max_total_bytes: int = 2048 * MiB
    # deflate tops out near 1032:1; JSON journals compress about 10-30:1. The ratio is only
    # checked for entries above ``ratio_floor_bytes``: a tiny file may compress very well.
    max_ratio: float = 250.0
    ratio_floor_bytes: int = 1 * MiB

    @classmethod
    def from_settings(cls) -> ZipLimits:
        """Operators may tune the limits with GAIT["PACK_MAX_*"] keys (docs/packs.md)."""
        conf = getattr(settings, "GAIT", {})
        base = cls()
        return cls(
            max_archive_bytes=int(conf.get("PACK_MAX_ARCHIVE_BYTES", base.max_archive_bytes)),
            max_entries=int(conf.get("PACK_MAX_ENTRIES", base.max_entries)),
            max_entry_bytes=int(conf.get("PACK_MAX_ENTRY_BYTES", base.max_entry_bytes)),
            max_total_bytes=int(conf.get("PACK_MAX_TOTAL_BYTES", base.max_total_bytes)),
            max_ratio=float(conf.get("PACK_MAX_RATIO", base.max_ratio)),
            ratio_floor_bytes=int(conf.get("PACK_RATIO_FLOOR_BYTES", base.ratio_floor_bytes)),
        )


def _refuse(code: str, message: str, **details: Any) -> InvalidInput:
    return InvalidInput(
        code, message, details=details, hint="the file is not a pack gaitweb will read"
    )


class _CappedEntry(io.RawIOBase):
    """A decompressing reader that refuses to yield more than the entry's declared size and
    checks the CRC itself (zipfile's own check would fire first and hide an oversize entry)."""

    def __init__(self, raw: IO[bytes], name: str, declared: int, crc: int) -> None:
        self._raw = raw
        self._name = name
        self._declared = declared
        self._expected_crc = crc
        self._crc = 0
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._raw.read(len(view))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise _refuse(
                reasons.ZIP_ENTRY_CORRUPT,
                f"entry {self._name!r} is corrupt: {exc}",
                entry=self._name,
            ) from None
        n = len(data)
        self.count += n
        if self.count > self._declared:
            raise _refuse(
                reasons.ZIP_ENTRY_SIZE_MISMATCH,
                f"entry {self._name!r} inflates past its declared size of {self._declared} bytes",
                entry=self._name,
                declared_bytes=self._declared,
            )
        if n == 0 and len(view) > 0:
            if self.count != self._declared or self._crc != self._expected_crc:
                raise _refuse(
                    reasons.ZIP_ENTRY_CORRUPT,
                    f"entry {self._name!r} is corrupt: {self.count} of {self._declared} bytes, CRC mismatch",
                    entry=self._name,
                )
            return 0
        self._crc = zlib.crc32(data, self._crc)
        view[:n] = data
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class SafeZip:
    """A zip that passed the structural checks; entries are read only by streaming."""

    def __init__(
        self, zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], owned: IO[bytes] | None
    ) -> None:
        self._zf = zf
        self.infos = infos
        self._owned = owned

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zf.close()
        if self._owned is not None:
            self._owned.close()

    @property
    def names(self) -> list[str]:
        return sorted(self.infos)

    def open(self, name: str) -> io.BufferedReader:
        info = self.infos[name]
        # Let zipfile inflate one byte past the declared size, so a lying directory shows up as
        # ``zip_entry_size_mismatch`` instead of a silently truncated read.
        probe = copy.copy(info)
        probe.file_size = info.file_size + 1
        probe.CRC = None  # type: ignore[assignment]  # _CappedEntry checks it once the size is honest
        try:
            raw = self._zf.open(probe)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise _refuse(
                reasons.ZIP_ENTRY_CORRUPT, f"entry {name!r} cannot be opened: {exc}", entry=name
            ) from None
        return io.BufferedReader(
            _CappedEntry(raw, name, info.file_size, info.CRC), buffer_size=CHUNK
        )

    def chunks(self, name: str) -> Iterator[bytes]:
        with self.open(name) as fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    def sha256(self, name: str) -> str:
        hasher = hashlib.sha256()
        for chunk in self.chunks(name):
            hasher.update(chunk)
        return hasher.hexdigest()

    def read(
        self, name: str, *, max_bytes: int, code: str = reasons.PACK_DOCUMENT_TOO_LARGE
    ) -> bytes:
        """A small document (manifest, payload, state) whole, refusing anything over ``max_bytes``."""
        size = self.infos[name].file_size
        if size > max_bytes:
            raise _refuse(
                code,
                f"{name} is {size} bytes; at most {max_bytes} are read",
                entry=name,
                max_bytes=max_bytes,
            )
        with self.open(name) as fh:
            return fh.read()


def _source_size(fh: IO[bytes]) -> int:
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(0)
    return size


def _declared_entry_count(fh: IO[bytes]) -> int:
    """The entry count from the end-of-central-directory record, read before zipfile builds
    one object per entry (a hostile directory could hold millions)."""
    # zipfile._EndRecData is private but has been stable since Python 2; it finds the EOCD
    # (and the zip64 one) exactly as ZipFile is about to.
    end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]
    if end is None:
        raise _refuse(reasons.PACK_NOT_A_ZIP, "the file is not a zip archive")
    return int(end[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]


def _path_problem(name: str) -> tuple[str, str] | None:
    if "\x00" in name:
        return "zip_unsafe_path", "contains a NUL byte"
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        return "zip_absolute_path", "is an absolute path"
    if any(part == ".." for part in normalized.split("/")):
        return "zip_path_traversal", "climbs out of the archive with '..'"
    if normalized == "" or normalized.startswith("./") or "//" in normalized:
        return "zip_unsafe_path", "is not a plain relative path"
    return None


def _check_entries(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> dict[str, zipfile.ZipInfo]:
    seen: dict[str, zipfile.ZipInfo] = {}
    folded: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        # orig_filename keeps what the directory said; zipfile rewrites "\" to "/" on Windows only
        problem = _path_problem(info.orig_filename) or _path_problem(name)
        if problem:
            code, why = problem
            raise _refuse(code, f"entry {name!r} {why}", entry=name)
        key = name.casefold()
        if name in seen or key in folded:
            raise _refuse(
                reasons.ZIP_DUPLICATE_ENTRY, f"entry {name!r} appears more than once", entry=name
            )
        mode = info.external_attr >> 16
        if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            code = "zip_symlink_entry" if stat.S_ISLNK(mode) else "zip_special_file"
            raise _refuse(code, f"entry {name!r} is not a regular file", entry=name, mode=oct(mode))
        if info.flag_bits & 0x1:
            raise _refuse(reasons.ZIP_ENCRYPTED_ENTRY, f"entry {name!r} is encrypted", entry=name)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _refuse(
                reasons.ZIP_UNSUPPORTED_COMPRESSION,
                f"entry {name!r} uses compression method {info.compress_type}; packs use deflate",
                entry=name,
            )
        if info.file_size > limits.max_entry_bytes:
            raise _refuse(
                reasons.ZIP_ENTRY_TOO_LARGE,
                f"entry {name!r} declares {info.file_size} bytes; the limit is {limits.max_entry_bytes}",
                entry=name,
                declared_bytes=info.file_size,
                max_bytes=limits.max_entry_bytes,
            )
        if info.file_size > limits.ratio_floor_bytes:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise _refuse(
                    reasons.ZIP_COMPRESSION_RATIO,
                    f"entry {name!r} inflates {ratio:.0f}:1; the limit is {limits.max_ratio:.0f}:1",
                    entry=name,
                    ratio=round(ratio, 1),
                    max_ratio=limits.max_ratio,
                )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise _refuse(
                reasons.ZIP_TOTAL_TOO_LARGE,
                f"entries declare more than {limits.max_total_bytes} bytes in total",
                max_bytes=limits.max_total_bytes,
            )
        seen[name] = info
        folded.add(key)
    return seen


def zip_open(source: str | Path | IO[bytes], *, limits: ZipLimits | None = None) -> SafeZip:
    """Open ``source`` (a path or a seekable binary file) as an untrusted zip.

    Raises ``InvalidInput`` with the refusal's reason code; nothing is decompressed until the
    caller reads an entry through the returned ``SafeZip``."""
    limits = limits or ZipLimits.from_settings()
    owned: IO[bytes] | None = None
    if isinstance(source, str | Path):
        try:
            owned = open(source, "rb")  # noqa: SIM115 - SafeZip closes it
        except FileNotFoundError:
            raise InvalidInput(
                reasons.PACK_FILE_NOT_FOUND,
                f"no such file: {source}",
                details={"path": str(source)},
            ) from None
        except OSError as exc:
            raise InvalidInput(
                reasons.PACK_FILE_UNREADABLE,
                f"cannot read {source}: {exc}",
                details={"path": str(source)},
            ) from None
        fh: IO[bytes] = owned
    else:
        fh = source
    try:
        size = _source_size(fh)
        if size > limits.max_archive_bytes:
            raise _refuse(
                reasons.ZIP_ARCHIVE_TOO_LARGE,
                f"the archive is {size} bytes; the limit is {limits.max_archive_bytes}",
                size_bytes=size,
                max_bytes=limits.max_archive_bytes,
            )
        count = _declared_entry_count(fh)
        if count > limits.max_entries:
            raise _refuse(
                reasons.ZIP_TOO_MANY_ENTRIES,
                f"the archive declares {count} entries; the limit is {limits.max_entries}",
                entries=count,
                max_entries=limits.max_entries,
            )
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as exc:
            raise _refuse(
                reasons.PACK_NOT_A_ZIP, f"the file is not a readable zip archive: {exc}"
            ) from None
        infos = zf.infolist()
        if len(infos) > limits.max_entries:  # the EOCD count and the directory disagree
            zf.close()
            raise _refuse(
                reasons.ZIP_TOO_MANY_ENTRIES,
                f"the archive holds {len(infos)} entries",
                entries=len(infos),
                max_entries=limits.max_entries,
            )
        try:
            checked = _check_entries(infos, limits)
        except InvalidInput:
            zf.close()
            raise
    except BaseException:
        if owned is not None:
            owned.close()
        raise
    return SafeZip(zf, checked, owned)
