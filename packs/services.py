"""Evidence packs (docs/packs.md): build, verify, inspect and diff PackSpec v1 job packs.

The byte format lives in packs/spec.py, hostile-zip handling in packs/zipsafe.py, keys in
packs/keys.py; this module ties them to jobs and the database. The CLI, the API and the
dashboard call these functions and nothing below them.

What a pack covers: the job's journal up to its last event that is not ``pack_built``. Building
a pack journals a ``pack_built`` event, so without that rule a second build would always differ
from the first; with it, building an unchanged job twice yields the same bytes, and the second
build returns the stored pack instead of writing a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import connection, transaction

from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.canonical import ZERO_HASH, canonical_json, iso_utc, sha256_hex
from gaitweb.lib.errors import Conflict, InvalidInput
from gaitweb.lib.parsing import PACK_JSON_MAX_DEPTH, json_loads
from jobs.journal import ChainReport, chain_check, event_append
from jobs.models import Checkpoint, Job, JobEvent, StepRun
from jobs.selectors import job_get
from packs import spec
from packs.keys import signer_active, trusted_public_keys
from packs.models import Pack
from packs.spec import Entry, Signer
from packs.zipsafe import SafeZip, zip_open

PACK_BUILT = "pack_built"
PACK_TYPE_JOB = "job"
EVENTS_PATH = "job_events.jsonl"
PAYLOAD_PATH = "job_payload.json"
STATE_PATH = "job_state.json"
STEPS_PATH = "job_steps.jsonl"
JOB_REQUIRED = (EVENTS_PATH, PAYLOAD_PATH, STATE_PATH)
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
DOCUMENT_MAX_BYTES = 64 * 1024 * 1024
EVENT_LINE_MAX_BYTES = 16 * 1024 * 1024
DIFF_LIST_MAX = 100

Source = str | Path | IO[bytes]


@lru_cache(maxsize=1)
def producer_version() -> str:
    try:
        return "gaitweb-" + metadata.version("gaitweb")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "gaitweb-0.0.0-dev"


# --- build --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedPack:
    manifest: dict[str, Any]
    data: bytes
    job_revision: int

    @property
    def pack_id(self) -> str:
        return str(self.manifest["pack_id"])

    @cached_property
    def sha256(self) -> str:
        # cached: a pack can be megabytes, and pack_build reads this twice under the row lock
        return sha256_hex(self.data)

    @property
    def key_id(self) -> str:
        sigs = self.manifest.get("signatures") or []
        return str(sigs[0]["key_id"]) if sigs else ""


@dataclass(frozen=True)
class PackBuildResult:
    pack: Pack
    created: bool
    manifest: dict[str, Any]


def _covered_revision(job: Job) -> int:
    last = (
        JobEvent.objects.filter(job=job)
        .exclude(type=PACK_BUILT)
        .order_by("-revision")
        .values_list("revision", flat=True)
        .first()
    )
    return int(last or 0)


_EVENT_FIELDS = (
    "revision",
    "type",
    "actor",
    "reason_code",
    "payload",
    "created_at",
    "prev_hash",
    "hash",
)


def _hash_member(value: str) -> bytes:
    return b'"hash":"' + value.encode() + b'",'


def _render_events(job: Job, upto: int) -> tuple[bytes, dict[str, Any]]:
    """``job_events.jsonl`` and what the state needs from the journal (head, approvals).

    The chain is checked while rendering, without hashing each event a second time: in JCS the
    members are sorted, ``hash`` sits between ``created_at`` and ``job_id``, so removing the
    ``"hash":"…",`` member from the canonical line leaves exactly the canonical bytes that were
    hashed. A pack is never built (or signed) over a broken journal."""
    lines: list[bytes] = []
    prev = ZERO_HASH
    expected = 1
    head: Any = None
    approvals: list[dict[str, Any]] = []
    query = (
        JobEvent.objects.filter(job=job, revision__lte=upto)
        .order_by("revision")
        .values_list(*_EVENT_FIELDS, named=True)
    )
    for ev in query.iterator(chunk_size=2000):
        # JobEvent.record is the one definition of the hashed fields; it only reads
        # attributes, so it runs on a row tuple and saves building 10,000 model instances.
        record = JobEvent.record(ev, job.job_id)  # type: ignore[arg-type]
        record["hash"] = ev.hash
        line = spec.jcs(record)
        body = line.replace(_hash_member(ev.hash), b"", 1)
        if ev.revision != expected or ev.prev_hash != prev or sha256_hex(body) != ev.hash:
            raise Conflict(
                reasons.JOURNAL_CHAIN_BROKEN,
                f"the journal of {job.job_id} is broken at revision {expected}; no pack was built",
                details={"job_id": job.job_id, "revision": expected},
            )
        lines.append(line + b"\n")
        if ev.type == "approved":
            approvals.append(
                {
                    "created_at": record["created_at"],
                    "actor": ev.actor,
                    "reason": str((ev.payload or {}).get("reason", "")),
                }
            )
        prev = ev.hash
        expected += 1
        head = ev
    if expected - 1 != upto:
        raise Conflict(
            reasons.JOURNAL_CHAIN_BROKEN,
            f"the journal of {job.job_id} has {expected - 1} events, expected {upto}",
            details={"job_id": job.job_id, "revision": expected},
        )
    return b"".join(lines), {
        "head_hash": head.hash if head else "",
        "head_at": iso_utc(head.created_at) if head else None,
        "approvals": approvals,
    }


def _checkpoint_record(cp: Checkpoint) -> dict[str, Any]:
    # Gait's checkpoint shape (required_action and actor omitted when empty) plus the revision
    # of the event that recorded it.
    rec: dict[str, Any] = {
        "checkpoint_id": cp.checkpoint_id,
        "created_at": iso_utc(cp.created_at),
        "type": cp.type,
        "summary": cp.summary,
        "reason_code": cp.reason_code,
        "revision": cp.event_revision,
    }
    if cp.required_action:
        rec["required_action"] = cp.required_action
    if cp.actor:
        rec["actor"] = cp.actor
    return rec


def _step_record(run: StepRun) -> dict[str, Any]:
    return {
        "step_index": run.step_index,
        "step_name": run.step_name,
        "attempt": run.attempt,
        "status": run.status,
        "idempotency_key": run.idempotency_key,
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "stdout": run.stdout,
        "stderr": run.stderr,
        "worker": run.worker,
        "started_at": iso_utc(run.started_at),
        "finished_at": iso_utc(run.finished_at),
    }


def _job_documents(
    job: Job, upto: int, journal: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(job_payload.json, job_state.json). Both follow Gait's schemas (gait.pack.job,
    gait.job.runtime); gaitweb's own fields sit under ``gaitweb`` in the state."""
    checkpoints = [
        _checkpoint_record(cp)
        for cp in Checkpoint.objects.filter(job=job, event_revision__lte=upto).order_by(
            "checkpoint_id"
        )
    ]
    created_at = iso_utc(job.created_at)
    common = {
        "job_id": job.job_id,
        "status": job.status,
        # Gait requires these three to be non-empty
        "stop_reason": job.stop_reason or "none",
        "status_reason_code": job.status_reason_code or "none",
        "environment_fingerprint": job.environment_fingerprint or "unknown",
    }
    payload = {
        "schema_id": "gait.pack.job",
        "schema_version": "1.0.0",
        "created_at": created_at,
        **common,
        "checkpoint_count": len(checkpoints),
        "approval_count": len(journal["approvals"]),
    }
    state = {
        "schema_id": "gait.job.runtime",
        "schema_version": "1.0.0",
        "created_at": created_at,
        # the covered head's time, not job.updated_at: a pack_built event moves the latter
        "updated_at": journal["head_at"] or created_at,
        "producer_version": producer_version(),
        **common,
        "revision": upto,
        "last_event_hash": journal["head_hash"],
        "checkpoints": checkpoints,
        "approvals": journal["approvals"],
        "gaitweb": {
            "identity": job.identity,
            "policy_digest": job.policy_digest,
            "policy_ref": job.policy_ref,
            "spec": job.spec,
            "cursor": job.cursor,
            "step_count": job.step_count,
            "labels": job.labels,
            "outputs": job.outputs,
            "created_by": job.created_by,
            "started_at": iso_utc(job.started_at),
            "finished_at": iso_utc(job.finished_at),
            "stopped_at": iso_utc(job.stopped_at),
            "stopped_by": job.stopped_by,
            "deadline": iso_utc(job.deadline),
            "parent": job.parent.job_id if job.parent_id and job.parent else None,
            "retry_of": job.retry_of.job_id if job.retry_of_id and job.retry_of else None,
        },
    }
    return payload, state


