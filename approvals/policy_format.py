"""Gate policies: strict YAML parsing with line numbers, normalization, digest, evaluation.

The format is Gait's ``gait.gate.policy`` 1.0.0 shape, restricted to what gaitweb enforces
(docs/policy-format.md). Parsing walks PyYAML's node tree rather than the constructed Python
objects, because only the nodes remember where each key was written: every refusal names the
line and the key. Keys that Gait knows but gaitweb does not enforce are refused by name — a
policy that is only partly enforced is worse than none.

Evaluation runs on a ``CompiledPolicy`` (built once per digest and cached): rules are grouped
in priority tiers and indexed by tool name, so a 200-rule policy costs a handful of set lookups
per intent, not 200 rule walks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gaitweb.lib import reasons
from gaitweb.lib.canonical import canonical_json, sha256_hex
from gaitweb.lib.errors import InvalidInput
from gaitweb.lib.parsing import yaml_compose

SCHEMA_ID = "gait.gate.policy"
SCHEMA_VERSION = "1.0.0"
INTENT_SCHEMA_ID = "gait.gate.intent_request"

# Strictness order (docs/policy-format.md): within a tier the strictest matching effect wins.
VERDICTS = ("allow", "dry_run", "require_approval", "block")
STRICTNESS = {verdict: rank for rank, verdict in enumerate(VERDICTS)}
DEFAULT_VERDICT = "require_approval"
MAX_MIN_APPROVALS = 20
POLICY_MAX_CHARS = 1024 * 1024

# Gait's closed endpoint-class vocabulary: a typo in a policy would silently never match.
ENDPOINT_CLASSES = frozenset(
    {
        "fs.read",
        "fs.write",
        "fs.delete",
        "proc.exec",
        "net.http",
        "net.dns",
        "ui.click",
        "ui.type",
        "ui.navigate",
        "other",
    }
)

# match keys: name -> lower-case the values? (Gait lower-cases class-like lists; identities,
# target values and workspace prefixes are compared as written, since paths are case-sensitive.)
MATCH_KEYS = {
    "tool_names": True,
    "risk_classes": True,
    "identities": False,
    "target_kinds": True,
    "target_values": False,
    "endpoint_classes": True,
    "workspace_prefixes": False,
}
# Gait's single-value aliases, merged into their list form.
MATCH_ALIASES = {"tool_name": "tool_names", "endpoint_class": "endpoint_classes"}

TOP_KEYS = {
    "schema_id",
    "schema_version",
    "default_verdict",
    "default_action",
    "forbid_self_approval",
    "rules",
}
RULE_KEYS = {
    "name",
    "priority",
    "effect",
    "action",
    "match",
    "reason_codes",
    "violations",
    "min_approvals",
    "require_distinct_approvers",
}

# Keys of Gait's richer format that gaitweb does not enforce: refused by name, never ignored.
UNSUPPORTED_TOP_KEYS = {"fail_closed", "scripts", "mcp_trust"}
UNSUPPORTED_RULE_KEYS = {
    "endpoint",
    "dataflow",
    "rate_limit",
    "destructive_budget",
    "require_context_evidence",
    "required_context_evidence_mode",
    "max_context_age_seconds",
    "require_broker_credential",
    "broker_reference",
    "broker_scopes",
    "block_standing_credentials",
    "allowed_credential_sources",
    "allowed_credential_issuers",
    "allowed_credential_access_types",
    "max_credential_ttl_seconds",
    "require_jit_credential",
}
UNSUPPORTED_MATCH_KEYS = {
    "discovery_method",
    "tool_annotations",
    "skill_publishers",
    "skill_sources",
    "data_classes",
    "destination_kinds",
    "destination_values",
    "destination_operations",
    "provenance_sources",
    "context_tool_names",
    "context_data_classes",
    "context_endpoint_classes",
    "context_autonomy_levels",
    "require_delegation",
    "allowed_delegator_identities",
    "allowed_delegate_identities",
    "delegation_scopes",
    "max_delegation_depth",
}


# --- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyProblem:
    line: int
    path: str
    key: str
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "path": self.path,
            "key": self.key,
            "code": self.code,
            "message": self.message,
        }


_UNREADABLE = object()  # a value the safe YAML constructor refused (already reported)


class _Walker:
    """Turns the YAML node tree into plain values, collecting every problem with its line."""

    def __init__(self) -> None:
        self.problems: list[PolicyProblem] = []
        self._constructor = SafeConstructor()

    def problem(self, node: Node | None, path: str, key: str, code: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.problems.append(PolicyProblem(line, path, key, code, f"line {line}: {message}"))

    def scalar(self, node: Node) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:  # e.g. `!!python/…` or `!!int x`
            problem = getattr(exc, "problem", None) or str(exc)
            self.problem(node, "", "", reasons.POLICY_INVALID_VALUE, f"unreadable value: {problem}")
            return _UNREADABLE

    def mapping(
        self, node: Node, path: str, allowed: set[str], unsupported: set[str], what: str
    ) -> dict[str, tuple[Node, Node]]:
        """The keys of a mapping node (key -> (key node, value node)), refusing unknown,
        unsupported and duplicate keys."""
        if not isinstance(node, MappingNode):
            self.problem(
                node,
                path,
                path.rsplit(".", 1)[-1],
                reasons.POLICY_INVALID_VALUE,
                f"{path or 'the policy'} must be a mapping",
            )
            return {}
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node) if isinstance(key_node, ScalarNode) else None
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                self.problem(
                    key_node,
                    path,
                    str(key),
                    reasons.POLICY_INVALID_VALUE,
                    f"keys in {what} must be strings",
                )
                continue
            if key in out:
                self.problem(
                    key_node,
                    where,
                    key,
                    reasons.POLICY_DUPLICATE_KEY,
                    f"key '{key}' appears twice in {what}",
                )
                continue
            if key in unsupported:
                self.problem(
                    key_node,
                    where,
                    key,
                    reasons.POLICY_UNSUPPORTED_KEY,
                    f"key '{key}' in {what} is a Gait policy feature not supported by gaitweb; "
                    "it would not be enforced, so the policy is refused",
                )
                continue
            if key not in allowed:
                self.problem(
                    key_node,
                    where,
                    key,
                    reasons.POLICY_UNKNOWN_KEY,
                    f"unknown key '{key}' in {what} (allowed: {', '.join(sorted(allowed))})",
                )
                continue
            out[key] = (key_node, value_node)
        return out

    def string(self, node: Node, path: str, key: str, *, lower: bool = False) -> str | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, str) or not value.strip():
            self.problem(
                node, path, key, reasons.POLICY_INVALID_VALUE, f"'{key}' must be a non-empty string"
            )
            return None
        value = value.strip()
        return value.lower() if lower else value

    def integer(
        self,
        node: Node,
        path: str,
        key: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(
                node, path, key, reasons.POLICY_INVALID_VALUE, f"'{key}' must be an integer"
            )
            return None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.problem(
                node,
                path,
                key,
                reasons.POLICY_INVALID_VALUE,
                f"'{key}' must be between {minimum} and {maximum}",
            )
            return None
        return value

    def boolean(self, node: Node, path: str, key: str) -> bool | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, bool):
            self.problem(
                node, path, key, reasons.POLICY_INVALID_VALUE, f"'{key}' must be true or false"
            )
            return None
        return value

    def verdict(self, node: Node, path: str, key: str) -> str | None:
        value = self.string(node, path, key, lower=True)
        if value is not None and value not in STRICTNESS:
            self.problem(
                node,
                path,
                key,
                reasons.POLICY_INVALID_VALUE,
                f"'{key}' must be one of {', '.join(VERDICTS)}, not '{value}'",
            )
            return None
        return value

    def string_list(self, node: Node, path: str, key: str, *, lower: bool) -> list[str] | None:
        if not isinstance(node, SequenceNode):
            self.problem(
                node, path, key, reasons.POLICY_INVALID_VALUE, f"'{key}' must be a list of strings"
            )
            return None
        values: list[str] = []
        for item in node.value:
            value = self.string(item, path, key, lower=lower)
            if value is None:
                return None
            values.append(value)
        return values


def _compose(source: str) -> Node | None:
    try:
        # Anchors and aliases are refused before anything is composed (gaitweb.lib.parsing): a
        # policy has no use for them, and an alias bomb would make the walk below exponential.
        return yaml_compose(source, what="a policy")
    except InvalidInput as exc:  # yaml_alias_refused, yaml_too_deep
        line = int(exc.details.get("line", 1))
        raise _invalid([PolicyProblem(line, "", "", exc.code, exc.message)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = PolicyProblem(
            line,
            "",
            "",
            "policy_syntax_error",
            f"line {line}: YAML syntax error: {exc.problem or exc}",
        )
        raise _invalid([problem]) from None
    except yaml.YAMLError as exc:
        raise _invalid(
            [PolicyProblem(1, "", "", "policy_syntax_error", f"YAML error: {exc}")]
        ) from None


def _invalid(problems: list[PolicyProblem]) -> InvalidInput:
    first = problems[0]
    more = (
        f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
        if len(problems) > 1
        else ""
    )
    return InvalidInput(
        first.code,
        first.message + more,
        details={
            "line": first.line,
            "key": first.key,
            "path": first.path,
            "problems": [p.as_dict() for p in problems],
        },
        hint="see docs/policy-format.md",
    )


def policy_parse(source: str) -> Policy:
    """Parse policy YAML strictly. Raises ``InvalidInput`` naming the line and key of every
    problem (``details["problems"]``); the first one is the error's code and message."""
    if not isinstance(source, str):
        raise InvalidInput(reasons.POLICY_INVALID_VALUE, "policy source must be text")
    if len(source) > POLICY_MAX_CHARS:
        raise InvalidInput(
            reasons.POLICY_TOO_LARGE,
            f"a policy is at most {POLICY_MAX_CHARS} characters",
            details={"max_chars": POLICY_MAX_CHARS},
        )
    root = _compose(source)
    if root is None:
        raise _invalid(
            [PolicyProblem(1, "", "", "policy_invalid_value", "line 1: the policy is empty")]
        )
    w = _Walker()
    top = w.mapping(root, "", TOP_KEYS, UNSUPPORTED_TOP_KEYS, "the policy")

    schema_id, schema_version = SCHEMA_ID, SCHEMA_VERSION
    if "schema_id" in top:
        schema_id = w.string(top["schema_id"][1], "schema_id", "schema_id") or SCHEMA_ID
        if schema_id != SCHEMA_ID:
            w.problem(
                top["schema_id"][1],
                "schema_id",
                "schema_id",
                reasons.POLICY_INVALID_VALUE,
                f"'schema_id' must be {SCHEMA_ID}",
            )
    if "schema_version" in top:
        node = top["schema_version"][1]
        raw = w.scalar(node) if isinstance(node, ScalarNode) else None
        schema_version = str(raw).strip() if raw is not None else ""
        if schema_version != SCHEMA_VERSION:
            w.problem(
                node,
                "schema_version",
                "schema_version",
                reasons.POLICY_INVALID_VALUE,
                f"'schema_version' must be {SCHEMA_VERSION}",
            )

    default_verdict = None
    if "default_verdict" in top:
        default_verdict = w.verdict(top["default_verdict"][1], "default_verdict", "default_verdict")
    if "default_action" in top:  # Gait's alias; both may be given only if they agree
        action = w.verdict(top["default_action"][1], "default_action", "default_action")
        if default_verdict is not None and action is not None and action != default_verdict:
            w.problem(
                top["default_action"][1],
                "default_action",
                "default_action",
                reasons.POLICY_INVALID_VALUE,
                "'default_action' must match 'default_verdict'",
            )
        default_verdict = default_verdict or action

    forbid_self_approval = True
    if "forbid_self_approval" in top:
        value = w.boolean(
            top["forbid_self_approval"][1], "forbid_self_approval", "forbid_self_approval"
        )
        forbid_self_approval = True if value is None else value

    rules: list[Rule] = []
    if "rules" in top:
        rules_node = top["rules"][1]
        if isinstance(rules_node, ScalarNode) and w.scalar(rules_node) is None:
            pass  # `rules:` with nothing after it: no rules
        elif not isinstance(rules_node, SequenceNode):
            w.problem(
                rules_node,
                "rules",
                "rules",
                reasons.POLICY_INVALID_VALUE,
                "'rules' must be a list of rules",
            )
        else:
            names: dict[str, int] = {}
            for index, rule_node in enumerate(rules_node.value):
                rule = _parse_rule(w, rule_node, f"rules[{index}]")
                if rule is None:
                    continue
                if rule.name in names:
                    w.problem(
                        rule_node,
                        f"rules[{index}].name",
                        "name",
                        reasons.POLICY_INVALID_VALUE,
                        f"'name' {rule.name!r} is used by two rules (also rules[{names[rule.name]}])",
                    )
                    continue
                names[rule.name] = index
                rules.append(rule)

    if w.problems:
        raise _invalid(sorted(w.problems, key=lambda p: p.line))
    rules.sort(key=lambda r: (r.priority, r.name))
    return Policy(
        schema_id=schema_id,
        schema_version=schema_version,
        default_verdict=default_verdict or DEFAULT_VERDICT,
        forbid_self_approval=forbid_self_approval,
        rules=tuple(rules),
    )


