"""The gate, approvals, policies, identities and packs over HTTP — success and refusal."""

from __future__ import annotations

import io
import zipfile
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rest_framework.test import APIClient

from approvals.policies import policy_binding_resolve
from approvals.services import approval_request_create
from gaitweb.lib.actors import Actor
from jobs import services as jobs
from jobs.models import JobEvent
from jobs.services import job_checkpoint_add
from packs.keys import key_init
from packs.services import pack_render
from packs.spec import Signer
from tests.api.conftest import POLICY_YAML, error_code, submit

pytestmark = pytest.mark.django_db

REFUND = {"tool_name": "payments.refund", "args": {"amount": 420}, "targets": [], "context": {}}
DROP = {"tool_name": "db.drop", "args": {}, "targets": [], "context": {}}
READ_TOOL = {"tool_name": "invoices.read", "args": {}, "targets": [], "context": {}}


@pytest.fixture
def payments_policy(admin_key: APIClient) -> dict[str, Any]:
    r = admin_key.post(
        "/api/v1/policies", {"name": "payments", "source": POLICY_YAML}, format="json"
    )
    assert r.status_code == 201, r.content
    return r.json()


def test_gate_evaluate_with_inline_policy_returns_each_verdict_as_200(agent: APIClient) -> None:
    verdicts = {}
    for intent in (REFUND, DROP, READ_TOOL):
        r = agent.post(
            "/api/v1/gate/evaluate", {"intent": intent, "policy_source": POLICY_YAML}, format="json"
        )
        assert r.status_code == 200, r.content
        verdicts[intent["tool_name"]] = (r.json()["verdict"], r.json()["allowed"])
    assert verdicts == {
        "payments.refund": ("require_approval", False),
        "db.drop": ("block", False),
        "invoices.read": ("allow", True),
    }


def test_gate_evaluate_with_a_stored_policy_names_its_digest(
    agent: APIClient, payments_policy: dict
) -> None:
    r = agent.post("/api/v1/gate/evaluate", {"intent": DROP, "policy": "payments"}, format="json")
    assert r.json()["policy_digest"] == payments_policy["digest"]
    assert r.json()["reason_codes"] == ["destructive_tool_blocked"]


@pytest.mark.parametrize(
    "body, code",
    [
        ({"intent": {"args": {}}, "policy_source": POLICY_YAML}, "intent_invalid"),
        ({"intent": READ_TOOL, "policy_source": "default_verdict: maybe\n"}, None),
        (
            {"intent": READ_TOOL, "policy": "payments", "policy_source": POLICY_YAML},
            "invalid_policy_ref",
        ),
        ({"intent": "not an object"}, "invalid_input"),
    ],
)
def test_gate_evaluate_refuses_bad_intents_and_policies_with_400(
    agent: APIClient, payments_policy: dict, body: dict, code: str | None
) -> None:
    r = agent.post("/api/v1/gate/evaluate", body, format="json")
    assert r.status_code == 400, r.content
    if code:
        assert error_code(r) == code
    else:
        assert error_code(r).startswith("policy_")


def test_gate_dispatch_journals_the_verdict_on_the_job(
    agent: APIClient, payments_policy: dict
) -> None:
    submit(agent, job_id="g1", policy="payments")
    r = agent.post("/api/v1/jobs/g1/gate/dispatch", {"intent": REFUND}, format="json")
    assert r.status_code == 200 and r.json()["verdict"] == "require_approval"
    r = agent.post("/api/v1/jobs/g1/gate/dispatch", {"intent": READ_TOOL}, format="json")
    assert r.json()["verdict"] == "allow"
    types = list(
        JobEvent.objects.filter(job__job_id="g1")
        .order_by("revision")
        .values_list("type", flat=True)
    )
    assert types == ["submitted", "dispatch_blocked", "dispatch_allowed"]


def test_gate_dispatch_blocks_every_tool_call_of_a_stopped_job(agent: APIClient) -> None:
    submit(agent, job_id="g2")
    agent.post("/api/v1/jobs/g2/stop", {}, format="json")
    r = agent.post("/api/v1/jobs/g2/gate/dispatch", {"intent": READ_TOOL}, format="json")
    assert r.json()["verdict"] == "block" and r.json()["reason_codes"] == [
        "emergency_stop_preempted"
    ]


