"""The `gait job …` CLI: Gait's documented sequence end to end, JSON shape and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobs.management.commands.gait import main
from jobs.models import Job, JobEvent
from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]

POLICY = """\
schema_id: gait.gate.policy
schema_version: 1.0.0
default_verdict: allow
rules:
  - name: block-delete
    priority: 10
    effect: block
    match: {tool_names: [tool.delete]}
"""


def gait(capsys: Any, *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # --json prints exactly one object
    return code, json.loads(out[0])


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "revoked_identities.txt").write_text(
        "# revoked agents\nworker_9\n\nworker_13  # leaked\n"
    )
    return {
        "policy": str(tmp_path / "policy.yaml"),
        "revocations": str(tmp_path / "revoked_identities.txt"),
    }


GAIT_SEQUENCE = [
    ["job", "submit", "--id", "job_1", "--identity", "worker_1", "--policy", "{policy}", "--json"],
    [
        "job",
        "checkpoint",
        "add",
        "--id",
        "job_1",
        "--type",
        "progress",
        "--summary",
        "step 1 complete",
        "--json",
    ],
    ["job", "pause", "--id", "job_1", "--json"],
    ["job", "stop", "--id", "job_1", "--actor", "secops", "--json"],
    [
        "job",
        "approve",
        "--id",
        "job_1",
        "--actor",
        "reviewer_1",
        "--reason",
        "validated input",
        "--json",
    ],
    [
        "job",
        "resume",
        "--id",
        "job_1",
        "--actor",
        "worker_1",
        "--reason",
        "continue after approval",
        "--policy",
        "{policy}",
        "--identity-revocations",
        "{revocations}",
        "--identity-validation-source",
        "revocation_list",
        "--json",
    ],
    ["job", "inspect", "--id", "job_1", "--json"],
    ["job", "status", "--id", "job_1", "--json"],
]


def _fill(argv: list[str], files: dict[str, str]) -> list[str]:
    return [a.format(**files) for a in argv]


@pytest.mark.django_db
def test_gaits_documented_sequence_runs_end_to_end(capsys: Any, files: dict[str, str]) -> None:
    results = [gait(capsys, *_fill(argv, files)) for argv in GAIT_SEQUENCE]
    assert [code for code, _ in results] == [0] * len(GAIT_SEQUENCE)
    ops = [p["operation"] for _, p in results]
    assert ops == [
        "submit",
        "checkpoint_add",
        "pause",
        "stop",
        "approve",
        "resume",
        "inspect",
        "status",
    ]
    assert all(p["ok"] and p["job_id"] == "job_1" for _, p in results)
    statuses = [p["job"]["status"] for _, p in results]
    assert statuses == [
        "running",
        "running",
        "paused",
        "emergency_stopped",
        "emergency_stopped",
        "running",
        "running",
        "running",
    ]
    submit = results[0][1]["job"]
    assert len(submit["policy_digest"]) == 64 and submit["identity"] == "worker_1"
    assert results[1][1]["checkpoint"]["checkpoint_id"] == "cp_0001"
    inspect = results[6][1]
    assert inspect["chain"]["ok"] and inspect["chain"]["events_checked"] == 6
    assert [e["reason_code"] for e in inspect["events"]] == [
        "submitted",
        "checkpoint_progress",
        "paused",
        "emergency_stop_preempted",
        "approval_recorded",
        "resumed",
    ]


@pytest.mark.django_db
def test_resume_refusals_carry_the_error_shape_and_exit_code(
    capsys: Any, files: dict[str, str]
) -> None:
    gait(capsys, *_fill(GAIT_SEQUENCE[0], files))
    gait(capsys, "job", "stop", "--id", "job_1", "--actor", "secops", "--json")
    code, out = gait(
        capsys,
        "job",
        "resume",
        "--id",
        "job_1",
        "--actor",
        "worker_1",
        "--policy",
        files["policy"],
        "--json",
    )
    assert code == 4
    assert (
        out["ok"] is False
        and out["error_code"] == "approval_required"
        and out["retryable"] is False
    )
    assert out["operation"] == "resume" and out["error"] and "hint" in out
    gait(capsys, "job", "approve", "--id", "job_1", "--actor", "reviewer_1", "--json")
    code, out = gait(
        capsys,
        "job",
        "resume",
        "--id",
        "job_1",
        "--actor",
        "worker_2",
        "--policy",
        files["policy"],
        "--json",
    )
    assert (code, out["error_code"]) == (6, "identity_binding_mismatch")
    resume = ["job", "resume", "--id", "job_1", "--actor", "worker_1", "--policy", files["policy"]]
    resume += ["--identity-revocations", files["revocations"], "--json"]
    for revocations in [
        '{"revoked_identities": ["worker_1"]}',
        '["worker_1"]',
        "# list\nworker_1\n",
    ]:
        Path(files["revocations"]).write_text(revocations)
        code, out = gait(capsys, *resume)
        assert (code, out["error_code"]) == (6, "identity_revoked"), revocations
    assert Job.objects.get(job_id="job_1").status == "emergency_stopped"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("argv", "code", "error_code"),
    [
        (["job", "status", "--id", "nope", "--json"], 6, "job_not_found"),
        (["job", "status", "--id", "../etc", "--json"], 6, "invalid_job_id"),
        (
            ["job", "submit", "--id", "j", "--policy", "/no/such/file.yaml", "--json"],
            6,
            "policy_file_not_found",
        ),
        (
            [
                "job",
                "checkpoint",
                "add",
                "--id",
                "job_1",
                "--type",
                "progress",
                "--summary",
                "x" * 600,
                "--json",
            ],
            6,
            "summary_too_long",
        ),
        (
            ["job", "checkpoint", "show", "--id", "job_1", "--checkpoint", "cp_0009", "--json"],
            6,
            "checkpoint_not_found",
        ),
        (
            ["job", "resume", "--id", "job_1", "--identity-revocations", "/no/file", "--json"],
            6,
            "revocations_file_not_found",
        ),
        (["job", "pause", "--json"], 6, "invalid_arguments"),
    ],
)
def test_bad_input_exits_6_with_a_reason_code_and_writes_nothing(
    capsys: Any, argv: list[str], code: int, error_code: str
) -> None:
    main(["job", "submit", "--id", "job_1", "--identity", "w", "--json"])
    capsys.readouterr()
    before = JobEvent.objects.count()
    if error_code == "invalid_arguments":
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == code
        out = json.loads(capsys.readouterr().out.strip())
    else:
        got, out = gait(capsys, *argv)
        assert got == code
    assert out["ok"] is False and out["error_code"] == error_code
    assert JobEvent.objects.count() == before


@pytest.mark.django_db
def test_checkpoint_list_and_show(capsys: Any) -> None:
    gait(capsys, "job", "submit", "--id", "job_1", "--identity", "w", "--json")
    gait(
        capsys,
        "job",
        "checkpoint",
        "add",
        "--id",
        "job_1",
        "--type",
        "plan",
        "--summary",
        "plan it",
        "--json",
    )
    gait(
        capsys,
        "job",
        "checkpoint",
        "add",
        "--id",
        "job_1",
        "--type",
        "decision-needed",
        "--summary",
        "refund?",
        "--required-action",
        "approve refund",
        "--json",
    )
    code, out = gait(capsys, "job", "checkpoint", "list", "--id", "job_1", "--json")
    assert code == 0 and [c["type"] for c in out["checkpoints"]] == ["plan", "decision-needed"]
    code, out = gait(
        capsys, "job", "checkpoint", "show", "--id", "job_1", "--checkpoint", "cp_0002", "--json"
    )
    assert (
        out["checkpoint"]["required_action"] == "approve refund"
        and out["job"]["status"] == "decision_needed"
    )


@pytest.mark.django_db
def test_verify_chain_exits_2_and_names_the_first_bad_revision(capsys: Any) -> None:
    gait(capsys, "job", "submit", "--id", "job_1", "--identity", "w", "--json")
    gait(
        capsys,
        "job",
        "checkpoint",
        "add",
        "--id",
        "job_1",
        "--type",
        "plan",
        "--summary",
        "p",
        "--json",
    )
    assert gait(capsys, "job", "verify-chain", "--id", "job_1", "--json")[0] == 0
    JobEvent.objects.filter(job__job_id="job_1", revision=2).update(reason_code="forged")
    code, out = gait(capsys, "job", "verify-chain", "--id", "job_1", "--json")
    assert (
        code == 2
        and out["chain"]["first_bad_revision"] == 2
        and out["error_code"] == "chain_broken"
    )


@pytest.mark.django_db(transaction=True)
def test_the_sequence_runs_as_real_manage_py_subprocesses(files: dict[str, str]) -> None:
    env = subprocess_env()
    for argv in GAIT_SEQUENCE:
        proc = subprocess.run(
            [sys.executable, "manage.py", "gait", *_fill(argv, files)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["ok"] is True
    assert Job.objects.get(job_id="job_1").status == "running"


@pytest.mark.django_db
def test_a_spec_file_with_the_alias_bomb_or_deep_json_is_exit_6_and_submits_nothing(
    tmp_path: Path, capsys: Any
) -> None:
    from tests.hostile import (
        REFUSAL_PEAK_BYTES,
        cheaply,
        deep_json,
        policy_alias_bomb,
        spec_alias_bomb,
    )

    cases = {
        "bomb.yaml": (spec_alias_bomb(), "yaml_alias_refused"),
        "deep.json": ('{"steps": ' + deep_json() + "}", "json_too_deep"),
        "deep.yaml": ("steps: " + deep_json(5000) + "\n", "yaml_too_deep"),
    }
    for name, (text, code) in cases.items():
        (tmp_path / name).write_text(text)
        (exit_code, out), _, peak = cheaply(
            lambda name=name: gait(
                capsys,
                "job",
                "submit",
                "--id",
                f"j-{name}",
                "--spec",
                str(tmp_path / name),
                "--json",
            )
        )
        assert exit_code == 6 and out["error_code"] == code, (name, out)
        assert peak < REFUSAL_PEAK_BYTES, (name, peak)
    (tmp_path / "policy.yaml").write_text(policy_alias_bomb())
    exit_code, out = gait(
        capsys, "job", "submit", "--id", "j-p", "--policy", str(tmp_path / "policy.yaml"), "--json"
    )
    assert exit_code == 6 and out["error_code"] == "yaml_alias_refused"
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_inspect_of_a_tampered_job_exits_2_not_0(capsys: Any) -> None:
    """A script that gates on `gait job inspect` must not read a forged journal as healthy."""
    gait(capsys, "job", "submit", "--id", "job_1", "--identity", "w", "--json")
    gait(
        capsys,
        "job",
        "checkpoint",
        "add",
        "--id",
        "job_1",
        "--type",
        "plan",
        "--summary",
        "p",
        "--json",
    )
    assert gait(capsys, "job", "inspect", "--id", "job_1", "--json")[0] == 0
    JobEvent.objects.filter(job__job_id="job_1", revision=2).update(reason_code="forged")
    code, out = gait(capsys, "job", "inspect", "--id", "job_1", "--json")
    assert code == 2 and out["ok"] is False and out["error_code"] == "chain_broken"
    assert out["chain"]["first_bad_revision"] == 2 and "BROKEN" in out["summary"]


@pytest.mark.django_db
def test_resuming_a_file_bound_job_without_policy_is_refused_until_the_file_is_given(
    capsys: Any, files: dict[str, str]
) -> None:
    """docs/lifecycle.md: a job bound to a policy file must be given the file again."""
    gait(
        capsys,
        "job",
        "submit",
        "--id",
        "job_1",
        "--identity",
        "w",
        "--policy",
        files["policy"],
        "--json",
    )
    gait(capsys, "job", "pause", "--id", "job_1", "--json")
    code, out = gait(capsys, "job", "resume", "--id", "job_1", "--actor", "w", "--json")
    assert code == 6 and out["error_code"] == "policy_evaluation_required", out
    assert "--policy" in out["hint"] and "GET /api" not in out["hint"]
    assert Job.objects.get(job_id="job_1").status == "paused"
    code, out = gait(
        capsys,
        "job",
        "resume",
        "--id",
        "job_1",
        "--actor",
        "w",
        "--policy",
        files["policy"],
        "--json",
    )
    assert code == 0 and out["job"]["status"] in ("queued", "running"), out