def _parse_rule(w: _Walker, node: Node, path: str) -> Rule | None:
    before = len(w.problems)
    keys = w.mapping(node, path, RULE_KEYS, UNSUPPORTED_RULE_KEYS, f"rule {path}")
    if not isinstance(node, MappingNode):
        return None
    name = w.string(keys["name"][1], f"{path}.name", "name") if "name" in keys else None
    if "name" not in keys:
        w.problem(
            node, f"{path}.name", "name", reasons.POLICY_MISSING_KEY, f"{path} needs a 'name'"
        )
    what = f"rule '{name}'" if name else path
    effect = w.verdict(keys["effect"][1], f"{path}.effect", "effect") if "effect" in keys else None
    if "action" in keys:  # Gait's alias for effect
        action = w.verdict(keys["action"][1], f"{path}.action", "action")
        if effect is not None and action is not None and action != effect:
            w.problem(
                keys["action"][1],
                f"{path}.action",
                "action",
                reasons.POLICY_INVALID_VALUE,
                f"'action' must match 'effect' in {what}",
            )
        effect = effect or action
    if "effect" not in keys and "action" not in keys:
        w.problem(
            node,
            f"{path}.effect",
            "effect",
            reasons.POLICY_MISSING_KEY,
            f"{what} needs an 'effect' ({', '.join(VERDICTS)})",
        )
    priority = (
        w.integer(keys["priority"][1], f"{path}.priority", "priority") if "priority" in keys else 0
    )
    min_approvals = 0
    if "min_approvals" in keys:
        min_approvals = (
            w.integer(
                keys["min_approvals"][1],
                f"{path}.min_approvals",
                "min_approvals",
                minimum=0,
                maximum=MAX_MIN_APPROVALS,
            )
            or 0
        )
    distinct = False
    if "require_distinct_approvers" in keys:
        distinct = bool(
            w.boolean(
                keys["require_distinct_approvers"][1],
                f"{path}.require_distinct_approvers",
                "require_distinct_approvers",
            )
        )
    reason_codes = (
        w.string_list(keys["reason_codes"][1], f"{path}.reason_codes", "reason_codes", lower=False)
        if "reason_codes" in keys
        else []
    )
    violations = (
        w.string_list(keys["violations"][1], f"{path}.violations", "violations", lower=False)
        if "violations" in keys
        else []
    )

    match: dict[str, list[str]] = {key: [] for key in MATCH_KEYS}
    if "match" in keys:
        match_node = keys["match"][1]
        allowed = set(MATCH_KEYS) | set(MATCH_ALIASES)
        for key, (_, value_node) in w.mapping(
            match_node, f"{path}.match", allowed, UNSUPPORTED_MATCH_KEYS, f"the match of {what}"
        ).items():
            target = MATCH_ALIASES.get(key, key)
            lower = MATCH_KEYS[target]
            if key in MATCH_ALIASES:
                single = w.string(value_node, f"{path}.match.{key}", key, lower=lower)
                values = [single] if single is not None else None
            else:
                values = w.string_list(value_node, f"{path}.match.{key}", key, lower=lower)
            if values is None:
                continue
            if target == "endpoint_classes":
                for value in values:
                    if value not in ENDPOINT_CLASSES:
                        w.problem(
                            value_node,
                            f"{path}.match.{key}",
                            key,
                            reasons.POLICY_INVALID_VALUE,
                            f"'{key}' has an unknown endpoint class '{value}' (known: {', '.join(sorted(ENDPOINT_CLASSES))})",
                        )
            match[target].extend(values)

    if len(w.problems) > before or name is None or effect is None or priority is None:
        return None
    return Rule(
        name=name,
        priority=priority,
        effect=effect,
        match={key: tuple(sorted(set(values))) for key, values in match.items()},
        reason_codes=tuple(sorted(set(reason_codes or []))),
        violations=tuple(sorted(set(violations or []))),
        min_approvals=min_approvals,
        # Gait: more than one approval implies distinct approvers
        require_distinct_approvers=distinct or min_approvals > 1,
    )


