"""Policy parsing, normalization, digest and evaluation (approvals/policy_format.py), table-driven."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import rfc8785

from approvals.policy_format import (
    Policy,
    intent_parse,
    policy_evaluate,
    policy_parse,
)
from gaitweb.lib.errors import InvalidInput
from tests.conftest import GAIT_COMPAT


def parse(text: str) -> Policy:
    return policy_parse(textwrap.dedent(text))


def evaluate(policy: Policy, **intent: Any) -> Any:
    context = {
        k: intent.pop(k) for k in ("identity", "risk_class", "workspace", "job_id") if k in intent
    }
    return policy_evaluate(
        policy, intent_parse({"tool_name": "tool.read", **intent, "context": context})
    )


def refusal(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse(text)
    return info.value


# --- tiers, strictest-wins, defaults -------------------------------------------------------------

TIERED = """\
default_verdict: allow
rules:
  - name: approve-writes
    priority: 10
    effect: require_approval
    match: {tool_names: [tool.write]}
    reason_codes: [write_needs_approval]
  - name: block-prod-writes
    priority: 10
    effect: block
    match: {tool_names: [tool.write], workspace_prefixes: [/prod]}
    reason_codes: [prod_write_blocked]
    violations: [prod_write]
  - name: dry-run-writes
    priority: 10
    effect: dry_run
    match: {tool_names: [tool.write]}
  - name: allow-everything-write-later
    priority: 20
    effect: allow
    match: {tool_names: [tool.write, tool.delete]}
    reason_codes: [later_tier]
  - name: block-delete-late
    priority: 30
    effect: block
    match: {tool_names: [tool.delete]}