def test_gate_dispatch_of_an_unknown_job_fails_closed(agent: APIClient) -> None:
    r = agent.post("/api/v1/jobs/nope/gate/dispatch", {"intent": READ_TOOL}, format="json")
    assert r.status_code == 200 and r.json()["verdict"] == "block"
    assert r.json()["reason_codes"] == ["emergency_stop_state_unavailable"]


def _request_on(job_id: str, required: int = 1) -> str:
    job_checkpoint_add(
        actor=Actor.system("agent-7"), job_id=job_id, type="decision-needed", summary="refund?"
    )
    return approval_request_create(
        actor=Actor.system("agent-7"),
        job=job_id,
        summary="Refund 420 EUR?",
        intent=REFUND,
        required_approvals=required,
    ).request_id


def test_pending_approvals_are_listed_and_the_deciding_approval_resumes_the_job(
    agent: APIClient, reviewer_key: APIClient, key_client: Any
) -> None:
    submit(agent, job_id="ap1")
    request_id = _request_on("ap1", required=2)
    pending = reviewer_key.get("/api/v1/approvals").json()["results"]
    assert [(p["request_id"], p["job_id"], p["required_approvals"]) for p in pending] == [
        (request_id, "ap1", 2)
    ]
    assert reviewer_key.get("/api/v1/approvals?job_id=other").json()["results"] == []
    first = reviewer_key.post(
        f"/api/v1/approvals/{request_id}/decide", {"decision": "approve"}, format="json"
    )
    assert first.status_code == 200 and first.json()["completed"] is False
    again = reviewer_key.post(
        f"/api/v1/approvals/{request_id}/decide", {"decision": "approve"}, format="json"
    )
    assert again.status_code == 409 and error_code(again) == "approval_already_decided"
    second = key_client("approve,read,cross_identity", identity="rob").post(
        f"/api/v1/approvals/{request_id}/decide",
        {"decision": "approve", "reason": "ok"},
        format="json",
    )
    assert second.json()["completed"] is True and second.json()["job_status"] == "running"
    assert reviewer_key.get("/api/v1/approvals").json()["results"] == []


def test_a_decision_needs_the_approve_scope_and_a_known_request(
    agent: APIClient, reviewer_key: APIClient
) -> None:
    submit(agent, job_id="ap2")
    request_id = _request_on("ap2")
    r = agent.post(f"/api/v1/approvals/{request_id}/decide", {"decision": "approve"}, format="json")
    assert r.status_code == 403 and error_code(r) == "permission_denied"
    r = reviewer_key.post(
        "/api/v1/approvals/apr_nope/decide", {"decision": "approve"}, format="json"
    )
    assert r.status_code == 404 and error_code(r) == "approval_not_found"
    r = reviewer_key.post(
        f"/api/v1/approvals/{request_id}/decide", {"decision": "maybe"}, format="json"
    )
    assert r.status_code == 400 and error_code(r) == "invalid_input"
    r = reviewer_key.post(
        f"/api/v1/approvals/{request_id}/decide", {"decision": "reject"}, format="json"
    )
    assert r.status_code == 400 and error_code(r) == "missing_reason"
    r = reviewer_key.post(
        f"/api/v1/approvals/{request_id}/decide",
        {"decision": "reject", "reason": "no"},
        format="json",
    )
    assert r.json()["status"] == "rejected" and r.json()["job_status"] == "blocked"


def test_policies_are_readable_by_all_and_writable_by_admins_only(
    agent: APIClient, admin_key: APIClient, payments_policy: dict
) -> None:
    listed = agent.get("/api/v1/policies").json()["results"]
    assert [(p["name"], p["version"]) for p in listed] == [("payments", 1)]
    shown = agent.get("/api/v1/policies/payments").json()
    assert shown["source"] == POLICY_YAML and shown["digest"] == payments_policy["digest"]
    assert agent.get(f"/api/v1/policies/{payments_policy['digest']}").json()["name"] == "payments"
    r = agent.post("/api/v1/policies", {"name": "mine", "source": POLICY_YAML}, format="json")
    assert r.status_code == 403 and error_code(r) == "permission_denied"
    r = admin_key.post("/api/v1/policies", {"name": "broken", "source": "rules: [1"}, format="json")
    assert r.status_code == 400 and error_code(r).startswith("policy_")
    assert agent.get("/api/v1/policies/broken").status_code == 404
    v2 = admin_key.post(
        "/api/v1/policies",
        {"name": "payments", "source": POLICY_YAML.replace("priority: 20", "priority: 30")},
        format="json",
    )
    assert v2.json()["version"] == 2
    assert agent.get("/api/v1/policies/payments@1").json()["digest"] == payments_policy["digest"]