# --- the policy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    priority: int
    effect: str
    match: Mapping[str, tuple[str, ...]]
    reason_codes: tuple[str, ...] = ()
    violations: tuple[str, ...] = ()
    min_approvals: int = 0
    require_distinct_approvers: bool = False

    def normalized(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "priority": self.priority,
            "effect": self.effect,
            "match": {key: list(self.match.get(key, ())) for key in MATCH_KEYS},
            "reason_codes": list(self.reason_codes),
            "violations": list(self.violations),
            "min_approvals": self.min_approvals,
            "require_distinct_approvers": self.require_distinct_approvers,
        }


@dataclass(frozen=True)
class Policy:
    """A parsed, normalized policy. Immutable; equal digests mean equal behaviour."""

    default_verdict: str = DEFAULT_VERDICT
    rules: tuple[Rule, ...] = ()
    forbid_self_approval: bool = True
    schema_id: str = SCHEMA_ID
    schema_version: str = SCHEMA_VERSION

    def normalized(self) -> dict[str, Any]:
        """The digest payload: every key explicit, lists sorted and de-duplicated, rules in
        evaluation order. Comments, layout and key order of the YAML do not reach it."""
        return {
            "schema_id": self.schema_id,
            "schema_version": self.schema_version,
            "default_verdict": self.default_verdict,
            "forbid_self_approval": self.forbid_self_approval,
            "rules": [rule.normalized() for rule in self.rules],
        }

    @cached_property
    def digest(self) -> str:
        return sha256_hex(canonical_json(self.normalized()))

    @classmethod
    def from_normalized(cls, data: Mapping[str, Any]) -> Policy:
        """Rebuild from ``normalized()`` output (as stored on PolicyVersion)."""
        rules = tuple(
            Rule(
                name=r["name"],
                priority=int(r["priority"]),
                effect=r["effect"],
                match={key: tuple(r["match"].get(key, ())) for key in MATCH_KEYS},
                reason_codes=tuple(r.get("reason_codes", ())),
                violations=tuple(r.get("violations", ())),
                min_approvals=int(r.get("min_approvals", 0)),
                require_distinct_approvers=bool(r.get("require_distinct_approvers", False)),
            )
            for r in data.get("rules", ())
        )
        return cls(
            schema_id=data.get("schema_id", SCHEMA_ID),
            schema_version=data.get("schema_version", SCHEMA_VERSION),
            default_verdict=data.get("default_verdict", DEFAULT_VERDICT),
            forbid_self_approval=bool(data.get("forbid_self_approval", True)),
            rules=rules,
        )

    @cached_property
    def compiled(self) -> CompiledPolicy:
        return CompiledPolicy(self)