def _render_entries(job: Job) -> tuple[list[Entry], int]:
    """The pack's documents and the revision they cover: everything read from the database."""
    upto = _covered_revision(job)
    events, journal = _render_events(job, upto)
    payload, state = _job_documents(job, upto, journal)
    steps = spec.jsonl(
        _step_record(r)
        for r in StepRun.objects.filter(job=job).order_by("step_index", "attempt", "id")
    )
    entries = [
        Entry(EVENTS_PATH, events),
        Entry(PAYLOAD_PATH, spec.jcs(payload)),
        Entry(STATE_PATH, spec.jcs(state)),
        Entry(STEPS_PATH, steps),
    ]
    return entries, upto


def pack_render(
    *, job_id: str, signer: Signer | None = None, use_active_key: bool = True
) -> RenderedPack:
    """The pack of a job as bytes, without storing or journaling anything. It reads any job:
    callers acting for someone check first that they may see it (``pack_build`` does).

    Reads the job, its journal, checkpoints and step runs from one snapshot: on PostgreSQL a
    REPEATABLE READ transaction (no locks held while rendering), on SQLite the transaction
    itself. Zipping and signing run after that transaction has ended."""
    if signer is None and use_active_key:
        signer = signer_active()
    outermost = not connection.in_atomic_block
    if outermost and connection.vendor == "postgresql":
        # SET TRANSACTION must be the transaction's first statement: run Django's connection
        # health check (a SELECT 1) now rather than inside the block.
        connection.close_if_health_check_failed()
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        job = job_get(actor=None, job_id=job_id)  # pack_build checked who may
        entries, upto = _render_entries(job)
    manifest, data = spec.pack_assemble(
        pack_type=PACK_TYPE_JOB,
        source_ref=job.job_id,
        producer_version=producer_version(),
        entries=entries,
        signer=signer,
    )
    return RenderedPack(manifest=manifest, data=data, job_revision=upto)