def test_policy_digest_is_stable_under_reformatting(agent: APIClient) -> None:
    a = agent.post("/api/v1/policies/digest", {"source": POLICY_YAML}, format="json").json()
    b = agent.post(
        "/api/v1/policies/digest",
        {
            "source": "# reformatted\n"
            + POLICY_YAML.replace("[payments.refund]", '["payments.refund"]')
        },
        format="json",
    ).json()
    assert a["policy_digest"] == b["policy_digest"] and a["rules"] == 2


def test_only_admins_revoke_identities(agent: APIClient, admin_key: APIClient) -> None:
    r = agent.post("/api/v1/identities/revocations", {"identity": "x"}, format="json")
    assert r.status_code == 403
    r = admin_key.post(
        "/api/v1/identities/revocations", {"identity": "x", "reason": "leak"}, format="json"
    )
    assert r.status_code == 201 and r.json()["revoked_by"] == "root"


def test_packs_build_list_download_and_verify_the_upload(agent: APIClient) -> None:
    key_init(actor=Actor.system("test"))
    submit(agent, job_id="pk1")
    agent.post(
        "/api/v1/jobs/pk1/checkpoints", {"type": "completed", "summary": "done"}, format="json"
    )
    r = agent.post("/api/v1/jobs/pk1/packs")
    assert r.status_code == 201, r.content
    pack = r.json()["pack"]
    again = agent.post("/api/v1/jobs/pk1/packs")
    assert again.status_code == 200 and again.json()["created"] is False
    assert [p["pack_id"] for p in agent.get("/api/v1/jobs/pk1/packs").json()["results"]] == [
        pack["pack_id"]
    ]
    assert agent.get(f"/api/v1/packs/{pack['pack_id']}").json()["sha256"] == pack["sha256"]
    download = agent.get(pack["download"])
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    data = download.content
    import hashlib

    assert hashlib.sha256(data).hexdigest() == pack["sha256"]

    raw = agent.post("/api/v1/packs/verify", data, content_type="application/zip")
    assert raw.status_code == 200, raw.content
    assert (
        raw.json()["ok"] is True
        and raw.json()["source_ref"] == "pk1"
        and raw.json()["chain_ok"] is True
        and raw.json()["signature_status"] == "verified"
        and raw.json()["accepted_unsigned"] is False
    )
    multipart = agent.post("/api/v1/packs/verify", {"file": io.BytesIO(data)}, format="multipart")
    assert multipart.json()["ok"] is True
    conflict = agent.post(
        "/api/v1/packs/verify?require_signature=true&allow_unsigned=true",
        data,
        content_type="application/zip",
    )
    assert conflict.status_code == 400 and error_code(conflict) == "verify_options_conflict"
    inspected = agent.post("/api/v1/packs/inspect", data, content_type="application/zip")
    assert inspected.status_code == 200 and inspected.json()["pack_id"] == pack["pack_id"]


def test_a_tampered_pack_verifies_as_not_ok_and_garbage_is_a_400(agent: APIClient) -> None:
    submit(agent, job_id="pk2")
    data = agent.get(agent.post("/api/v1/jobs/pk2/packs").json()["pack"]["download"]).content
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "job_state.json":
                body = body.replace(b"running", b"completed")
            dst.writestr(info, body)
    r = agent.post("/api/v1/packs/verify", out.getvalue(), content_type="application/zip")
    assert r.status_code == 200 and r.json()["ok"] is False
    assert [m["path"] for m in r.json()["hash_mismatches"]] == ["job_state.json"]
    r = agent.post("/api/v1/packs/verify", b"not a zip at all", content_type="application/zip")
    assert r.status_code == 400 and error_code(r) == "pack_not_a_zip"
    r = agent.post("/api/v1/packs/verify", {}, format="json")
    assert r.status_code == 415
    r = agent.post("/api/v1/packs/verify", {}, format="multipart")
    assert r.status_code == 400 and error_code(r) == "missing_file"
    r = agent.post("/api/v1/packs/verify", {"other": "x"}, format="multipart")
    assert r.status_code == 400 and error_code(r) == "unknown_field"


