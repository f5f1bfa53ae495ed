"""Gait-compatibility: Gait-format policies and intents give Gait's verdicts and exit codes,
through the gate service and through `gait gate eval`.

The cases are the project's own data (tests/approvals/gait_compat/, see its README). When a
checkout of Gait's published vectors is at hand (``GAIT_VECTORS_DIR``, same layout), every case
runs against those files too; otherwise those runs are skipped with a reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from approvals.gate import gate_evaluate
from approvals.policy_format import policy_parse
from jobs.management.commands.gait import main
from tests.conftest import GAIT_COMPAT as BUNDLED
from tests.conftest import GAIT_VECTORS

EXIT = {"allow": 0, "dry_run": 0, "block": 3, "require_approval": 4}
EXTERNAL_MISSING = (
    "Gait's published vectors are not here (set GAIT_VECTORS_DIR to a checkout of them)"
)


def _cases(root: Path, source: str) -> list[Any]:
    """Every row of the cases table in ``root``'s README, read from the files themselves."""
    cases = []
    for policy in ("allow", "block", "require_approval"):
        cases.append(
            pytest.param(
                root,
                f"policy-test/{policy}.yaml",
                "policy-test/intent.json",
                None,
                policy,
                id=f"{source}-policy-test-{policy}",
            )
        )
    for starter in ("base_low_risk", "base_medium_risk"):
        for intent, verdict in (
            ("read", "allow"),
            ("write", "require_approval"),
            ("delete", "block"),
        ):
            cases.append(
                pytest.param(
                    root,
                    f"starter/{starter}.yaml",
                    f"starter/intent_{intent}.json",
                    None,
                    verdict,
                    id=f"{source}-{starter}-{intent}",
                )
            )
    for scenario in sorted((root / "scenarios").iterdir()):
        intents = (scenario / "intents.jsonl").read_text().splitlines()
        expected = (scenario / "expected-verdicts.jsonl").read_text().splitlines()
        assert len(intents) == len(expected) > 0
        for line, (intent, want) in enumerate(zip(intents, expected, strict=True)):
            want_row = json.loads(want)
            assert EXIT[want_row["verdict"]] == want_row["exit_code"]
            cases.append(
                pytest.param(
                    root,
                    f"scenarios/{scenario.name}/policy.yaml",
                    intent,
                    line,
                    want_row["verdict"],
                    id=f"{source}-{scenario.name}-{line + 1}",
                )
            )
    return cases


def _roots() -> list[Any]:
    external = pytest.param(
        GAIT_VECTORS,
        id="gait",
        marks=pytest.mark.skipif(not GAIT_VECTORS.is_dir(), reason=EXTERNAL_MISSING),
    )
    return [pytest.param(BUNDLED, id="bundled"), external]


CASES = _cases(BUNDLED, "bundled")
if GAIT_VECTORS.is_dir():
    CASES += _cases(GAIT_VECTORS, "gait")
else:
    CASES.append(
        pytest.param(
            GAIT_VECTORS,
            "",
            "",
            None,
            "",
            id="gait",
            marks=pytest.mark.skip(reason=EXTERNAL_MISSING),
        )
    )


def _intent(vectors: Path, intent: str, line: int | None) -> dict[str, Any]:
    return json.loads(intent if line is not None else (vectors / intent).read_text())


@pytest.mark.parametrize("root", _roots())
def test_the_cases_cover_every_scenario_line(root: Path) -> None:
    lines = sum(
        len((s / "intents.jsonl").read_text().splitlines()) for s in (root / "scenarios").iterdir()
    )
    assert len([c for c in CASES if c.values[0] == root]) == 3 + 6 + lines
    assert lines >= 8


@pytest.mark.parametrize(("gait_vectors", "policy", "intent", "line", "verdict"), CASES)
def test_the_gate_gives_gaits_verdict(
    gait_vectors: Path, policy: str, intent: str, line: int | None, verdict: str
) -> None:
    result = gate_evaluate(
        intent=_intent(gait_vectors, intent, line),
        policy=policy_parse((gait_vectors / policy).read_text()),
    )
    assert result.verdict == verdict
    assert result.exit_code == EXIT[verdict]
    assert len(result.policy_digest) == len(result.intent_digest) == 64


