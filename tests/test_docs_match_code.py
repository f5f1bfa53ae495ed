"""The docs a reader relies on say what the code does: the catalogue of reason codes
(gaitweb/lib/reasons.py) and docs/reason-codes.md list the same codes, every refusal is raised
with a catalogue constant rather than a string of its own, and the lifecycle table in
docs/lifecycle.md is the one the services enforce.

Reason codes are found by reading the source (``ast``), not by running it, so a refusal no
test reaches is still held to the catalogue: a code is the first argument of a ``GaitError``
subclass, or the ``code`` argument (positional or keyword, or its default) of a project
function that takes one (``_fail(path, message, code=…)``, ``_refusal(code, …)``), or what is
assigned to a variable ``code``.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from rest_framework import exceptions as drf_exceptions

from jobs.models import JobStatus
from jobs.states import TRANSITIONS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gaitweb", "jobs", "approvals", "packs")
CODE = re.compile(r"[a-z<][a-z0-9<>]*(?:_[a-z0-9<>]+)*")
FIELD = "<field>"  # how a code built from a field name (f"missing_{field}") is written
DOCS = ROOT / "docs" / "reason-codes.md"
REASONS = ROOT / "gaitweb" / "lib" / "reasons.py"
LIFECYCLE = ROOT / "docs" / "lifecycle.md"


def _sources() -> dict[Path, ast.Module]:
    return {
        path: ast.parse(path.read_text(), filename=str(path))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    }


def catalogue() -> dict[str, str]:
    """The catalogue's constants: name → code."""
    tree = ast.parse(REASONS.read_text())
    return {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.isupper()
        and isinstance(node.value, ast.Constant)
        and node.targets[0].id != "FIELD"
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


def _code_sites(trees: dict[Path, ast.Module]) -> Iterator[tuple[Path, ast.AST, bool]]:
    """Every expression in a code's place: (file, expression, whether an error class takes it)."""
    classes = _error_classes(trees)
    code_index: dict[str, int | None] = {}  # function → position of its `code` parameter
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            args = node.args
            positional = [a.arg for a in args.posonlyargs + args.args]
            if "code" in positional:
                index = positional.index("code")
                defaults = dict(zip(positional[::-1], args.defaults[::-1], strict=False))
                default = defaults.get("code")
                code_index[node.name] = index - (positional[0] in ("self", "cls"))
            elif any(a.arg == "code" for a in args.kwonlyargs):
                kw_defaults = zip([a.arg for a in args.kwonlyargs], args.kw_defaults, strict=True)
                default = dict(kw_defaults)["code"]
                code_index[node.name] = None
            else:
                continue
            if default is not None:
                yield path, default, True
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
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
                for candidate in candidates:
                    values = candidate.values if isinstance(candidate, ast.BoolOp) else [candidate]
                    for value in values:  # code or f"{field}_too_long": both
                        yield path, value, name in classes
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                # code = "csrf_failed"; owner, key, code = …, …, "…"
                target, value = node.targets[0], node.value
                pairs = (
                    zip(target.elts, value.elts, strict=False)
                    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                    else [(target, value)]
                )
                for name_node, expr in pairs:
                    if isinstance(name_node, ast.Name) and name_node.id == "code":
                        yield path, expr, True


def _module_constants(trees: dict[Path, ast.Module]) -> dict[str, str]:
    constants: dict[str, str] = {}
    for tree in trees.values():
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.isupper():
                        if isinstance(node.value.value, str):
                            constants[target.id] = node.value.value
    return constants


def _bare(node: ast.AST, constants: dict[str, str]) -> str | None:
    """The code a site writes as a string of its own: a literal, an f-string, or a module's
    constant (``NAME = "…"``) that is not the catalogue's."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # f"missing_{field}" → missing_<field>
        return "".join(str(v.value) if isinstance(v, ast.Constant) else FIELD for v in node.values)
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _catalogued(node: ast.AST, names: dict[str, str]) -> str | None:
    """The code of ``reasons.NAME`` or ``reasons.for_field(reasons.NAME, …)``."""
    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "for_field":
        return _catalogued(node.args[0], names) if node.args else None
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "reasons"
    ):
        return names.get(node.attr)
    return None


def _reads_like_a_code(code: str | None, by_class: bool) -> bool:
    # a helper's `code` is a reason code only when it reads like one
    return bool(code) and bool(CODE.fullmatch(code or "")) and (by_class or "_" in (code or ""))


def raised_codes() -> dict[str, set[str]]:
    """Every reason code in the source, with the files that raise it."""
    trees = _sources()
    names = catalogue()
    constants = {k: v for k, v in _module_constants(trees).items() if k not in names}
    found: dict[str, set[str]] = defaultdict(set)
    for path, node, by_class in _code_sites(trees):
        code = _catalogued(node, names) or _bare(node, constants)
        if code and _reads_like_a_code(code, by_class or _catalogued(node, names) is not None):
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


def documented_codes() -> set[str]:
    """The codes docs/reason-codes.md's tables list (first column, one or more per row)."""
    codes = set()
    for line in DOCS.read_text().splitlines():
        if line.startswith("| `"):
            codes.update(re.findall(r"`([a-z0-9_<>]+)`", line.split("|")[1]))
    return codes


def test_the_catalogue_and_the_docs_list_the_same_codes() -> None:
    codes = set(catalogue().values())
    assert not codes - documented_codes(), "add these to docs/reason-codes.md"
    assert not documented_codes() - codes, "add these to gaitweb/lib/reasons.py"


def test_every_catalogued_code_says_what_it_means() -> None:
    """A constant is followed by its one-line meaning (a docstring), as in the docs."""
    body = ast.parse(REASONS.read_text()).body
    unexplained = [
        node.targets[0].id
        for node, after in zip(body, body[1:] + [None], strict=True)
        if isinstance(node, ast.Assign)
        and node.targets[0].id in catalogue()  # type: ignore[union-attr]
        and not (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant))
    ]
    assert unexplained == []


