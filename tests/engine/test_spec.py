"""Spec validation: normalized output, and refusals that name the offending field."""

from __future__ import annotations

from typing import Any

import pytest

from gaitweb.lib.errors import InvalidInput, LimitExceeded
from jobs.spec import duration_parse, spec_load, spec_validate, step_backoff_seconds


def py(name: str = "a", **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "python", "with": {"function": "echo"}, **extra}


def refused(spec: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        spec_validate(spec)
    return info.value


def test_a_valid_spec_is_normalized_with_defaults_and_seconds() -> None:
    spec = spec_validate(
        {
            "deadline": "1h30m",
            "steps": [
                py(
                    "fetch",
                    retry={"max_attempts": 5, "initial_interval": "500ms", "max_interval": "1m"},
                    timeout="30s",
                ),
                {"name": "nap", "kind": "sleep", "with": {"duration": "2s"}},
                {"name": "go", "kind": "wait_event", "with": {"signal": "go", "timeout": "24h"}},
                {
                    "name": "ok",
                    "kind": "approval",
                    "with": {"summary": "Refund?", "required_approvals": 2},
                },
                {
                    "name": "run",
                    "kind": "command",
                    "with": {"argv": ["true"]},
                    "tool": "shell.exec",
                },
            ],
        }
    )
    fetch, nap, go, ok, run = spec["steps"]
    assert spec["deadline_seconds"] == 5400
    assert fetch["retry"] == {
        "max_attempts": 5,
        "initial_interval": 0.5,
        "backoff": 2.0,
        "max_interval": 60.0,
        "non_retryable": [],
    }
    assert fetch["timeout"] == 30 and fetch["idempotent"] is False and fetch["tool"] == "python"
    assert nap["with"] == {"duration": 2.0} and nap["idempotent"] is True
    assert go["with"] == {"signal": "go", "timeout": 86400.0}
    assert ok["with"]["required_approvals"] == 2 and ok["with"]["on_expiry"] == "reject"
    assert run["tool"] == "shell.exec" and run["with"] == {
        "shell": False,
        "argv": ["true"],
        "cwd": "",
        "env": {},
    }


@pytest.mark.parametrize(
    ("spec", "code", "path"),
    [
        (
            {"steps": [py(), py("b"), py("c", retry={"max_attempts": 0})]},
            "spec_invalid",
            "steps[2].retry.max_attempts",
        ),
        (
            {"steps": [py(retry={"max_attempts": 2, "jitter": True})]},
            "spec_unknown_field",
            "steps[0].retry.jitter",
        ),
        ({"steps": [py(timeout="soon")]}, "spec_invalid_duration", "steps[0].timeout"),
        ({"steps": [{"name": "a", "kind": "teleport"}]}, "spec_unknown_kind", "steps[0].kind"),
        (
            {"steps": [{"name": "a", "kind": "python", "with": {"function": "nope"}}]},
            "spec_unknown_function",
            "steps[0].with.function",
        ),
        ({"steps": [py(), py()]}, "spec_duplicate_step_name", "steps[1].name"),
        ({"steps": [{"kind": "python"}]}, "spec_missing_field", "steps[0].name"),
        (
            {"steps": [{"name": "a", "kind": "command", "with": {"command": "ls | wc"}}]},
            "spec_invalid",
            "steps[0].with.command",
        ),
        (
            {"steps": [{"name": "a", "kind": "http", "with": {"url": "ftp://x"}}]},
            "spec_invalid",
            "steps[0].with.url",
        ),
        (
            {"steps": [{"name": "a", "kind": "sleep", "with": {"duration": "1s"}, "retry": {}}]},
            "spec_invalid",
            "steps[0].retry",
        ),
        ({"steps": [], "stepz": []}, "spec_unknown_field", "stepz"),
        ({"steps": [py(name="bad name")]}, "spec_invalid", "steps[0].name"),
        ({"steps": [py(timeout="48h")]}, "spec_duration_too_long", "steps[0].timeout"),
        ({"steps": "all of them"}, "spec_invalid", "steps"),
    ],
)
def test_a_bad_spec_is_refused_with_the_path_of_the_offending_field(
    spec: Any, code: str, path: str
) -> None:
    err = refused(spec)
    assert (err.code, err.details["path"]) == (code, path)


def test_an_oversized_spec_is_refused_before_it_is_parsed(settings: Any) -> None:
    settings.GAIT = {**settings.GAIT, "SPEC_MAX_BYTES": 200}
    with pytest.raises(LimitExceeded) as info:
        spec_validate({"steps": [py(str(i)) for i in range(10)]})
    assert info.value.code == "spec_too_large"


def test_yaml_and_json_files_load_and_yaml_errors_carry_a_line() -> None:
    text = "steps:\n  - name: a\n    kind: sleep\n    with: {duration: 5m}\n"
    assert spec_validate(spec_load(text))["steps"][0]["with"]["duration"] == 300
    assert spec_validate('{"steps": []}') == {
        "steps": [],
        "deadline_seconds": None,
        "description": "",
    }
    with pytest.raises(InvalidInput) as info:
        spec_load("steps:\n  - name: [unclosed\n")
    assert info.value.code == "spec_unparseable" and info.value.details["line"] >= 2


def test_durations_accept_numbers_units_and_compounds() -> None:
    assert duration_parse(30, "t") == 30
    assert duration_parse("250ms", "t") == 0.25
    assert duration_parse("1d2h", "t") == 93600
    for bad in ("-1s", "", "1x", True, None):
        with pytest.raises(InvalidInput):
            duration_parse(bad, "t")


def test_backoff_grows_by_the_factor_and_stops_at_the_cap() -> None:
    retry = {"initial_interval": 1.0, "backoff": 3.0, "max_interval": 5.0}
    assert [step_backoff_seconds(retry, n) for n in (1, 2, 3)] == [1.0, 3.0, 5.0]