"""


@pytest.mark.parametrize(
    ("intent", "verdict", "reasons", "matched"),
    [
        # strictest effect of the first matching tier wins; its reasons explain the verdict
        (
            {"tool_name": "tool.write", "workspace": "/prod/app"},
            "block",
            ("prod_write_blocked",),
            ("approve-writes", "block-prod-writes", "dry-run-writes"),
        ),
        (
            {"tool_name": "tool.write", "workspace": "/dev/app"},
            "require_approval",
            ("write_needs_approval",),
            ("approve-writes", "dry-run-writes"),
        ),
        # the first tier that matches decides, even when a later tier is stricter
        ({"tool_name": "tool.delete"}, "allow", ("later_tier",), ("allow-everything-write-later",)),
        # no rule matches: the default verdict with reason default_<verdict>
        ({"tool_name": "tool.read"}, "allow", ("default_allow",), ()),
        # tool names compare case-insensitively, as in Gait
        ({"tool_name": "TOOL.Delete"}, "allow", ("later_tier",), ("allow-everything-write-later",)),
    ],
)
def test_first_matching_tier_decides_and_strictest_effect_wins(
    intent: dict[str, Any], verdict: str, reasons: tuple[str, ...], matched: tuple[str, ...]
) -> None:
    outcome = evaluate(parse(TIERED), **intent)
    assert (outcome.verdict, outcome.reason_codes, outcome.matched_rules) == (
        verdict,
        reasons,
        matched,
    )


def test_block_carries_the_deciding_rules_violations() -> None:
    outcome = evaluate(parse(TIERED), tool_name="tool.write", workspace="/prod/x")
    assert outcome.violations == ("prod_write",)


def test_a_rule_without_reason_codes_is_explained_by_its_name() -> None:
    policy = parse("rules: [{name: Dry Run All!, effect: dry_run}]")
    assert evaluate(policy).reason_codes == ("matched_rule_dry_run_all",)


@pytest.mark.parametrize("verdict", ["allow", "block", "dry_run", "require_approval"])
def test_default_verdict_applies_when_nothing_matches(verdict: str) -> None:
    outcome = evaluate(parse(f"default_verdict: {verdict}\nrules: []\n"))
    assert (outcome.verdict, outcome.reason_codes, outcome.matched_rules) == (
        verdict,
        (f"default_{verdict}",),
        (),
    )


def test_default_verdict_is_require_approval_when_omitted() -> None:
    outcome = evaluate(parse("schema_id: gait.gate.policy\n"))
    assert (outcome.verdict, outcome.min_approvals) == ("require_approval", 1)


def test_rules_without_priority_share_tier_zero_and_are_ordered_by_name() -> None:
    policy = parse(
        """\
        rules:
          - {name: b-block, effect: block, match: {tool_names: [x]}}
          - {name: a-allow, effect: allow, match: {tool_names: [x]}}
        """
    )
    assert [r.name for r in policy.rules] == ["a-allow", "b-block"]
    assert evaluate(policy, tool_name="x").verdict == "block"


# --- every matcher -----------------------------------------------------------------------------

BASE_INTENT: dict[str, Any] = {
    "tool_name": "tool.fetch",
    "identity": "agent.billing",
    "risk_class": "high",
    "workspace": "/srv/billing/run-1",
    "targets": [
        {"kind": "url", "value": "https://api.example.test/refunds"},
        {"kind": "path", "value": "/tmp/refund.json", "operation": "write"},
    ],
}


@pytest.mark.parametrize(
    ("match", "matches"),
    [
        ("tool_names: [tool.fetch, tool.other]", True),
        ("tool_names: [tool.other]", False),
        ("tool_name: tool.fetch", True),
        ("risk_classes: [HIGH]", True),
        ("risk_classes: [low, medium]", False),
        ("identities: [agent.billing]", True),
        ("identities: [agent.Billing]", False),  # identities are case-sensitive
        ("target_kinds: [path]", True),
        ("target_kinds: [host, bucket]", False),
        ("target_values: [/tmp/refund.json]", True),
        ("target_values: [/tmp/other.json]", False),
        ("endpoint_classes: [net.http]", True),  # inferred from the url target
        ("endpoint_classes: [fs.write]", True),  # inferred from operation write
        ("endpoint_classes: [fs.delete, proc.exec]", False),
        ("endpoint_class: net.http", True),
        ("workspace_prefixes: [/srv/billing]", True),
        ("workspace_prefixes: [/srv/other, /home]", False),
        # AND across fields
        ("{tool_names: [tool.fetch], risk_classes: [high], target_kinds: [url]}", True),
        ("{tool_names: [tool.fetch], risk_classes: [low]}", False),
    ],
)
def test_each_matcher_is_any_within_a_list_and_all_across_fields(match: str, matches: bool) -> None:
    body = match if match.startswith("{") else "{" + match + "}"
    policy = parse(
        f"default_verdict: allow\nrules:\n  - name: r\n    effect: block\n    match: {body}\n"
    )
    assert (evaluate(policy, **BASE_INTENT).verdict == "block") is matches


def test_min_approvals_and_distinct_approvers_come_from_the_deciding_rule() -> None:
    policy = parse(
        """\
        rules:
          - {name: two, effect: require_approval, min_approvals: 2, match: {tool_names: [t]}}
          - {name: one, effect: require_approval, match: {tool_names: [u]}}
        """
    )
    two, one = evaluate(policy, tool_name="t"), evaluate(policy, tool_name="u")
    assert (two.min_approvals, two.require_distinct_approvers) == (2, True)
    assert (one.min_approvals, one.require_distinct_approvers) == (1, False)


# --- strict parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "line", "key"),
    [
        ("default_verdict: allow\nfoo: 1\n", "policy_unknown_key", 2, "foo"),
        (
            "rules:\n  - name: r\n    effect: allow\n    matches: {}\n",
            "policy_unknown_key",
            4,
            "matches",
        ),
        (
            "rules:\n  - name: r\n    effect: allow\n    match:\n      tool: [x]\n",
            "policy_unknown_key",
            5,
            "tool",
        ),
        ("default_verdict: maybe\n", "policy_invalid_value", 1, "default_verdict"),
        ("rules:\n  - name: r\n    effect: deny\n", "policy_invalid_value", 3, "effect"),
        (
            "rules:\n  - name: r\n    priority: high\n    effect: allow\n",
            "policy_invalid_value",
            3,
            "priority",
        ),
        (
            "rules:\n  - name: r\n    effect: allow\n    min_approvals: -1\n",
            "policy_invalid_value",
            4,
            "min_approvals",
        ),
        (
            "rules:\n  - name: r\n    effect: allow\n    match: {tool_names: tool.read}\n",
            "policy_invalid_value",
            4,
            "tool_names",
        ),
        (
            "rules:\n  - name: r\n    effect: allow\n    match: {endpoint_classes: [fs.nuke]}\n",
            "policy_invalid_value",
            4,
            "endpoint_classes",
        ),
        (
            "rules:\n  - name: r\n    effect: allow\n    require_distinct_approvers: yes please\n",
            "policy_invalid_value",
            4,
            "require_distinct_approvers",
        ),
        ("rules:\n  - effect: allow\n", "policy_missing_key", 2, "name"),
        ("rules:\n  - name: r\n", "policy_missing_key", 2, "effect"),
        (
            "default_verdict: allow\ndefault_verdict: block\n",
            "policy_duplicate_key",
            2,
            "default_verdict",
        ),
        (
            "rules:\n  - {name: r, effect: allow}\n  - {name: r, effect: block}\n",
            "policy_invalid_value",
            3,
            "name",
        ),
        ("schema_version: 2.0.0\n", "policy_invalid_value", 1, "schema_version"),
        ("fail_closed:\n  enabled: true\n", "policy_unsupported_key", 1, "fail_closed"),
        (
            "rules:\n  - name: r\n    effect: allow\n    rate_limit: {requests: 3}\n",
            "policy_unsupported_key",
            4,
            "rate_limit",
        ),
        (
            "rules:\n  - name: r\n    effect: allow\n    match:\n      provenance_sources: [external]\n",
            "policy_unsupported_key",
            5,
            "provenance_sources",
        ),
        ("rules: [\n", "policy_syntax_error", 2, ""),
        ("a: &x [1]\nb: *x\n", "yaml_alias_refused", 1, ""),
        ("default_verdict: !!python/name:os.system\n", "policy_invalid_value", 1, ""),
        (
            "rules:\n  - name: r\n    effect: allow\n    priority: !!int ten\n",
            "policy_invalid_value",
            4,
            "",
        ),
        ("- just\n- a list\n", "policy_invalid_value", 1, ""),
    ],
)
def test_bad_policies_are_refused_naming_the_line_and_the_key(
    text: str, code: str, line: int, key: str
) -> None:
    error = refusal(text)
    assert (error.code, error.details["line"], error.details["key"]) == (code, line, key)
    assert error.message.startswith(f"line {line}:")
    if key:
        assert f"'{key}'" in error.message


def test_an_oversized_policy_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidInput) as info:
        policy_parse("#" * (2 * 1024 * 1024))
    assert info.value.code == "policy_too_large"


def test_unsupported_gait_keys_are_refused_by_name_not_ignored() -> None:
    error = refusal((GAIT_COMPAT / "starter" / "base_high_risk.yaml").read_text())
    assert error.code == "policy_unsupported_key"
    assert "'fail_closed'" in error.message and "not supported by gaitweb" in error.message
    refused = {p["key"] for p in error.details["problems"]}
    assert {
        "fail_closed",
        "endpoint",
        "destructive_budget",
        "broker_reference",
        "tool_annotations",
        "provenance_sources",
        "require_delegation",
    } <= refused


def test_every_problem_is_reported_not_only_the_first() -> None:
    error = refusal(
        "default_verdict: nope\nrules:\n  - name: r\n    effect: allow\n    colour: red\n"
    )
    assert [(p["line"], p["key"]) for p in error.details["problems"]] == [
        (1, "default_verdict"),
        (5, "colour"),
    ]


# --- digest ------------------------------------------------------------------------------------

ORIGINAL = """\
schema_id: gait.gate.policy
schema_version: 1.0.0
default_verdict: block
rules:
  - name: allow-read
    priority: 10
    effect: allow
    match:
      tool_names: [tool.read, tool.list]
    reason_codes: [ok_read]
  - name: approve-write
    priority: 20
    effect: require_approval
    min_approvals: 2
    match:
      tool_names: [tool.write]
