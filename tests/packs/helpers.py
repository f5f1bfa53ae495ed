"""Test data for pack tests: a job with a realistic history, and zip surgery for tamper cases."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from gaitweb.lib.canonical import ZERO_HASH, canonical_json
from jobs.journal import event_append, event_hash
from jobs.models import Checkpoint, Job, StepRun
from packs import spec
from packs.spec import Entry, Signer


def job_with_history(job_id: str = "refund-42", *, extra_events: int = 0) -> Job:
    """A job that planned, asked for a decision, was approved, resumed, ran a step and completed."""
    with transaction.atomic():
        job = Job.objects.create(
            job_id=job_id,
            status="running",
            status_reason_code="submitted",
            identity="agent-7",
            environment_fingerprint="env_test",
            spec={"steps": [{"name": "fetch-invoice", "kind": "http"}]},
            step_count=1,
            created_by="tester",
            labels={"team": "billing"},
        )
        event_append(
            job,
            type="submitted",
            actor="tester",
            reason_code="submitted",
            payload={"environment_fingerprint": "env_test"},
        )
        plan = event_append(
            job,
            type="checkpoint_added",
            actor="agent-7",
            reason_code="checkpoint_plan",
            payload={"checkpoint_id": "cp_0001", "checkpoint_type": "plan"},
        )
        Checkpoint.objects.create(
            job=job,
            checkpoint_id="cp_0001",
            type="plan",
            summary="fetch the invoice, then refund",
            actor="agent-7",
            reason_code="checkpoint_plan",
            event_revision=plan.revision,
        )
        job.status = "decision_needed"
        job.status_reason_code = "checkpoint_decision_needed"
        job.stop_reason = "decision_needed"
        ask = event_append(
            job,
            type="checkpoint_added",
            actor="agent-7",
            reason_code="checkpoint_decision_needed",
            payload={
                "checkpoint_id": "cp_0002",
                "checkpoint_type": "decision-needed",
                "required_action": "approve 420 EUR",
            },
            update_fields=["status", "status_reason_code", "stop_reason"],
        )
        Checkpoint.objects.create(
            job=job,
            checkpoint_id="cp_0002",
            type="decision-needed",
            summary="refund 420 EUR?",
            required_action="approve 420 EUR",
            actor="agent-7",
            reason_code="checkpoint_decision_needed",
            event_revision=ask.revision,
        )
        event_append(
            job,
            type="approved",
            actor="rita",
            reason_code="approval_recorded",
            payload={"reason": "matches the invoice"},
        )
        job.status = "running"
        job.status_reason_code = "resumed"
        job.stop_reason = ""
        event_append(
            job,
            type="resumed",
            actor="otto",
            reason_code="resumed",
            update_fields=["status", "status_reason_code", "stop_reason"],
        )
        now = timezone.now()
        StepRun.objects.create(
            job=job,
            step_index=0,
            step_name="fetch-invoice",
            attempt=1,
            status="succeeded",
            idempotency_key=f"{job_id}/fetch-invoice",
            input={"url": "http://127.0.0.1:9000/invoices/42"},
            output={"amount": 420, "currency": "EUR"},
            stdout="GET /invoices/42 200\n",
            worker="worker-1",
            started_at=now,
            finished_at=now,
        )
        event_append(
            job,
            type="step_succeeded",
            actor="worker-1",
            reason_code="step_succeeded",
            payload={"step": "fetch-invoice", "attempt": 1},
        )
        for i in range(extra_events):
            event_append(
                job,
                type="progress",
                actor="agent-7",
                reason_code="checkpoint_progress",
                payload={"i": i, "note": "still working"},
            )
        job.status = "completed"
        job.status_reason_code = "job_succeeded"
        job.stop_reason = "completed"
        job.cursor = 1
        event_append(
            job,
            type="completed",
            actor="worker-1",
            reason_code="job_succeeded",
            update_fields=["status", "status_reason_code", "stop_reason", "cursor"],
        )
    return Job.objects.get(pk=job.pk)


# --- zip surgery ---------------------------------------------------------------------------------


def entries_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def rezip(files: dict[str, bytes]) -> bytes:
    """The files as a deterministic zip, manifest untouched (a naive tamperer)."""
    return spec.zip_write(Entry(path, data) for path, data in files.items())


def reassemble(
    files: dict[str, bytes], *, signer: Signer | None = None, source_ref: str = "refund-42"
) -> bytes:
    """The files as a fresh, self-consistent pack: new proof records, manifest and pack_id,
    optionally signed (a careful tamperer who rewrites every hash they can)."""
    payload = [
        Entry(p, d)
        for p, d in files.items()
        if p not in (spec.MANIFEST_PATH, spec.PROOF_RECORDS_PATH)
    ]
    _, data = spec.pack_assemble(
        pack_type="job",
        source_ref=source_ref,
        producer_version="gaitweb-test",
        entries=payload,
        signer=signer,
    )
    return data


def edit_lines(data: bytes, edit: Callable[[list[bytes]], list[bytes]]) -> bytes:
    lines = data.splitlines(keepends=True)
    return b"".join(edit(lines))


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def forge(files: dict[str, bytes], *, actor: str = "mallory") -> bytes:
    """The attack on unsigned verification: every event's actor (and the state's approvers)
    rewritten, the hash chain recomputed from the first event, the state's head moved to the
    new chain, manifest, pack_id and proof records rebuilt — a pack consistent in every way
    anyone can compute, with the signature left off because only the key holder can make one."""
    lines = []
    prev = ZERO_HASH
    for raw in files["job_events.jsonl"].splitlines():
        event = json.loads(raw)
        event["actor"] = actor
        event["prev_hash"] = prev
        event.pop("hash")
        event["hash"] = prev = event_hash(event)
        lines.append(canonical_json(event) + b"\n")
    state = json.loads(files["job_state.json"])
    state["last_event_hash"] = prev
    for approval in state.get("approvals", []):
        for key in ("actor", "approver"):
            if key in approval:
                approval[key] = actor
    forged = dict(files)
    forged["job_events.jsonl"] = b"".join(lines)
    forged["job_state.json"] = canonical_json(state)
    source_ref = json.loads(files[spec.MANIFEST_PATH])["source_ref"]
    return reassemble(forged, source_ref=source_ref)
