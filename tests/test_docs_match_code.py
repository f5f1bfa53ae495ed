"""The docs a reader relies on say what the code does: every reason code the code can refuse
with is in docs/reason-codes.md (and the catalogue names no code the code has dropped), and
the lifecycle table in docs/lifecycle.md is the one the services enforce.

Reason codes are found by reading the source (``ast``), not by running it, so a refusal no
test reaches is still held to the catalogue: a code is the first argument of a ``GaitError``
subclass, or the ``code`` argument (positional or keyword, or its default) of a project
function that takes one (``_fail(path, message, code=…)``, ``_refusal(code, …)``), written as a
literal or as a module-level constant.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from rest_framework import exceptions as drf_exceptions

from jobs.models import JobStatus
from jobs.states import TRANSITIONS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gaitweb", "jobs", "approvals", "packs")
CODE = re.compile(r"[a-z<][a-z0-9<>]*(?:_[a-z0-9<>]+)*")
FIELD = "<field>"  # how a code built from a field name (f"missing_{field}") is written
CATALOGUE = ROOT / "docs" / "reason-codes.md"
LIFECYCLE = ROOT / "docs" / "lifecycle.md"


def _sources() -> dict[Path, ast.Module]:
    return {
        path: ast.parse(path.read_text(), filename=str(path))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    }


def _error_classes(trees: dict[Path, ast.Module]) -> set[str]:
    classes = {"GaitError"}
    grew = True
    while grew:
        grew = False
        for tree in trees.values():
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ClassDef)
                    and node.name not in classes
                    and any(
                        getattr(b, "id", getattr(b, "attr", None)) in classes for b in node.bases
                    )
                ):
                    classes.add(node.name)
                    grew = True
    return classes


def raised_codes() -> dict[str, set[str]]:
    """Every reason code in the source, with the files that raise it."""
    trees = _sources()
    classes = _error_classes(trees)
    constants: dict[str, str] = {}
    code_index: dict[str, int | None] = {}  # function → position of its `code` parameter
    found: dict[str, set[str]] = defaultdict(set)

    def literal(node: ast.AST | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):  # f"missing_{field}" → missing_<field>
            return "".join(
                str(v.value) if isinstance(v, ast.Constant) else FIELD for v in node.values
            )
        if isinstance(node, ast.BoolOp):  # code or f"{field}_too_long": both
            return None
        if isinstance(node, ast.Name | ast.Attribute):
            return constants.get(node.id if isinstance(node, ast.Name) else node.attr)
        return None

    for tree in trees.values():
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.isupper():
                        if isinstance(node.value.value, str):
                            constants[target.id] = node.value.value
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            args = node.args
            positional = [a.arg for a in args.posonlyargs + args.args]
            if "code" in positional:
                index = positional.index("code")
                defaults = dict(zip(positional[::-1], args.defaults[::-1], strict=False))
                default = literal(defaults.get("code"))
                code_index[node.name] = index - (positional[0] in ("self", "cls"))
            elif any(a.arg == "code" for a in args.kwonlyargs):
                default = literal(
                    dict(zip([a.arg for a in args.kwonlyargs], args.kw_defaults, strict=True))[
                        "code"
                    ]
                )
                code_index[node.name] = None
            else:
                continue
            if default:
                found[default].add(str(path.relative_to(ROOT)))
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name in classes:
                index: int | None = 0
            elif name in code_index:
                index = code_index[name]
            else:
                continue
            candidates = [k.value for k in node.keywords if k.arg == "code"]
            if index is not None and len(node.args) > index:
                candidates.append(node.args[index])
            for candidate in [
                v for c in candidates for v in (c.values if isinstance(c, ast.BoolOp) else [c])
            ]:
                code = literal(candidate)
                # a helper's `code` is a reason code only when it reads like one
                if code and CODE.fullmatch(code) and (name in classes or "_" in code):
                    found[code].add(str(path.relative_to(ROOT)))
    for path, tree in trees.items():
        for node in ast.walk(tree):  # code = "csrf_failed"; owner, key, code = …, …, "…"
            if not isinstance(node, ast.Assign) or len(node.targets) != 1:
                continue
            target, value = node.targets[0], node.value
            pairs = (
                zip(target.elts, value.elts, strict=False)
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                else [(target, value)]
            )
            for name, expr in pairs:
                code = literal(expr)
                if (
                    isinstance(name, ast.Name)
                    and name.id == "code"
                    and code
                    and CODE.fullmatch(code)
                ):
                    found[code].add(str(path.relative_to(ROOT)))
    # the API answers DRF's own exceptions (401, 405, 415, 429, …) with DRF's codes
    for exception in vars(drf_exceptions).values():
        if (
            isinstance(exception, type)
            and issubclass(exception, drf_exceptions.APIException)
            and exception not in (drf_exceptions.APIException, drf_exceptions.ValidationError)
        ):  # a ValidationError is answered as invalid_input
            found[str(exception.default_code)].add("rest_framework/exceptions.py")
    return found


def catalogued_codes() -> set[str]:
    """The codes the catalogue's tables list (first column, one or more `code`s per row)."""
    codes = set()
    for line in CATALOGUE.read_text().splitlines():
        if line.startswith("| `"):
            codes.update(re.findall(r"`([a-z0-9_<>]+)`", line.split("|")[1]))
    return codes