"""

REFORMATTED = """\
# same policy, different layout, comments, key order, list order, case and aliases
rules:
- match: {tool_names: [TOOL.LIST, tool.read, tool.read]}   # duplicates and case fold away
  effect: ALLOW
  reason_codes: [ok_read]
  name: allow-read
  priority: 10
- {name: approve-write, effect: require_approval, priority: 20, min_approvals: 2,
   require_distinct_approvers: true, match: {tool_name: tool.write}}
default_verdict: block
"""


def test_digest_is_stable_under_reformatting_comments_and_key_order() -> None:
    assert parse(ORIGINAL).digest == parse(REFORMATTED).digest


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("priority: 20", "priority: 21"),
        ("effect: require_approval", "effect: block"),
        ("min_approvals: 2", "min_approvals: 3"),
        ("[tool.write]", "[tool.write, tool.put]"),
        ("[ok_read]", "[ok_read, also]"),
        ("default_verdict: block", "default_verdict: allow"),
        ("default_verdict: block", "default_verdict: block\nforbid_self_approval: false"),
    ],
)
def test_digest_changes_when_a_rule_or_default_changes(old: str, new: str) -> None:
    assert old in ORIGINAL
    assert parse(ORIGINAL.replace(old, new)).digest != parse(ORIGINAL).digest


def test_a_stored_normalized_policy_rebuilds_to_the_same_digest() -> None:
    policy = parse(ORIGINAL)
    assert Policy.from_normalized(policy.normalized()).digest == policy.digest


# --- intents -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("intent", "path"),
    [
        ([], "intent"),
        ({}, "tool_name"),
        ({"tool_name": 3}, "tool_name"),
        ({"tool_name": "t", "args": []}, "args"),
        ({"tool_name": "t", "targets": {}}, "targets"),
        ({"tool_name": "t", "targets": [{"kind": "path"}]}, "targets[0]"),
        (
            {
                "tool_name": "t",
                "targets": [{"kind": "path", "value": "/x", "endpoint_class": "fs.nuke"}],
            },
            "targets[0].endpoint_class",
        ),
        ({"tool_name": "t", "context": {"identity": ["a"]}}, "context.identity"),
        ({"tool_name": "t", "schema_id": "other"}, "schema_id"),
    ],
)
def test_malformed_intents_are_refused_with_the_path_of_the_field(intent: Any, path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        intent_parse(intent)
    assert (info.value.code, info.value.details["path"]) == ("intent_invalid", path)


@pytest.mark.parametrize("bad", [float("nan"), 2**64, "\udc80"])
def test_intent_args_that_json_cannot_canonicalize_are_bad_input(bad: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        intent_parse({"tool_name": "t", "args": {"x": bad}})
    assert info.value.details["path"] == "args"


def test_intent_digest_ignores_target_order_and_unused_gait_fields() -> None:
    a = intent_parse(
        {
            "tool_name": "t",
            "targets": [{"kind": "path", "value": "/a"}, {"kind": "url", "value": "http://b"}],
            "created_at": "2026-01-01T00:00:00Z",
        }
    )
    b = intent_parse(
        {
            "tool_name": "T",
            "targets": [{"kind": "url", "value": "http://b"}, {"kind": "path", "value": "/a"}],
            "arg_provenance": [],
        }
    )
    c = intent_parse({"tool_name": "t", "targets": [{"kind": "path", "value": "/a"}]})
    assert a.digest == b.digest != c.digest


@pytest.mark.parametrize(
    "args",
    [
        {"b": 1, "a": [True, None, 'x\n\t"\\\u0001'], "c": {"z": -(2**52)}},
        {"float": 1.5, "big": 2**40, "neg": -0.25},
        {"text": "héllo ☃ 𝄞", "\u00e9": 1, "\U0001d11e": 2, "\uffff": 3},
    ],
)
def test_the_intent_digest_is_sha256_of_rfc8785_json(args: Any) -> None:
    import hashlib

    intent = intent_parse(
        {"tool_name": "t", "args": args, "targets": [{"kind": "path", "value": "/ä"}]}
    )
    assert intent.digest == hashlib.sha256(rfc8785.dumps(intent.as_dict())).hexdigest()