def pack_build(*, actor: Actor, job_id: str) -> PackBuildResult:
    """Build, store and journal the evidence pack of a job.

    Rendering happens outside any lock; then one short transaction locks the job row, stores the
    Pack and appends ``pack_built``. Rebuilding an unchanged job returns the stored pack
    (``created`` False) and writes nothing.

    Building is a write (a stored row and a journal event), so it takes the ``control`` scope,
    as the other writes to a job that are not its own work do: viewers and reviewers read and
    download packs, operators, integrators and admins build them (docs/security.md)."""
    actor.require(Scope.CONTROL)
    job_get(actor=actor, job_id=job_id)  # another identity's job: 404 before any work
    rendered = pack_render(job_id=job_id)
    sha256 = rendered.sha256  # hash before taking the row lock
    with transaction.atomic():
        job = job_get(actor=actor, job_id=job_id, for_update=True)
        existing = Pack.objects.filter(job=job, sha256=sha256).first()
        if existing is not None:
            return PackBuildResult(pack=existing, created=False, manifest=rendered.manifest)
        pack = Pack.objects.create(
            pack_id=rendered.pack_id,
            job=job,
            job_revision=rendered.job_revision,
            sha256=sha256,
            size=len(rendered.data),
            key_id=rendered.key_id,
            data=rendered.data,
            created_by=actor.name[:256],
        )
        event_append(
            job,
            type=PACK_BUILT,
            actor=actor.name,
            reason_code=PACK_BUILT,
            payload={
                "pack_id": pack.pack_id,
                "sha256": pack.sha256,
                "size": pack.size,
                "key_id": pack.key_id,
                "job_revision": pack.job_revision,
            },
        )
    return PackBuildResult(pack=pack, created=True, manifest=rendered.manifest)


def pack_as_dict(pack: Pack) -> dict[str, Any]:
    return {
        "pack_id": pack.pack_id,
        "job_id": pack.job.job_id,
        "job_revision": pack.job_revision,
        "sha256": pack.sha256,
        "size": pack.size,
        "key_id": pack.key_id,
        "created_by": pack.created_by,
        "created_at": iso_utc(pack.created_at),
    }


def spec_is_sha256(value: Any) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


# --- reading a pack -----------------------------------------------------------------------------


class _Problems:
    """Verification findings that are not file-level (those have their own result fields)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, code: str, message: str, **details: Any) -> None:
        item: dict[str, Any] = {"code": code, "message": message}
        if details:
            item["details"] = details
        self.items.append(item)


def _json(data: bytes, what: str) -> Any:
    """A JSON document of the pack: hostile nesting is a finding, never a RecursionError."""
    return json_loads(data, what=what, max_depth=PACK_JSON_MAX_DEPTH)


def _json_document(zf: SafeZip, name: str, *, max_bytes: int = DOCUMENT_MAX_BYTES) -> Any:
    data = zf.read(name, max_bytes=max_bytes)
    try:
        return _json(data, name)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _DocumentInvalid(f"{name} is not JSON: {exc}") from None
    except InvalidInput as exc:  # json_too_deep
        raise _DocumentInvalid(exc.message) from None


class _DocumentInvalid(Exception):
    pass


def _manifest_problems(manifest: Any) -> list[str]:
    """Gait's parsePackManifest rules."""
    if not isinstance(manifest, dict):
        return ["the manifest is not a JSON object"]
    out = []
    if manifest.get("schema_id") != spec.MANIFEST_SCHEMA_ID:
        out.append(f"schema_id must be {spec.MANIFEST_SCHEMA_ID}")
    if manifest.get("schema_version") != spec.MANIFEST_SCHEMA_VERSION:
        out.append(f"schema_version must be {spec.MANIFEST_SCHEMA_VERSION}")
    if not isinstance(manifest.get("source_ref"), str) or not manifest["source_ref"].strip():
        out.append("source_ref is required")
    if not isinstance(manifest.get("created_at"), str) or not manifest["created_at"]:
        out.append("created_at is required")
    if (
        not isinstance(manifest.get("producer_version"), str)
        or not manifest["producer_version"].strip()
    ):
        out.append("producer_version is required")
    if not spec_is_sha256(str(manifest.get("pack_id", "")).lower()):
        out.append("pack_id must be sha256 hex")
    contents = manifest.get("contents")
    if not isinstance(contents, list):
        out.append("contents must be a list")
    else:
        seen: set[str] = set()
        for entry in contents:
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("path"), str)
                or not entry["path"].strip()
            ):
                out.append("every contents entry needs a path")
                continue
            if not spec_is_sha256(str(entry.get("sha256", "")).lower()):
                out.append(f"contents entry {entry['path']!r}: sha256 must be sha256 hex")
            if not isinstance(entry.get("type"), str) or not entry["type"].strip():
                out.append(f"contents entry {entry['path']!r}: type is required")
            if entry["path"] in seen or entry["path"] == spec.MANIFEST_PATH:
                out.append(
                    f"contents entry {entry['path']!r} is declared twice or names the manifest"
                )
            seen.add(entry["path"])
    signatures = manifest.get("signatures", [])
    if not isinstance(signatures, list) or not all(isinstance(s, dict) for s in signatures):
        out.append("signatures must be a list of objects")
    return out


# --- verify ---------------------------------------------------------------------------------------


