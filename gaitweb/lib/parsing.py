"""Bounded parsers for untrusted text: JSON with a nesting guard, YAML without aliases.

Python's own parsers are not safe on hostile input of a size gaitweb otherwise accepts:

- ``json.loads`` recurses once per nesting level and raises ``RecursionError`` (a 500, or worse
  in a thread with a small stack) on ``[[[[…`` a few thousand deep, long before a depth check on
  the parsed value could run. ``json_loads`` counts the nesting first and refuses deep input
  with ``json_too_deep``.
- YAML anchors and aliases let a few hundred bytes expand into gigabytes (the "billion laughs"
  alias bomb): the parsed value shares nodes, but every walk over it — validation, hashing,
  ``json.dumps`` — is exponential. No gaitweb document (spec, policy) needs them, so the loader
  refuses the first anchor or alias *event*, before anything is composed or expanded
  (``yaml_alias_refused``), and refuses nesting deeper than the same limit as JSON
  (``yaml_too_deep``): PyYAML's composer recurses too.

Size is bounded by the callers (spec, policy and upload limits) and by the request size guard
(gaitweb/lib/middleware.py). docs/security.md, "Every input is bounded".
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

import yaml
from yaml.nodes import Node

from gaitweb.lib import reasons
from gaitweb.lib.errors import InvalidInput

# Deeper than any document gaitweb defines (a spec is about 6 levels, an event payload is
# checked at 64 by gaitweb.api.json_safe_check) and far below the interpreter's recursion limit.
JSON_MAX_DEPTH = 64
# Pack documents carry a job's data one or two levels further down (state -> gaitweb -> spec …).
PACK_JSON_MAX_DEPTH = 256

# Only brackets and quotes matter for nesting: everything else is deleted in one C pass.
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))
_STRING = re.compile(rb'"[^"]*"')
_AS_PARENS = bytes.maketrans(b"[]{}", b"()()")
_DELTA = {ord("("): 1, ord(")"): -1}


def json_depth(data: str | bytes, *, stop_after: int | None = None) -> int:
    """The deepest nesting of arrays and objects in JSON text (brackets inside strings do not
    count), without recursion, in a few C-speed passes: drop escaped backslashes and quotes,
    then every byte but brackets and quotes, then the strings; each ``()`` removal pass then
    peels one level. ``stop_after``: stop once the text is known to be deeper (the answer is
    then ``stop_after + 1``). Malformed text gets an upper bound."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    rest = _STRING.sub(b"", raw).translate(_AS_PARENS)
    depth = 0
    while rest:
        if stop_after is not None and depth > stop_after:
            return depth
        peeled = rest.replace(b"()", b"")
        if len(peeled) == len(rest):  # unbalanced: what is left has no innermost pair
            return depth + max(0, max(accumulate(map(_DELTA.__getitem__, rest))))
        rest = peeled
        depth += 1
    return depth


def _too_deep(code: str, what: str, limit: int, **details: Any) -> InvalidInput:
    return InvalidInput(
        code,
        f"{what} is nested deeper than {limit} levels",
        details={"field": what, "max_depth": limit, **details},
    )


def json_depth_check(
    data: str | bytes, *, what: str = "body", max_depth: int = JSON_MAX_DEPTH
) -> None:
    """Refuse JSON text nested deeper than ``max_depth`` (``json_too_deep``), before parsing.
    Cheap for ordinary input: text with fewer brackets than the limit is not scanned."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return
    if json_depth(raw, stop_after=max_depth) > max_depth:
        raise _too_deep(reasons.JSON_TOO_DEEP, what, max_depth)


def json_loads(
    data: str | bytes, *, what: str = "body", max_depth: int = JSON_MAX_DEPTH, **kwargs: Any
) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` with ``json_too_deep``
    instead of recursing into a ``RecursionError``. Malformed JSON raises ``ValueError`` as
    ``json.loads`` does (``json.JSONDecodeError``), so callers keep their own message for it."""
    json_depth_check(data, what=what, max_depth=max_depth)
    try:
        return json.loads(data, **kwargs)
    except RecursionError:  # the scan bounds the depth; this only guards a tiny stack
        raise _too_deep(reasons.JSON_TOO_DEEP, what, max_depth) from None


class _BoundedSafeLoader(yaml.SafeLoader):
    """PyYAML's pure-Python safe loader, refusing anchors, aliases and deep nesting while
    composing: the refusal happens at the first offending event, so nothing is expanded."""

    max_depth = JSON_MAX_DEPTH
    what = "YAML"

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent) or anchor:
            line = event.start_mark.line + 1 if event.start_mark is not None else 1
            kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise InvalidInput(
                reasons.YAML_ALIAS_REFUSED,
                f"line {line}: {self.what} may not use YAML anchors or aliases "
                f"({kind}{anchor}); write the value out",
                details={"line": line, "anchor": str(anchor)},
                hint="anchors and aliases are refused so that a small document cannot expand "
                "into a huge one (docs/security.md)",
            )
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                line = event.start_mark.line + 1 if event.start_mark is not None else 1
                raise _too_deep(reasons.YAML_TOO_DEEP, self.what, self.max_depth, line=line)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _loader(text: str, what: str) -> _BoundedSafeLoader:
    loader = _BoundedSafeLoader(text)
    loader.what = what
    return loader


def yaml_load(text: str, *, what: str = "YAML") -> Any:
    """``yaml.safe_load`` without anchors, aliases or nesting past ``JSON_MAX_DEPTH``
    (``InvalidInput`` ``yaml_alias_refused`` / ``yaml_too_deep``). Syntax errors raise
    ``yaml.YAMLError`` as ``yaml.safe_load`` does."""
    loader = _loader(text, what)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_compose(text: str, *, what: str = "YAML") -> Node | None:
    """``yaml.compose`` (the node tree, with line numbers) under the same refusals."""
    loader = _loader(text, what)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()