# --- intents -----------------------------------------------------------------------------------


class Target(NamedTuple):
    # a tuple: cheap to build, hashable (duplicates fold), and sorts by these fields in order
    kind: str
    value: str
    operation: str = ""
    endpoint_class: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "value": self.value,
            "operation": self.operation,
            "endpoint_class": self.endpoint_class,
        }


@dataclass(frozen=True)
class Intent:
    """What an agent or a step is about to do. Fields gaitweb does not use (Gait's
    ``arg_provenance``, ``created_at`` …) are accepted and left out of the digest."""

    tool_name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    identity: str = ""
    job_id: str = ""
    risk_class: str = ""
    workspace: str = ""

    # derived once at construction (also by dataclasses.replace): the gate reads them per rule
    target_kinds: frozenset[str] = field(init=False, repr=False, compare=False)
    target_values: frozenset[str] = field(init=False, repr=False, compare=False)
    endpoint_classes: frozenset[str] = field(init=False, repr=False, compare=False)
    digest: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "target_kinds", frozenset(t.kind for t in self.targets))
        set_(self, "target_values", frozenset(t.value for t in self.targets))
        set_(self, "endpoint_classes", frozenset(t.endpoint_class for t in self.targets))
        set_(self, "digest", sha256_hex(canonical_json(self.as_dict())))

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool_name": self.tool_name,
            "args": self.args,
            "targets": [t.as_dict() for t in self.targets],
            "context": {
                "identity": self.identity,
                "job_id": self.job_id,
                "risk_class": self.risk_class,
                "workspace": self.workspace,
            },
        }