@dataclass
class PackVerifyResult:
    ok: bool = False
    pack_id: str = ""
    pack_type: str = ""
    source_ref: str = ""
    files_checked: int = 0
    missing_files: list[str] = field(default_factory=list)
    hash_mismatches: list[dict[str, str]] = field(default_factory=list)
    undeclared_files: list[str] = field(default_factory=list)
    signature_status: str = "missing"  # missing | skipped | verified | failed
    signature_required: bool = True  # False only with allow_unsigned
    accepted_unsigned: bool = False  # ok only because allow_unsigned let a missing one pass
    notes: list[str] = field(default_factory=list)
    signatures_valid: int = 0
    signatures_total: int = 0
    signature_errors: list[str] = field(default_factory=list)
    key_ids: list[str] = field(default_factory=list)
    chain_ok: bool = False
    chain: dict[str, Any] = field(default_factory=dict)
    proof_records_verified: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "pack_id": self.pack_id,
            "pack_type": self.pack_type,
            "source_ref": self.source_ref,
            "files_checked": self.files_checked,
            "missing_files": self.missing_files,
            "hash_mismatches": self.hash_mismatches,
            "undeclared_files": self.undeclared_files,
            "signature_status": self.signature_status,
            "signature_required": self.signature_required,
            "accepted_unsigned": self.accepted_unsigned,
            "notes": self.notes,
            "signatures_valid": self.signatures_valid,
            "signatures_total": self.signatures_total,
            "signature_errors": self.signature_errors,
            "key_ids": self.key_ids,
            "chain_ok": self.chain_ok,
            "chain": self.chain,
            "proof_records_verified": self.proof_records_verified,
            "errors": self.errors,
        }


class _EventStream:
    """Streams ``job_events.jsonl`` once: hashes the bytes for the manifest check and yields
    parsed records for ``chain_check``, keeping only counters in memory."""

    def __init__(self, zf: SafeZip) -> None:
        self._zf = zf
        self.hasher = hashlib.sha256()
        self.count = 0
        self.approved = 0
        self.last_type = ""
        self.error = ""

    def records(self) -> Iterator[dict[str, Any]]:
        with self._zf.open(EVENTS_PATH) as fh:
            while line := fh.readline(EVENT_LINE_MAX_BYTES + 1):
                self.hasher.update(line)
                if self.error:
                    continue  # keep hashing; the chain has already failed
                if len(line) > EVENT_LINE_MAX_BYTES:
                    self.error = (
                        f"line {self.count + 1} is longer than {EVENT_LINE_MAX_BYTES} bytes"
                    )
                    continue
                try:
                    record = _json(line, f"{EVENTS_PATH} line {self.count + 1}")
                except (ValueError, UnicodeDecodeError):
                    self.error = f"line {self.count + 1} is not JSON"
                    continue
                except InvalidInput as exc:
                    self.error = exc.message
                    continue
                if not isinstance(record, dict):
                    self.error = f"line {self.count + 1} is not a JSON object"
                    continue
                self.count += 1
                self.last_type = str(record.get("type", ""))
                if record.get("type") == "approved":
                    self.approved += 1
                yield record

    def check(self, job_id: str, expected_head: str | None) -> ChainReport:
        records = self.records()
        report = chain_check(job_id, records, expected_head=expected_head)
        for _ in records:  # chain_check stops at the first bad event; the hash needs every byte
            pass
        if self.error:
            return ChainReport(False, self.count, report.head_hash, None, self.error)
        return report


def _consistency(
    problems: _Problems,
    manifest: dict[str, Any],
    payload: Any,
    state: Any,
    stream: _EventStream | None,
) -> None:
    """Gait's verifyPayloadContracts for job packs, plus the journal: the payload, the state and
    the events must tell the same story."""
    source_ref = manifest.get("source_ref")
    if not isinstance(payload, dict) or not isinstance(state, dict):
        problems.add(
            reasons.JOB_PAYLOAD_INVALID, "job_payload.json and job_state.json must be JSON objects"
        )
        return
    if payload.get("schema_id") != "gait.pack.job" or payload.get("schema_version") != "1.0.0":
        problems.add(reasons.JOB_PAYLOAD_INVALID, "job_payload.json must be gait.pack.job 1.0.0")
    for key in ("job_id", "status", "stop_reason", "status_reason_code", "environment_fingerprint"):
        if not isinstance(payload.get(key), str) or not payload[key].strip():
            problems.add(reasons.JOB_PAYLOAD_INVALID, f"job_payload.json: {key} is required")
    mismatches = []
    if payload.get("job_id") != source_ref:
        mismatches.append("job payload job_id does not match manifest source_ref")
    for key in ("job_id", "status", "stop_reason", "status_reason_code", "environment_fingerprint"):
        if payload.get(key) != state.get(key):
            mismatches.append(f"job payload {key} does not match job_state")
    checkpoints = state.get("checkpoints")
    approvals = state.get("approvals", [])
    if not isinstance(checkpoints, list) or not isinstance(approvals, list):
        mismatches.append("job_state checkpoints and approvals must be lists")
    else:
        if payload.get("checkpoint_count") != len(checkpoints):
            mismatches.append("job payload checkpoint_count does not match job_state")
        if payload.get("approval_count") != len(approvals):
            mismatches.append("job payload approval_count does not match job_state")
        if stream is not None:
            if len(approvals) != stream.approved:
                mismatches.append("job_state approvals do not match the approved events")
            for cp in checkpoints:
                rev = cp.get("revision") if isinstance(cp, dict) else None
                if rev is not None and not (isinstance(rev, int) and 1 <= rev <= stream.count):
                    mismatches.append(
                        f"checkpoint {cp.get('checkpoint_id')} refers to a revision outside the journal"
                    )
    if stream is not None and state.get("revision") != stream.count:
        mismatches.append("job_state revision does not match the number of events")
    for message in mismatches:
        problems.add(reasons.JOB_PAYLOAD_INCONSISTENT, message)


