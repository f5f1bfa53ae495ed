"""Stored policies: versions, resolution by name / version / digest / file, the example policy,
and the `gait policy|identity|approval` verbs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from approvals.gate import gate_evaluate
from approvals.models import ApprovalRequest, Policy, PolicyVersion, RevokedIdentity
from approvals.policies import policy_binding_resolve, policy_resolve, policy_save
from approvals.policy_format import policy_parse
from approvals.services import approval_request_create
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import InvalidInput, NotFound
from jobs import services as jobs
from jobs.management.commands.gait import main

pytestmark = pytest.mark.django_db

ADMIN = Actor.system("secops")
V1 = "default_verdict: allow\n"
V2 = "default_verdict: block\n"
EXAMPLE = Path(settings.BASE_DIR) / "examples" / "policy.yaml"


def test_saving_creates_versions_and_an_unchanged_save_is_a_no_op() -> None:
    one = policy_save(actor=ADMIN, name="billing", source=V1)
    same = policy_save(
        actor=ADMIN, name="billing", source="# reformatted\ndefault_verdict: ALLOW\n"
    )
    two = policy_save(actor=ADMIN, name="billing", source=V2)
    assert (one.version, same.pk, two.version) == (1, one.pk, 2)
    assert Policy.objects.get(name="billing").current == two


def test_a_bad_policy_is_not_stored() -> None:
    with pytest.raises(InvalidInput):
        policy_save(actor=ADMIN, name="billing", source="default_verdict: perhaps\n")
    assert not Policy.objects.exists()


@pytest.mark.parametrize(
    ("ref", "version"),
    [("billing", 2), ("billing@1", 1), ("billing@v2", 2), ("DIGEST1", 1), ("sha256:DIGEST2", 2)],
)
def test_a_policy_resolves_by_name_version_and_digest(ref: str, version: int) -> None:
    one = policy_save(actor=ADMIN, name="billing", source=V1)
    two = policy_save(actor=ADMIN, name="billing", source=V2)
    ref = ref.replace("DIGEST1", one.digest).replace("DIGEST2", two.digest)
    assert policy_resolve(ref=ref).version == version


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        ("nobody", "policy_not_found"),
        ("billing@7", "policy_not_found"),
        ("billing@x", "invalid_policy_ref"),
        ("f" * 64, "policy_not_found"),
    ],
)
def test_unknown_policy_refs_are_refused(ref: str, code: str) -> None:
    policy_save(actor=ADMIN, name="billing", source=V1)
    with pytest.raises((NotFound, InvalidInput)) as info:
        policy_resolve(ref=ref)
    assert info.value.code == code


def test_a_policy_file_binds_a_job_to_its_content_and_survives_the_file_changing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(V2)
    binding = policy_binding_resolve(ref=str(path))
    assert (binding.digest, binding.ref, binding.version.digest) == (
        policy_parse(V2).digest,
        str(path),
        binding.digest,
    )
    assert (
        policy_binding_resolve(ref=str(path)).version.pk == binding.version.pk
    )  # content-addressed
    path.write_text(V1)
    assert policy_binding_resolve(ref=str(path)).version.pk != binding.version.pk
    job = jobs.job_submit(actor=Actor.system("agent"), job_id="job_f1", policy=binding)
    assert gate_evaluate(intent={"tool_name": "t"}, policy=job.policy).verdict == "block"


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        ("missing.yaml", "policy_file_not_found"),
        ("./nope/p.yml", "policy_file_not_found"),
        ("", "invalid_policy_ref"),
    ],
)
def test_a_missing_policy_file_is_refused(ref: str, code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        policy_binding_resolve(ref=ref)
    assert info.value.code == code


def test_a_managed_policy_binds_by_name() -> None:
    version = policy_save(actor=ADMIN, name="billing", source=V1)
    binding = policy_binding_resolve(ref="billing")
    assert (binding.digest, binding.ref, binding.version) == (
        version.digest,
        "policy:billing",
        version,
    )


@pytest.mark.parametrize(
    ("intent", "verdict", "reasons"),
    [
        ({"tool_name": "tool.delete"}, "block", ["destructive_tool_blocked"]),
        (
            {
                "tool_name": "tool.write",
                "context": {"identity": "agent.billing", "workspace": "/srv/prod/x"},
            },
            "block",
            ["prod_write_blocked"],
        ),
        (
            {
                "tool_name": "tool.write",
                "context": {"identity": "agent.billing", "workspace": "/srv/dev/x"},
            },
            "require_approval",
            ["approval_required_for_write"],
        ),
        ({"tool_name": "invoices.refund"}, "require_approval", ["approval_required_for_refund"]),
        (
            {"tool_name": "tool.read", "context": {"risk_class": "low"}},
            "allow",
            ["safe_read_allowed"],
        ),
        (
            {
                "tool_name": "http.get",
                "targets": [{"kind": "url", "value": "https://x.test"}],
                "context": {"risk_class": "high"},
            },
            "dry_run",
            ["external_call_rehearsed"],
        ),
        (
            {"tool_name": "tool.read", "context": {"risk_class": "high"}},
            "require_approval",
            ["default_require_approval"],
        ),
    ],
)
def test_the_example_policy_decides_as_its_comments_say(
    intent: dict[str, Any], verdict: str, reasons: list[str]
) -> None:
    result = gate_evaluate(intent=intent, policy=policy_parse(EXAMPLE.read_text()))
    assert (result.verdict, list(result.reason_codes)) == (verdict, reasons)


# --- CLI ---------------------------------------------------------------------------------------


def run(capsys: Any, *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_policy_save_list_and_show_through_the_cli(capsys: Any, tmp_path: Path) -> None:
    code, saved = run(capsys, "policy", "save", "billing", str(EXAMPLE), "--actor", "ada")
    assert (code, saved["version"], saved["author"], saved["digest"]) == (
        0,
        1,
        "ada",
        policy_parse(EXAMPLE.read_text()).digest,
    )
    code, listed = run(capsys, "policy", "list")
    assert (code, [p["name"] for p in listed["policies"]]) == (0, ["billing"])
    code, shown = run(capsys, "policy", "show", f"sha256:{saved['digest']}")
    assert (code, shown["name"], shown["source"]) == (0, "billing", EXAMPLE.read_text())
    code, missing = run(capsys, "policy", "show", "nobody")
    assert (code, missing["error_code"]) == (6, "policy_not_found")


def test_identity_revoke_through_the_cli(capsys: Any) -> None:
    code, out = run(
        capsys, "identity", "revoke", "agent.billing", "--reason", "key leaked", "--actor", "secops"
    )
    assert (code, out["identity"]) == (0, "agent.billing")
    assert RevokedIdentity.objects.get(identity="agent.billing").revoked_by == "secops"


def test_approval_expire_due_through_the_cli(capsys: Any) -> None:
    jobs.job_submit(actor=Actor.system("agent"), job_id="job_x1")
    req = approval_request_create(actor=ADMIN, job="job_x1", summary="?", expires_in=60)
    ApprovalRequest.objects.filter(pk=req.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    code, out = run(capsys, "approval", "expire-due")
    assert (code, [e["request_id"] for e in out["expired"]]) == (0, [req.request_id])
    assert PolicyVersion.objects.count() == 0  # nothing else was touched


def test_approval_list_and_decide_through_the_cli(capsys: Any) -> None:
    jobs.job_submit(actor=Actor.system("agent-runner", identity="agent.billing"), job_id="job_c1")
    jobs.job_checkpoint_add(
        actor=Actor.system("agent-runner"), job_id="job_c1", type="decision-needed", summary="ok?"
    )
    req = approval_request_create(
        actor=ADMIN, job="job_c1", summary="Refund?", required_approvals=2
    )
    code, listed = run(capsys, "approval", "list", "--job", "job_c1")
    assert (
        code,
        [(r["request_id"], r["approvals"], r["required_approvals"]) for r in listed["requests"]],
    ) == (0, [(req.request_id, 0, 2)])
    code, out = run(
        capsys, "approval", "decide", req.request_id, "approve", "--actor", "agent.billing"
    )
    assert (code, out["error_code"]) == (6, "self_approval_forbidden")
    code, out = run(capsys, "approval", "decide", req.request_id, "approve", "--actor", "rita")
    assert (code, out["status"], out["approvals"]) == (0, "pending", 1)
    code, out = run(
        capsys, "approval", "decide", req.request_id, "approve", "--actor", "rob", "--reason", "ok"
    )
    assert (code, out["status"], out["job_status"]) == (0, "approved", "running")