_PATH_READ = {"read", "get", "list", "open", "cat", "head", "download", "stat"}
_PATH_WRITE = {"write", "append", "put", "create", "update", "save", "copy", "move", "rename"}
_PATH_DELETE = {"delete", "remove", "rm", "unlink", "rmdir", "drop", "truncate"}
_EXEC = {"exec", "spawn", "run", "shell", "command"}


def _hint(tool_name: str, *hints: str) -> bool:
    base = tool_name.rsplit("/", 1)[-1]
    return any(h in base for h in hints)


def _infer_endpoint_class(kind: str, operation: str, tool_name: str) -> str:
    """Gait's inference of a target's endpoint class when the intent does not give one."""
    if kind == "path":
        if operation in _PATH_READ:
            return "fs.read"
        if operation in _PATH_WRITE:
            return "fs.write"
        if operation in _PATH_DELETE:
            return "fs.delete"
        if _hint(tool_name, "read", "list", "fetch", "search"):
            return "fs.read"
        if _hint(tool_name, "write", "update", "save", "create"):
            return "fs.write"
        if _hint(tool_name, "delete", "remove", "rm", "drop"):
            return "fs.delete"
        return "other"
    if kind in ("host", "url"):
        return "net.dns" if operation in ("dns", "resolve", "lookup") else "net.http"
    if kind == "other" and (
        operation in _EXEC or _hint(tool_name, "exec", "shell", "command", "spawn", "run")
    ):
        return "proc.exec"
    return "other"