def _proof_records_check(
    zf: SafeZip,
    manifest: dict[str, Any],
    trusted: dict[str, Ed25519PublicKey],
    result: PackVerifyResult,
    problems: _Problems,
) -> None:
    """The chain of proof records: hashes recomputed, links intact, one record per declared
    entry (other than the records themselves) with the manifest's sha256; record signatures
    checked against the trusted keys when present."""
    try:
        data = zf.read(spec.PROOF_RECORDS_PATH, max_bytes=DOCUMENT_MAX_BYTES)
    except InvalidInput as exc:
        problems.add(reasons.PROOF_RECORDS_INVALID, exc.message)
        return
    declared = {
        c["path"]: c["sha256"] for c in manifest["contents"] if c["path"] != spec.PROOF_RECORDS_PATH
    }
    covered: dict[str, str] = {}
    previous = ""
    for number, line in enumerate((raw for raw in data.split(b"\n") if raw.strip()), start=1):
        try:
            record = _json(line, f"proof record {number}")
            integrity = record["integrity"]
            event = record["event"]
        except (ValueError, KeyError, TypeError, InvalidInput):
            problems.add(
                reasons.PROOF_RECORDS_INVALID, f"proof record {number} is not a proof record"
            )
            return
        if spec.proof_record_hash(record) != integrity.get("record_hash"):
            problems.add(
                reasons.PROOF_RECORDS_INVALID,
                f"proof record {number}: record_hash does not match its content",
            )
            return
        if integrity.get("previous_record_hash", "") != previous:
            problems.add(
                reasons.PROOF_RECORDS_INVALID,
                f"proof record {number}: previous_record_hash breaks the chain",
            )
            return
        previous = integrity["record_hash"]
        covered[str(event.get("entry_path"))] = str(event.get("entry_sha256"))
        signature = integrity.get("signature")
        key = trusted.get(str(integrity.get("signing_key_id", "")))
        if signature and key is not None:
            raw_sig = str(signature).removeprefix("base64:")
            if not spec.signature_valid(key, raw_sig, previous.encode("ascii")):
                result.signature_errors.append(f"proof record {number}: signature does not verify")
        result.proof_records_verified += 1
    if covered != declared:
        problems.add(
            reasons.PROOF_RECORDS_INVALID,
            "the proof records do not cover exactly the declared entries",
        )


def _signatures_check(
    manifest: dict[str, Any], trusted: dict[str, Ed25519PublicKey], result: PackVerifyResult
) -> None:
    signatures = manifest.get("signatures") or []
    result.signatures_total = len(signatures)
    result.key_ids = sorted({str(s.get("key_id", "")) for s in signatures})
    if not signatures:
        result.signature_status = "missing"
        return
    if not trusted:
        result.signature_status = "skipped"
        result.signature_errors.append("no trusted public key is configured")
        return
    expected_digest = spec.signed_digest_compute(manifest)
    for sig in signatures:
        key_id = str(sig.get("key_id", ""))
        if sig.get("alg") != spec.ALG_ED25519:
            result.signature_errors.append(
                f"signature by {key_id[:16]}: unsupported alg {sig.get('alg')!r}"
            )
            continue
        if sig.get("signed_digest") != expected_digest:
            result.signature_errors.append(
                f"signature by {key_id[:16]}: signed_digest does not match the manifest"
            )
            continue
        key = trusted.get(key_id)
        if key is None:
            result.signature_errors.append(f"signature by {key_id[:16]}: key is not trusted")
            continue
        if spec.signature_valid(key, str(sig.get("sig", "")), bytes.fromhex(expected_digest)):
            result.signatures_valid += 1
        else:
            result.signature_errors.append(f"signature by {key_id[:16]}: signature does not verify")
    result.signature_status = "verified" if result.signatures_valid else "failed"


UNSIGNED_ACCEPTED_NOTE = "unsigned, accepted because allow_unsigned"
UNCHECKED_ACCEPTED_NOTE = "signature not checked (no trusted key), accepted because allow_unsigned"


def pack_verify(
    *,
    source: Source,
    allow_unsigned: bool = False,
    public_keys: list[Ed25519PublicKey] | None = None,
    trust_registered_keys: bool = True,
) -> PackVerifyResult:
    """Verify a pack offline. Hostile or unreadable input raises ``InvalidInput`` (nothing is
    read in full); everything else is a finding in the result, ``ok`` only if there is none.

    "Verified" means signed by a trusted key (docs/security.md): every registered signing key
    (active or retired) plus ``public_keys``. A pack with no signature (``pack_unsigned``) or
    one no trusted key can check (``signature_untrusted``) fails, however consistent its
    files and chain: anyone can recompute those. ``allow_unsigned`` accepts those two cases
    and says so (``accepted_unsigned``, ``notes``); a signature that is wrong still fails."""
    trusted: dict[str, Ed25519PublicKey] = trusted_public_keys() if trust_registered_keys else {}
    for key in public_keys or []:
        trusted[spec.key_id_of(key)] = key
    with zip_open(source) as zf:
        return _verify_zip(zf, trusted, allow_unsigned=allow_unsigned)