@pytest.mark.parametrize(("gait_vectors", "policy", "intent", "line", "verdict"), CASES)
def test_gate_eval_cli_prints_the_verdict_and_exits_with_gaits_code(
    gait_vectors: Path,
    tmp_path: Path,
    capsys: Any,
    policy: str,
    intent: str,
    line: int | None,
    verdict: str,
) -> None:
    intent_file = gait_vectors / intent if line is None else tmp_path / "intent.json"
    if line is not None:
        intent_file.write_text(intent)
    code = main(
        [
            "gate",
            "eval",
            "--policy",
            str(gait_vectors / policy),
            "--intent",
            str(intent_file),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT[verdict]
    assert (out["ok"], out["operation"], out["verdict"]) == (True, "gate eval", verdict)
    assert out["reason_codes"]


@pytest.mark.parametrize("gait_vectors", _roots())
@pytest.mark.parametrize("intent", ["intent_read.json", "intent_write.json", "intent_delete.json"])
def test_the_high_risk_starter_is_refused_by_the_name_of_its_unsupported_key(
    gait_vectors: Path, capsys: Any, intent: str
) -> None:
    code = main(
        [
            "gate",
            "eval",
            "--policy",
            str(gait_vectors / "starter/base_high_risk.yaml"),
            "--intent",
            str(gait_vectors / "starter" / intent),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 6
    assert out["ok"] is False
    assert out["error_code"] == "policy_unsupported_key"
    assert "'fail_closed'" in out["error"] and "line 4" in out["error"]


@pytest.mark.parametrize("gait_vectors", _roots())
def test_policy_digest_cli_matches_the_service_and_ignores_formatting(
    gait_vectors: Path, tmp_path: Path, capsys: Any
) -> None:
    source = (gait_vectors / "starter/base_low_risk.yaml").read_text()
    reformatted = tmp_path / "p.yaml"
    reformatted.write_text(
        "# a comment\n"
        + source.replace("priority: 10\n    effect: block", "effect: block\n    priority: 10")
    )
    assert main(["policy", "digest", str(reformatted), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy_digest"] == policy_parse(source).digest


@pytest.mark.parametrize(
    ("policy_text", "intent_text", "code", "error_code"),
    [
        ("default_verdict: allow\n", "{not json", 6, "intent_invalid"),
        ("default_verdict: allow\n", '{"args": {}}', 6, "intent_invalid"),
        ("default_verdict: sometimes\n", '{"tool_name": "t"}', 6, "policy_invalid_value"),
    ],
)
def test_gate_eval_cli_refuses_bad_files_with_exit_6(
    tmp_path: Path, capsys: Any, policy_text: str, intent_text: str, code: int, error_code: str
) -> None:
    (tmp_path / "p.yaml").write_text(policy_text)
    (tmp_path / "i.json").write_text(intent_text)
    assert (
        main(
            [
                "gate",
                "eval",
                "--policy",
                str(tmp_path / "p.yaml"),
                "--intent",
                str(tmp_path / "i.json"),
                "--json",
            ]
        )
        == code
    )
    assert json.loads(capsys.readouterr().out)["error_code"] == error_code


def test_gate_eval_cli_refuses_a_missing_policy_file(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "i.json").write_text('{"tool_name": "t"}')
    assert (
        main(
            [
                "gate",
                "eval",
                "--policy",
                str(tmp_path / "nope.yaml"),
                "--intent",
                str(tmp_path / "i.json"),
                "--json",
            ]
        )
        == 6
    )
    assert json.loads(capsys.readouterr().out)["error_code"] == "policy_unreadable"


def test_gate_eval_cli_exits_0_for_dry_run(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "p.yaml").write_text("default_verdict: dry_run\n")
    (tmp_path / "i.json").write_text('{"tool_name": "tool.deploy"}')
    code = main(
        [
            "gate",
            "eval",
            "--policy",
            str(tmp_path / "p.yaml"),
            "--intent",
            str(tmp_path / "i.json"),
            "--json",
        ]
    )
    assert (code, json.loads(capsys.readouterr().out)["verdict"]) == (0, "dry_run")