def test_pack_ids_are_validated_and_unknown_packs_are_404(agent: APIClient) -> None:
    r = agent.get("/api/v1/packs/xyz")
    assert r.status_code == 400 and error_code(r) == "invalid_pack_id"
    r = agent.get("/api/v1/packs/" + "0" * 64 + "/download")
    assert r.status_code == 404 and error_code(r) == "pack_not_found"


def test_verify_trusts_a_public_key_named_in_the_request(agent: APIClient) -> None:
    """A pack signed elsewhere (a key this instance never registered), as `gait pack verify
    --public-key` checks it."""
    import base64

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    submit(agent, job_id="pk-outside")
    outside = Ed25519PrivateKey.generate()
    data = pack_render(job_id="pk-outside", signer=Signer.of(outside)).data
    raw_public = outside.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    url = "/api/v1/packs/verify?require_signature=true"

    untrusted = agent.post(url, data, content_type="application/zip").json()
    # this instance has no key of its own here, so no key is trusted at all (docs/packs.md)
    assert untrusted["ok"] is False and untrusted["signature_status"] == "skipped"
    for text in (raw_public.hex(), base64.b64encode(raw_public).decode()):
        r = agent.post(
            url + "&" + urlencode({"public_key": text}), data, content_type="application/zip"
        )
        assert r.status_code == 200, r.content
        assert r.json()["ok"] is True and r.json()["signature_status"] == "verified"
    for text in ("not-a-key", "x" * 32):  # 32 characters are text here, never raw key bytes
        bad = agent.post(
            url + "&" + urlencode({"public_key": text}), data, content_type="application/zip"
        )
        assert bad.status_code == 400 and error_code(bad) == "public_key_invalid"


def test_pack_diff_compares_two_uploaded_packs(agent: APIClient) -> None:
    submit(agent, job_id="pk-diff")
    before = agent.get(agent.post("/api/v1/jobs/pk-diff/packs").json()["pack"]["download"]).content
    agent.post(
        "/api/v1/jobs/pk-diff/checkpoints", {"type": "completed", "summary": "ok"}, format="json"
    )
    after = agent.get(agent.post("/api/v1/jobs/pk-diff/packs").json()["pack"]["download"]).content

    def diff(left: bytes, right: bytes) -> Any:
        return agent.post(
            "/api/v1/packs/diff",
            {"left": io.BytesIO(left), "right": io.BytesIO(right)},
            format="multipart",
        )

    same = diff(before, before)
    assert same.status_code == 200 and same.json()["identical"] is True
    changed = diff(before, after).json()
    assert changed["identical"] is False and changed["left_source_ref"] == "pk-diff"
    assert "job_events.jsonl" in changed["changed_files"]
    # the first build journaled pack_built after rendering, so the second pack holds it too
    assert changed["events"]["added_count"] == 2 and changed["events"]["removed_count"] == 0
    assert [e["type"] for e in changed["events"]["added"]] == ["pack_built", "checkpoint_added"]

    # the content counts, not the manifests' word: an edited events file is a difference, and
    # the edited side is the one that fails verification
    from tests.packs.helpers import entries_of, rezip

    files = entries_of(before)
    files["job_events.jsonl"] = files["job_events.jsonl"].replace(b"pk-diff", b"pk-dif2", 1)
    edited = diff(before, rezip(files))
    assert edited.status_code == 200, edited.content
    body = edited.json()
    assert body["identical"] is False and body["manifest_delta"] is False
    assert body["changed_files"] == ["job_events.jsonl"]
    # no signing key here: both sides are unsigned, only the edited one is inconsistent
    assert body["failing_verification"] == ["left", "right"]
    assert body["left_verify"]["reasons"] == ["pack_unsigned"]
    assert body["right_verify"]["hash_mismatches"] == ["job_events.jsonl"]
    assert "hash mismatch: job_events.jsonl" in body["right_verify"]["reasons"]

    missing = agent.post("/api/v1/packs/diff", {"left": io.BytesIO(before)}, format="multipart")
    assert missing.status_code == 400 and error_code(missing) == "missing_file"
    assert missing.json()["error"]["details"] == {"field": "right"}
    garbage = diff(before, b"not a zip")
    assert garbage.status_code == 400 and error_code(garbage) == "pack_not_a_zip"