def _verify_zip(
    zf: SafeZip, trusted: dict[str, Ed25519PublicKey], *, allow_unsigned: bool
) -> PackVerifyResult:
    result = PackVerifyResult(signature_required=not allow_unsigned)
    problems = _Problems()
    _verify_open(zf, result, problems, trusted)
    _signature_verdict(result, problems, allow_unsigned=allow_unsigned)
    result.errors = problems.items
    result.ok = (
        not result.errors
        and not result.missing_files
        and not result.hash_mismatches
        and not result.undeclared_files
        and result.chain_ok
        and (result.signature_status == "verified" or result.accepted_unsigned)
    )
    if not result.ok:  # nothing was accepted: the pack fails for its own reasons
        result.accepted_unsigned = False
        result.notes = []
    return result


def _signature_verdict(
    result: PackVerifyResult, problems: _Problems, *, allow_unsigned: bool
) -> None:
    """The signature's finding: only ``verified`` passes unless ``allow_unsigned``."""
    status = result.signature_status
    if status == "verified" or not result.pack_id:  # no readable manifest: already a finding
        return
    if status == "failed":
        problems.add(
            reasons.SIGNATURE_INVALID,
            "the signature does not verify with a trusted key: "
            + ("; ".join(result.signature_errors) or "unknown reason"),
        )
        return
    if allow_unsigned:
        result.accepted_unsigned = True
        result.notes.append(
            UNSIGNED_ACCEPTED_NOTE if status == "missing" else UNCHECKED_ACCEPTED_NOTE
        )
        return
    if status == "missing":
        problems.add(
            reasons.PACK_UNSIGNED,
            "the pack is not signed: nothing proves who built it, so it does not verify "
            "(allow_unsigned accepts it anyway)",
        )
    else:  # skipped: signed, but no key is trusted at all
        problems.add(
            reasons.SIGNATURE_UNTRUSTED,
            "the pack is signed, but no trusted key can check the signature: pass the "
            "signer's public key (--public-key / public_key), or allow_unsigned",
            key_ids=result.key_ids,
        )


def _verify_open(
    zf: SafeZip,
    result: PackVerifyResult,
    problems: _Problems,
    trusted: dict[str, Ed25519PublicKey],
) -> None:
    if spec.MANIFEST_PATH not in zf.infos:
        problems.add(reasons.MANIFEST_MISSING, f"the pack has no {spec.MANIFEST_PATH}")
        return
    try:
        manifest = _json_document(zf, spec.MANIFEST_PATH, max_bytes=MANIFEST_MAX_BYTES)
    except _DocumentInvalid as exc:
        problems.add(reasons.MANIFEST_INVALID, str(exc))
        return
    invalid = _manifest_problems(manifest)
    if invalid:
        for message in invalid:
            problems.add(reasons.MANIFEST_INVALID, message)
        return
    result.pack_id = str(manifest["pack_id"])
    result.pack_type = str(manifest.get("pack_type", ""))
    result.source_ref = str(manifest["source_ref"])
    if spec.pack_id_compute(manifest) != result.pack_id.lower():
        problems.add(
            reasons.PACK_ID_MISMATCH,
            "pack_id does not match the manifest's content",
            expected=spec.pack_id_compute(manifest),
        )
    if result.pack_type != PACK_TYPE_JOB:
        problems.add(
            reasons.PACK_TYPE_UNSUPPORTED,
            f"gaitweb verifies job packs; this is a {result.pack_type!r} pack",
        )

    contents = manifest["contents"]
    declared = {c["path"]: str(c["sha256"]).lower() for c in contents}
    result.files_checked = len(contents)
    result.undeclared_files = sorted(
        n for n in zf.infos if n != spec.MANIFEST_PATH and n not in declared
    )
    result.missing_files = sorted(p for p in declared if p not in zf.infos)

    job_pack = result.pack_type == PACK_TYPE_JOB
    payload = state = None
    if job_pack:
        missing_required = [p for p in JOB_REQUIRED if p not in declared]
        if missing_required:
            problems.add(
                reasons.JOB_PACK_INCOMPLETE,
                f"a job pack must declare {', '.join(missing_required)}",
            )
        try:
            if PAYLOAD_PATH in zf.infos:
                payload = _json_document(zf, PAYLOAD_PATH)
            if STATE_PATH in zf.infos:
                state = _json_document(zf, STATE_PATH)
        except _DocumentInvalid as exc:
            problems.add(reasons.JOB_PAYLOAD_INVALID, str(exc))

    stream: _EventStream | None = None
    for path in sorted(declared):
        if path not in zf.infos:
            continue
        if path == EVENTS_PATH and job_pack:
            stream = _EventStream(zf)
            head = state.get("last_event_hash") if isinstance(state, dict) else None
            report = stream.check(result.source_ref, head if isinstance(head, str) else None)
            result.chain_ok = report.ok
            result.chain = report.as_dict()
            actual = stream.hasher.hexdigest()
        else:
            actual = zf.sha256(path)
        if actual != declared[path]:
            result.hash_mismatches.append(
                {"path": path, "expected": declared[path], "actual": actual}
            )
    if not job_pack:
        result.chain_ok = False
    elif stream is None:
        result.chain = {"ok": False, "reason": f"{EVENTS_PATH} is missing"}

    if job_pack and payload is not None and state is not None:
        _consistency(problems, manifest, payload, state, stream)

    if spec.PROOF_RECORDS_PATH in declared and spec.PROOF_RECORDS_PATH in zf.infos:
        _proof_records_check(zf, manifest, trusted, result, problems)
    else:
        problems.add(
            reasons.PROOF_RECORDS_MISSING, f"the pack does not declare {spec.PROOF_RECORDS_PATH}"
        )

    record_sig_errors = list(result.signature_errors)
    result.signature_errors = []
    _signatures_check(manifest, trusted, result)
    if record_sig_errors:
        result.signature_errors.extend(record_sig_errors)
        result.signature_status = "failed"