def test_every_reason_code_the_code_raises_is_in_the_catalogue() -> None:
    missing = raised_codes().keys() - catalogued_codes()
    assert not missing, f"add these to docs/reason-codes.md: {sorted(missing)}"


def _source_strings() -> set[str]:
    return {
        node.value
        for tree in _sources().values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_the_catalogue_lists_only_codes_the_code_raises() -> None:
    """A code the scan cannot follow (passed through a callable parameter, say) must at least
    exist in the source: the catalogue names nothing the code has dropped."""
    stale = catalogued_codes() - raised_codes().keys() - _source_strings()
    assert not stale, f"docs/reason-codes.md lists codes nothing raises: {sorted(stale)}"


def test_the_scan_finds_codes_raised_every_way() -> None:
    """The scan itself can fail: codes raised by a class, a constant, a helper's positional and
    keyword argument and a helper's default are all found."""
    codes = raised_codes()
    assert "job_not_found" in codes  # NotFound("job_not_found", …)
    assert "command_steps_disabled" in codes  # Forbidden(COMMAND_STEPS_DISABLED, …)
    assert "json_too_deep" in codes  # _too_deep("json_too_deep", …)
    assert "spec_unknown_kind" in codes  # _fail(…, code="spec_unknown_kind")
    assert "spec_invalid" in codes  # _fail's default
    assert "missing_<field>" in codes  # InvalidInput(f"missing_{field}", …)
    assert "idempotency_key_reused" in codes  # …, code = …, "idempotency_key_reused"
    assert "throttled" in codes  # DRF's Throttled
    assert "the" not in codes and "job_payload.json" not in codes


Row = tuple[str, frozenset[str], frozenset[str], tuple[str, ...], str, tuple[str, ...]]


def _lifecycle_table() -> dict[str, Row]:
    """docs/lifecycle.md's "Lifecycle table": ``| transition | by | from | to | event | reason
    codes | when |`` rows, as (name, by, from, to, event, reasons)."""
    text = LIFECYCLE.read_text()
    section = text.split("## Lifecycle table", 1)[1].split("\n## ", 1)[0]
    table: dict[str, Row] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or not cells[0].startswith("`"):
            continue
        name, by, from_, to, event, reasons = cells[:6]

        def codes(cell: str) -> tuple[str, ...]:
            return tuple(re.findall(r"`([a-z_<>]+)`", cell))

        table[name.strip("`")] = (
            name.strip("`"),
            frozenset(w.strip() for w in by.split(",")),
            frozenset(codes(from_)),
            codes(to),
            event.strip("`"),
            codes(reasons),
        )
    return table


def test_the_lifecycle_table_is_the_one_the_code_follows() -> None:
    """Every row of the documented table is a transition of jobs.states, and every transition
    there is documented: the same statuses, event and reason codes."""
    in_code = {
        t.name: (
            t.name,
            frozenset(t.by),
            frozenset(map(str, t.from_)),
            tuple(map(str, t.to)),
            t.event,
            t.reasons,
        )
        for t in TRANSITIONS
    }
    assert _lifecycle_table() == in_code


def test_the_lifecycle_docs_name_every_status() -> None:
    text = LIFECYCLE.read_text().split("## Lifecycle table", 1)[1]
    missing = [s.value for s in JobStatus if f"`{s.value}`" not in text]
    assert not missing
