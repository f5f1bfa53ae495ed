"""gaitweb.lib.parsing: JSON with a nesting guard, YAML without anchors or aliases."""

from __future__ import annotations

import json

import pytest
import yaml

from gaitweb.lib.errors import InvalidInput
from gaitweb.lib.parsing import JSON_MAX_DEPTH, json_depth, json_loads, yaml_compose, yaml_load
from tests.hostile import alias_bomb, cheaply, deep_json


@pytest.mark.parametrize(
    "text, depth",
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": [2]}]}', 4),
        ('["[[[[", "\\"[[", "\\\\"]', 1),  # brackets, escaped quotes and backslashes in strings
        ('{"k\\\\": "]]]]"}', 1),
        ("[[[[", 4),  # malformed: an upper bound, never less than the truth
    ],
)
def test_json_depth_counts_structure_not_strings(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_json_depth_agrees_with_the_parser_on_generated_documents() -> None:
    def nest(level: int) -> object:
        if level == 0:
            return ['x"[{', "\\", {"]": "}"}]
        return {"a": nest(level - 1), "b": [nest(level - 1) if level < 3 else 1, "]["]}

    for level in range(6):
        text = json.dumps(nest(level))

        def measure(value: object) -> int:
            if isinstance(value, dict):
                return 1 + max((measure(v) for v in value.values()), default=0)
            if isinstance(value, list):
                return 1 + max((measure(v) for v in value), default=0)
            return 0

        assert json_depth(text) == measure(json.loads(text))


def test_json_nested_20000_deep_is_refused_before_parsing_cheaply() -> None:
    result, _, peak = cheaply(lambda: json_loads(deep_json()))

    assert isinstance(result, InvalidInput) and result.code == "json_too_deep"
    assert result.details["max_depth"] == JSON_MAX_DEPTH
    assert peak < 2_000_000


def test_json_at_the_limit_parses_and_one_deeper_is_refused() -> None:
    assert json_loads(deep_json(JSON_MAX_DEPTH)) == json.loads(deep_json(JSON_MAX_DEPTH))
    with pytest.raises(InvalidInput):
        json_loads(deep_json(JSON_MAX_DEPTH + 1))


def test_malformed_json_is_still_a_value_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        json_loads('{"a": ')


def test_the_alias_bomb_is_refused_at_its_first_anchor_without_expanding() -> None:
    result, _, peak = cheaply(lambda: yaml_load(alias_bomb(), what="the spec"))

    assert isinstance(result, InvalidInput) and result.code == "yaml_alias_refused"
    assert result.details == {"line": 1, "anchor": "a"}
    assert "the spec may not use YAML anchors or aliases" in result.message
    assert peak < 2_000_000


def test_an_alias_alone_is_refused_too() -> None:
    # an undefined alias is a syntax error in YAML; a defined one needs an anchor, refused first
    with pytest.raises(InvalidInput) as refused:
        yaml_compose("a: &x 1\nb: *x\n")
    assert refused.value.code == "yaml_alias_refused"


def test_yaml_nested_too_deep_is_refused_without_recursing() -> None:
    result, _, _ = cheaply(lambda: yaml_load("[" * 5000 + "]" * 5000))

    assert isinstance(result, InvalidInput) and result.code == "yaml_too_deep"


def test_plain_yaml_loads_as_safe_load_does_and_syntax_errors_stay_yaml_errors() -> None:
    text = "a: [1, {b: two}]\nc: 2026-01-01\nd: !!str 3\n"
    assert yaml_load(text) == yaml.safe_load(text)
    with pytest.raises(yaml.YAMLError):
        yaml_load("a: [1, 2\n")
    with pytest.raises(yaml.YAMLError):  # no python objects: still the safe constructor
        yaml_load("!!python/object/apply:os.system ['true']")