def test_every_reason_code_the_code_raises_is_documented() -> None:
    missing = raised_codes().keys() - documented_codes()
    assert not missing, f"add these to gaitweb/lib/reasons.py and docs: {sorted(missing)}"


def test_refusals_raise_catalogue_constants_not_strings_of_their_own() -> None:
    trees = _sources()
    names = catalogue()
    constants = {k: v for k, v in _module_constants(trees).items() if k not in names}
    bare = sorted(
        f"{path.relative_to(ROOT)}:{node.lineno} {code}"
        for path, node, by_class in _code_sites(trees)
        if path != REASONS
        and _reads_like_a_code(code := _bare(node, constants), by_class)
        and code in documented_codes()
    )
    assert bare == [], "raise these with gaitweb.lib.reasons constants"


def test_every_catalogued_code_is_used() -> None:
    """The catalogue names nothing the code has dropped: each constant is referred to, or (in a
    file not yet converted, or from DRF) its code is raised."""
    trees = {path: tree for path, tree in _sources().items() if path != REASONS}
    referred = {
        node.attr
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "reasons"
    }
    strings = {
        node.value
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    unused = [
        name
        for name, code in catalogue().items()
        if name not in referred and code not in strings and code not in raised_codes()
    ]
    assert unused == [], "gaitweb/lib/reasons.py lists codes nothing raises"


def test_the_scan_finds_codes_raised_every_way() -> None:
    """The scan itself can fail: codes raised by a class, a catalogue constant, a helper's
    positional and keyword argument and a helper's default are all found."""
    codes = raised_codes()
    assert "job_not_found" in codes  # NotFound(reasons.JOB_NOT_FOUND, …)
    assert "command_steps_disabled" in codes  # Forbidden(reasons.COMMAND_STEPS_DISABLED, …)
    assert "json_too_deep" in codes  # _too_deep(reasons.JSON_TOO_DEEP, …)
    assert "spec_unknown_kind" in codes  # _fail(…, code=reasons.SPEC_UNKNOWN_KIND)
    assert "spec_invalid" in codes  # _fail's default
    assert "missing_<field>" in codes  # reasons.for_field(reasons.FIELD_MISSING, field)
    assert "idempotency_key_reused" in codes  # …, code = …, reasons.IDEMPOTENCY_KEY_REUSED
    assert "throttled" in codes  # DRF's Throttled
    assert "invalid_transition" in codes  # a bare string in an engine file still counts
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