def _intent_error(path: str, message: str) -> InvalidInput:
    return InvalidInput(reasons.INTENT_INVALID, f"{path}: {message}", details={"path": path})


def _opt_str(value: Any, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _intent_error(path, "must be a string")
    return value.strip()


def intent_parse(data: Any) -> Intent:
    """Validate and normalize an intent (Gait's ``gait.gate.intent_request`` shape or the
    short ``{tool_name, args, targets, context}``). Raises ``InvalidInput('intent_invalid')``."""
    if isinstance(data, Intent):
        return data
    if type(data) is not dict and not isinstance(data, Mapping):
        raise _intent_error("intent", "must be a JSON object")
    schema_id = data.get("schema_id")
    if schema_id not in (None, "", INTENT_SCHEMA_ID):
        raise _intent_error("schema_id", f"must be {INTENT_SCHEMA_ID}")
    tool_name = _opt_str(data.get("tool_name"), "tool_name").lower()
    if not tool_name:
        raise _intent_error("tool_name", "is required")
    args = data.get("args")
    if args is None:
        args = {}
    if type(args) is not dict and not isinstance(args, Mapping):
        raise _intent_error("args", "must be a JSON object")
    if type(args) is not dict:
        args = dict(args)
    raw_targets = data.get("targets")
    if raw_targets is None:
        raw_targets = []
    if not isinstance(raw_targets, list):
        raise _intent_error("targets", "must be a list")
    targets: set[Target] = set()
    for index, raw in enumerate(raw_targets):
        where = f"targets[{index}]"
        if type(raw) is not dict and not isinstance(raw, Mapping):
            raise _intent_error(where, "must be an object with kind and value")
        kind = _opt_str(raw.get("kind"), f"{where}.kind").lower()
        value = _opt_str(raw.get("value"), f"{where}.value")
        if not kind or not value:
            raise _intent_error(where, "needs a kind and a value")
        operation = _opt_str(raw.get("operation"), f"{where}.operation").lower()
        endpoint_class = _opt_str(raw.get("endpoint_class"), f"{where}.endpoint_class").lower()
        endpoint_class = endpoint_class or _infer_endpoint_class(kind, operation, tool_name)
        if endpoint_class not in ENDPOINT_CLASSES:
            raise _intent_error(
                f"{where}.endpoint_class", f"unknown endpoint class '{endpoint_class}'"
            )
        targets.add(Target(kind, value, operation, endpoint_class))
    context = data.get("context")
    if context is None:
        context = {}
    if type(context) is not dict and not isinstance(context, Mapping):
        raise _intent_error("context", "must be a JSON object")
    try:
        return Intent(
            tool_name=tool_name,
            args=args,
            targets=tuple(sorted(targets)),
            identity=_opt_str(context.get("identity"), "context.identity"),
            job_id=_opt_str(context.get("job_id"), "context.job_id"),
            risk_class=_opt_str(context.get("risk_class"), "context.risk_class").lower(),
            workspace=_opt_str(context.get("workspace"), "context.workspace").replace("\\", "/"),
        )
    except (
        ValueError,
        TypeError,
    ) as exc:  # the digest's JCS refuses NaN, huge integers, lone surrogates …
        raise _intent_error("args", f"cannot be canonicalized as JSON ({exc})") from None


# --- evaluation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    verdict: str
    reason_codes: tuple[str, ...]
    violations: tuple[str, ...]
    matched_rules: tuple[str, ...]
    min_approvals: int
    require_distinct_approvers: bool


# The families of the tool names gaitweb derives for engine steps (jobs.spec.step_gate_tool):
# a rule naming the family matches every name in it. The names are what gaitweb's own step
# kinds were called before they were derived, so a policy blocking ``command`` blocks every
# command step. Gait's tool names (``tool.write``) have no family and match exactly.
_SHELL_TOOL = "shell"
_FAMILY_HEADS = frozenset({"python", "command", "http"})


def tool_name_keys(tool_name: str) -> tuple[str, ...]:
    """The names under which a rule's ``tool_names`` matches ``tool_name`` (already folded):
    the name itself and its families, most specific first —
    ``http:post:pay.example.com`` → ``(http:post:pay.example.com, http:post, http)``,
    ``command:/usr/bin/git`` → ``(…, command)``, ``python:add`` → ``(…, python)``, and
    ``shell`` (a ``shell: true`` command step) → ``(shell, command)``. Any other name matches
    only itself, as in Gait."""
    if tool_name == _SHELL_TOOL:
        return (tool_name, "command")
    head, sep, rest = tool_name.partition(":")
    if not sep or head not in _FAMILY_HEADS or not rest:
        return (tool_name,)
    method, sep, host = rest.partition(":")
    if head == "http" and sep and host:
        return (tool_name, f"http:{method}", head)
    return (tool_name, head)


_SANITIZE = re.compile(r"[^a-z0-9]+")


class _CompiledRule:
    __slots__ = (
        "tier",
        "name",
        "effect",
        "rank",
        "tool_names",
        "risk_classes",
        "identities",
        "target_kinds",
        "target_values",
        "endpoint_classes",
        "workspace_prefixes",
        "reason_codes",
        "violations",
        "min_approvals",
        "distinct",
    )

    def __init__(self, tier: int, rule: Rule) -> None:
        m = rule.match
        self.tier = tier
        self.name = rule.name
        self.effect = rule.effect
        self.rank = STRICTNESS[rule.effect]
        self.tool_names = frozenset(m["tool_names"]) or None
        self.risk_classes = frozenset(m["risk_classes"]) or None
        self.identities = frozenset(m["identities"]) or None
        self.target_kinds = frozenset(m["target_kinds"]) or None
        self.target_values = frozenset(m["target_values"]) or None
        self.endpoint_classes = frozenset(m["endpoint_classes"]) or None
        self.workspace_prefixes = tuple(m["workspace_prefixes"]) or None
        # Gait: a rule without reason codes explains itself by name
        self.reason_codes = rule.reason_codes or (
            "matched_rule_" + _SANITIZE.sub("_", rule.name.lower()).strip("_"),
        )
        self.violations = rule.violations
        self.min_approvals = rule.min_approvals
        self.distinct = rule.require_distinct_approvers

    def matches(self, intent: Intent) -> bool:
        # AND across fields, ANY within a list; tool_names was settled by the index
        if self.risk_classes is not None and intent.risk_class not in self.risk_classes:
            return False
        if self.identities is not None and intent.identity not in self.identities:
            return False
        if self.workspace_prefixes is not None and not intent.workspace.startswith(
            self.workspace_prefixes
        ):
            return False
        if self.target_kinds is not None and self.target_kinds.isdisjoint(intent.target_kinds):
            return False
        if self.target_values is not None and self.target_values.isdisjoint(intent.target_values):
            return False
        if self.endpoint_classes is not None and self.endpoint_classes.isdisjoint(
            intent.endpoint_classes
        ):
            return False
        return True


class CompiledPolicy:
    """A policy prepared for fast evaluation: rules in tier order, with a per-tool-name index
    of the rules that can match (rules naming the tool plus rules that name no tool)."""

    _INDEX_LIMIT = 4096  # distinct tool names remembered; beyond that, computed per call

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        tiers: dict[int, int] = {}
        self.rules = tuple(
            _CompiledRule(tiers.setdefault(r.priority, len(tiers)), r) for r in policy.rules
        )
        # dict reads and single-key writes are atomic under the GIL: no lock needed
        self._index: dict[str, tuple[_CompiledRule, ...]] = {}
        self.default = Outcome(
            verdict=policy.default_verdict,
            reason_codes=(f"default_{policy.default_verdict}",),
            violations=(),
            matched_rules=(),
            min_approvals=1 if policy.default_verdict == "require_approval" else 0,
            require_distinct_approvers=False,
        )

    def candidates(self, tool_name: str) -> tuple[_CompiledRule, ...]:
        found = self._index.get(tool_name)
        if found is None:
            keys = tool_name_keys(tool_name)
            found = tuple(
                r for r in self.rules if r.tool_names is None or not r.tool_names.isdisjoint(keys)
            )
            if len(self._index) < self._INDEX_LIMIT:
                self._index[tool_name] = found
        return found

    def evaluate(self, intent: Intent) -> Outcome:
        matched: list[_CompiledRule] = []
        tier = -1
        for rule in self.candidates(intent.tool_name):
            if matched and rule.tier != tier:
                break  # the first tier with a match decides
            if rule.matches(intent):
                matched.append(rule)
                tier = rule.tier
        if not matched:
            return self.default
        rank = max(r.rank for r in matched)
        deciding = [r for r in matched if r.rank == rank]
        verdict = VERDICTS[rank]
        min_approvals = max(r.min_approvals for r in deciding)
        if verdict == "require_approval":
            min_approvals = max(min_approvals, 1)
        return Outcome(
            verdict=verdict,
            reason_codes=tuple(sorted({c for r in deciding for c in r.reason_codes})),
            violations=tuple(sorted({v for r in deciding for v in r.violations})),
            matched_rules=tuple(sorted(r.name for r in matched)),
            min_approvals=min_approvals,
            require_distinct_approvers=any(r.distinct for r in deciding) or min_approvals > 1,
        )


_COMPILED: dict[str, Policy] = {}
_BY_VERSION: dict[tuple[int, str], Policy] = {}
_COMPILED_LIMIT = 256


def policy_from_normalized_cached(digest: str, normalized: Mapping[str, Any]) -> Policy:
    """The policy of a stored version, compiled once per digest (digests are content
    addresses, so the cache can never be stale)."""
    policy = _COMPILED.get(digest)
    if policy is None:
        policy = Policy.from_normalized(normalized)
        policy.compiled  # noqa: B018 - build the index now, outside the hot path
        if len(_COMPILED) >= _COMPILED_LIMIT:
            _COMPILED.clear()
        _COMPILED[digest] = policy
    return policy


def policy_for_version(version_pk: int, digest: str, load: Any) -> Policy:
    """The compiled policy of PolicyVersion ``version_pk`` whose digest the caller already
    knows (a job stores it next to the foreign key); ``load()`` returns ``(digest,
    normalized)`` and is called only on a miss. Keyed by both, so a reused primary key can
    never serve another policy, and the gate's hot path skips the (large) normalized JSON."""
    key = (version_pk, digest)
    policy = _BY_VERSION.get(key)
    if policy is None:
        policy = policy_from_normalized_cached(*load())
        if len(_BY_VERSION) >= _COMPILED_LIMIT:
            _BY_VERSION.clear()
        if policy.digest == digest:
            _BY_VERSION[key] = policy
    return policy


def policy_evaluate(policy: Policy, intent: Intent) -> Outcome:
    return policy.compiled.evaluate(intent)