# --- inspect ---------------------------------------------------------------------------------------


def pack_inspect(*, source: Source) -> dict[str, Any]:
    """What a pack says about itself, without verifying it (hostile zips are still refused)."""
    with zip_open(source) as zf:
        if spec.MANIFEST_PATH not in zf.infos:
            raise InvalidInput(
                reasons.MANIFEST_MISSING, f"the file has no {spec.MANIFEST_PATH}; it is not a pack"
            )
        try:
            manifest = _json_document(zf, spec.MANIFEST_PATH, max_bytes=MANIFEST_MAX_BYTES)
        except _DocumentInvalid as exc:
            raise InvalidInput(reasons.MANIFEST_INVALID, str(exc)) from None
        invalid = _manifest_problems(manifest)
        if invalid:
            raise InvalidInput(
                reasons.MANIFEST_INVALID, "; ".join(invalid), details={"problems": invalid}
            )
        out: dict[str, Any] = {
            "pack_id": manifest["pack_id"],
            "pack_type": manifest.get("pack_type"),
            "source_ref": manifest["source_ref"],
            "producer_version": manifest["producer_version"],
            "created_at": manifest["created_at"],
            "schema_id": manifest["schema_id"],
            "schema_version": manifest["schema_version"],
            "contents": [
                {**c, "size": zf.infos[c["path"]].file_size if c["path"] in zf.infos else None}
                for c in manifest["contents"]
            ],
            "signatures": [
                {
                    "alg": s.get("alg"),
                    "key_id": s.get("key_id"),
                    "signed_digest": s.get("signed_digest"),
                }
                for s in manifest.get("signatures") or []
            ],
            "entries": zf.names,
        }
        if manifest.get("pack_type") == PACK_TYPE_JOB:
            out["job_payload"] = _optional_document(zf, PAYLOAD_PATH)
            state = _optional_document(zf, STATE_PATH)
            lineage: dict[str, Any] = {
                "event_count": None,
                "last_event_type": None,
                "checkpoint_refs": [],
            }
            if isinstance(state, dict) and isinstance(state.get("checkpoints"), list):
                lineage["checkpoint_refs"] = [
                    {
                        "checkpoint_id": cp.get("checkpoint_id"),
                        "type": cp.get("type"),
                        "reason_code": cp.get("reason_code"),
                    }
                    for cp in state["checkpoints"]
                    if isinstance(cp, dict)
                ]
            if EVENTS_PATH in zf.infos:
                stream = _EventStream(zf)
                for _ in stream.records():
                    pass
                lineage["event_count"] = stream.count
                lineage["last_event_type"] = stream.last_type
            out["job_lineage"] = lineage
        return out


def _optional_document(zf: SafeZip, name: str) -> Any:
    if name not in zf.infos:
        return None
    try:
        return _json_document(zf, name)
    except _DocumentInvalid:
        return None


# --- diff ------------------------------------------------------------------------------------------


def _event_index(zf: SafeZip) -> Iterator[tuple[int, str, str]]:
    """(revision, type, hash) of each event, streamed; unparsable lines get revision -1."""
    if EVENTS_PATH not in zf.infos:
        return
    with zf.open(EVENTS_PATH) as fh:
        while line := fh.readline(EVENT_LINE_MAX_BYTES + 1):
            try:
                rec = _json(line, EVENTS_PATH)
                yield int(rec["revision"]), str(rec.get("type", "")), sha256_hex(line.rstrip(b"\n"))
            except (ValueError, KeyError, TypeError, InvalidInput):
                yield -1, "", sha256_hex(line)


def _events_diff(left: SafeZip, right: SafeZip) -> dict[str, Any]:
    """Events matched by revision: which were added, removed or changed."""
    added: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    counts = {"added": 0, "removed": 0, "changed": 0}
    left_count = right_count = 0

    def note(bucket: list[dict[str, Any]], name: str, item: dict[str, Any]) -> None:
        counts[name] += 1
        if len(bucket) < DIFF_LIST_MAX:
            bucket.append(item)

    lit, rit = _event_index(left), _event_index(right)
    lcur, rcur = next(lit, None), next(rit, None)
    while lcur is not None or rcur is not None:
        if rcur is None or (lcur is not None and lcur[0] < rcur[0]):
            assert lcur is not None
            left_count += 1
            note(removed, "removed", {"revision": lcur[0], "type": lcur[1]})
            lcur = next(lit, None)
        elif lcur is None or rcur[0] < lcur[0]:
            right_count += 1
            note(added, "added", {"revision": rcur[0], "type": rcur[1]})
            rcur = next(rit, None)
        else:
            left_count += 1
            right_count += 1
            if lcur[2] != rcur[2]:
                note(
                    changed,
                    "changed",
                    {"revision": lcur[0], "left_type": lcur[1], "right_type": rcur[1]},
                )
            lcur, rcur = next(lit, None), next(rit, None)
    return {
        "left_count": left_count,
        "right_count": right_count,
        "added": added,
        "removed": removed,
        "changed": changed,
        "added_count": counts["added"],
        "removed_count": counts["removed"],
        "changed_count": counts["changed"],
        "truncated": any(v > DIFF_LIST_MAX for v in counts.values()),
    }