def _signed_pack_of(agent: APIClient, job_id: str) -> bytes:
    key_init(actor=Actor.system("test"))
    submit(agent, job_id=job_id)
    return agent.get(agent.post(f"/api/v1/jobs/{job_id}/packs").json()["pack"]["download"]).content


def test_an_unsigned_pack_fails_verify_unless_allow_unsigned_which_the_answer_shows(
    agent: APIClient,
) -> None:
    from tests.packs.helpers import entries_of, reassemble

    unsigned = reassemble(
        entries_of(_signed_pack_of(agent, "pk-unsigned")), source_ref="pk-unsigned"
    )

    r = agent.post("/api/v1/packs/verify", unsigned, content_type="application/zip")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is False and body["signature_status"] == "missing"
    assert [e["code"] for e in body["errors"]] == ["pack_unsigned"]
    assert body["signature_required"] is True and body["accepted_unsigned"] is False
    accepted = agent.post(
        "/api/v1/packs/verify?allow_unsigned=true", unsigned, content_type="application/zip"
    ).json()
    assert accepted["ok"] is True and accepted["accepted_unsigned"] is True
    assert accepted["signature_required"] is False
    assert accepted["notes"] == ["unsigned, accepted because allow_unsigned"]


def test_a_forged_pack_fails_verify_over_the_api(agent: APIClient) -> None:
    from tests.packs.helpers import entries_of, forge

    forged = forge(entries_of(_signed_pack_of(agent, "pk-forged")))

    for upload in (
        {"data": forged, "content_type": "application/zip"},
        {"data": {"file": io.BytesIO(forged)}, "format": "multipart"},
    ):
        body = agent.post("/api/v1/packs/verify", **upload).json()
        assert body["ok"] is False and body["chain_ok"] is True
        assert [e["code"] for e in body["errors"]] == ["pack_unsigned"]


def test_a_viewer_cannot_build_a_pack_over_the_api(
    agent: APIClient, key_client: Any, session_client: Any
) -> None:
    from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret

    submit(agent, job_id="pk-viewer")
    viewer = session_client("viewer")
    secret = _get_new_csrf_string()
    viewer.cookies["csrftoken"] = secret  # a session write with a valid CSRF token
    viewer.credentials(HTTP_X_CSRFTOKEN=_mask_cipher_secret(secret))
    for client in (key_client("read", identity="agent-7"), viewer):
        r = client.post("/api/v1/jobs/pk-viewer/packs")
        assert r.status_code == 403 and error_code(r) == "permission_denied"
        assert r.json()["error"]["details"] == {"required_scope": "control"}
    assert not JobEvent.objects.filter(job__job_id="pk-viewer", type="pack_built").exists()
    assert agent.post("/api/v1/jobs/pk-viewer/packs").status_code == 201  # control may


def test_an_unknown_policy_and_a_file_bound_resume_answer_with_api_hints(
    agent: APIClient, tmp_path: Any
) -> None:
    """The API user names a policy that is not stored, and resumes a job an operator bound to a
    policy file from the CLI: each hint names the API's way, never a CLI command or flag."""

    r = agent.post("/api/v1/jobs", {"job_id": "hint-1", "policy": "nope"}, format="json")
    assert error_code(r) == "policy_not_found", r.content
    hint = r.json()["error"]["hint"]
    assert "/api/v1/policies" in hint and "gait " not in hint

    path = tmp_path / "allow.yaml"
    path.write_text("default_verdict: allow\nrules: []\n")
    jobs.job_submit(
        actor=Actor.system("ops"),
        job_id="hint-2",
        identity="agent-7",
        policy=policy_binding_resolve(ref=str(path)),
    )
    jobs.job_pause(actor=Actor.system("ops"), job_id="hint-2")
    r = agent.post("/api/v1/jobs/hint-2/resume", {}, format="json")
    assert r.status_code == 422 and error_code(r) == "policy_evaluation_required", r.content
    hint = r.json()["error"]["hint"]
    assert '"policy"' in hint and "--policy" not in hint