def _manifest_of(zf: SafeZip, side: str) -> dict[str, Any]:
    if spec.MANIFEST_PATH not in zf.infos:
        raise InvalidInput(
            reasons.MANIFEST_MISSING,
            f"the {side} file has no {spec.MANIFEST_PATH}; it is not a pack",
        )
    try:
        manifest = _json_document(zf, spec.MANIFEST_PATH, max_bytes=MANIFEST_MAX_BYTES)
    except _DocumentInvalid as exc:
        raise InvalidInput(reasons.MANIFEST_INVALID, f"{side}: {exc}") from None
    invalid = _manifest_problems(manifest)
    if invalid:
        raise InvalidInput(
            reasons.MANIFEST_INVALID,
            f"{side}: " + "; ".join(invalid),
            details={"problems": invalid},
        )
    return manifest


def _content_hashes(
    zf: SafeZip, manifest: dict[str, Any], checked: PackVerifyResult
) -> dict[str, str]:
    """What each file of the pack holds, by its actual sha256 (not the manifest's word): the
    verification already hashed every declared file, so only a mismatch's actual hash and the
    undeclared files are new. A declared file that is absent maps to ``"missing"``."""
    hashes = {c["path"]: str(c["sha256"]).lower() for c in manifest["contents"]}
    for m in checked.hash_mismatches:
        hashes[m["path"]] = m["actual"]
    for path in checked.missing_files:
        hashes[path] = "missing"
    for path in checked.undeclared_files:
        hashes[path] = zf.sha256(path)
    return hashes


def _verify_summary(checked: PackVerifyResult) -> dict[str, Any]:
    """One side's verification, short: ``reasons`` says why it fails in a few words."""
    reasons = [
        *(f"hash mismatch: {m['path']}" for m in checked.hash_mismatches),
        *(f"missing: {p}" for p in checked.missing_files),
        *(f"undeclared: {p}" for p in checked.undeclared_files),
        *([] if checked.chain_ok else ["chain does not verify"]),
        *dict.fromkeys(str(e.get("code")) for e in checked.errors),
    ]
    return {
        "ok": checked.ok,
        "signature_status": checked.signature_status,
        "chain_ok": checked.chain_ok,
        "hash_mismatches": [m["path"] for m in checked.hash_mismatches],
        "missing_files": checked.missing_files,
        "undeclared_files": checked.undeclared_files,
        "reasons": [] if checked.ok else reasons[:DIFF_LIST_MAX],
    }


def pack_diff(*, left: Source, right: Source) -> dict[str, Any]:
    """What differs between two packs, by content: entries added, removed or changed (their
    actual sha256, so an edited file counts however the manifest describes it) and, for job
    packs, which events. Each side is also verified (as ``pack_verify`` would, against the
    registered keys): ``left_verify`` / ``right_verify`` say which pack fails and why.
    ``identical`` is true only for the same manifest and the same content."""
    trusted = trusted_public_keys()
    with zip_open(left) as lz, zip_open(right) as rz:
        lm, rm = _manifest_of(lz, "left"), _manifest_of(rz, "right")
        lcheck = _verify_zip(lz, trusted, allow_unsigned=False)
        rcheck = _verify_zip(rz, trusted, allow_unsigned=False)
        lfiles = _content_hashes(lz, lm, lcheck)
        rfiles = _content_hashes(rz, rm, rcheck)
        added = sorted(set(rfiles) - set(lfiles))
        removed = sorted(set(lfiles) - set(rfiles))
        changed = sorted(p for p in set(lfiles) & set(rfiles) if lfiles[p] != rfiles[p])
        manifest_delta = canonical_json(lm) != canonical_json(rm)
        out: dict[str, Any] = {
            "left_pack_id": lm["pack_id"],
            "right_pack_id": rm["pack_id"],
            "left_pack_type": lm.get("pack_type"),
            "right_pack_type": rm.get("pack_type"),
            "left_source_ref": lm["source_ref"],
            "right_source_ref": rm["source_ref"],
            "added_files": added,
            "removed_files": removed,
            "changed_files": changed,
            "manifest_delta": manifest_delta,
            "signatures_delta": (lm.get("signatures") or []) != (rm.get("signatures") or []),
            "left_verify": _verify_summary(lcheck),
            "right_verify": _verify_summary(rcheck),
        }
        if lm.get("pack_type") == PACK_TYPE_JOB and rm.get("pack_type") == PACK_TYPE_JOB:
            out["events"] = _events_diff(lz, rz)
        events_changed = bool(
            out.get("events")
            and (
                out["events"]["added_count"]
                or out["events"]["removed_count"]
                or out["events"]["changed_count"]
            )
        )
        out["identical"] = not (added or removed or changed or manifest_delta or events_changed)
        out["changed"] = not out["identical"]
        out["failing_verification"] = [
            side for side, c in (("left", lcheck), ("right", rcheck)) if not c.ok
        ]
        return out
