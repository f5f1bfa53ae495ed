"""The registry of workflows in code (docs/workflows.md): ``@workflow`` registers a function
under a name and version, and ``workflow_call_normalize`` checks a submitted spec
``{"workflow": NAME, "input": {...}}`` against the function's signature (for jobs.spec).

It knows nothing of running a workflow (jobs.durable does that), so the spec check can use it
without importing the engine.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from gaitweb.lib.errors import InvalidInput
from jobs.steps import _load_step_modules

WorkflowFunction = Callable[..., Any]
_REGISTRY: dict[str, dict[str, WorkflowFunction]] = {}
WORKFLOW_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


def workflow(
    name: str, *, version: str = "1", group_commit: bool = False
) -> Callable[[WorkflowFunction], WorkflowFunction]:
    """Register ``fn`` as workflow ``name`` (only registered names can be submitted). It is
    called as ``fn(ctx, **input)``. A job records the version it was submitted with and runs
    only on that version: keep the old function registered under its version while jobs of it
    are running (docs/workflows.md, "Versioning"). Every completed call is committed before the
    next one starts, so a crash never runs a completed call again. ``group_commit=True`` opts a
    workflow whose idempotent calls may safely run twice into writing them in batches (up to
    ``GAIT_WORKFLOW_FLUSH_SECONDS`` apart): much faster, but a crash re-runs the unwritten ones."""
    if not WORKFLOW_NAME_RE.match(name):
        raise ValueError(f"workflow name {name!r} must match {WORKFLOW_NAME_RE.pattern}")
    if not VERSION_RE.match(version):
        raise ValueError(f"workflow version {version!r} must match {VERSION_RE.pattern}")

    def register(fn: WorkflowFunction) -> WorkflowFunction:
        versions = _REGISTRY.setdefault(name, {})
        existing = versions.get(version)
        if existing is not None and existing.__qualname__ != fn.__qualname__:
            raise ValueError(f"workflow {name!r} version {version!r} is already registered")
        versions[version] = fn
        fn.__gait_workflow__ = (name, version)  # type: ignore[attr-defined]
        fn.__gait_group_commit__ = group_commit  # type: ignore[attr-defined]
        return fn

    return register


def workflow_versions(name: str) -> dict[str, WorkflowFunction]:
    _load_step_modules()
    return dict(_REGISTRY.get(name, {}))


def workflow_names() -> list[str]:
    _load_step_modules()
    return sorted(_REGISTRY)


def _latest(versions: Mapping[str, WorkflowFunction]) -> str:
    """The newest registered version: the last one registered."""
    return list(versions)[-1]


# --- spec shape ----------------------------------------------------------------------------------


def workflow_call_normalize(
    name: Any, input: Any, *, version: Any = None, fail: Callable[..., InvalidInput]
) -> dict[str, Any]:
    """The ``with`` of a spec's ``workflow`` step (``{"workflow", "version", "input"}``, jobs.spec
    builds the step), with
    the input checked against the function's signature: unknown or missing arguments, and
    values of the wrong JSON type for an annotated ``str``/``int``/``float``/``bool``/``list``/
    ``dict`` parameter, are refused with the path of the field."""
    if not isinstance(name, str) or not WORKFLOW_NAME_RE.match(name):
        raise fail("workflow", "must be a registered workflow name", "spec_unknown_workflow")
    versions = workflow_versions(name)
    if not versions:
        raise fail(
            "workflow",
            f"no workflow is registered as {name!r}",
            "spec_unknown_workflow",
            workflow=name,
        )
    if version is None:
        version = _latest(versions)
    elif version not in versions:
        raise fail(
            "version",
            f"workflow {name!r} has no version {str(version)[:32]!r}",
            "spec_unknown_workflow",
            versions=sorted(versions),
        )
    if input is None:
        input = {}
    if not isinstance(input, Mapping):
        raise fail("input", "must be an object (the workflow's keyword arguments)")
    _input_check(versions[version], dict(input), fail)
    return {"workflow": name, "version": version, "input": dict(input)}


_JSON_TYPES: dict[Any, tuple[type, ...]] = {
    str: (str,),
    "str": (str,),
    int: (int,),
    "int": (int,),
    float: (int, float),
    "float": (int, float),
    bool: (bool,),
    "bool": (bool,),
    list: (list,),
    "list": (list,),
    dict: (dict,),
    "dict": (dict,),
}


def _input_check(fn: WorkflowFunction, input: dict[str, Any], fail: Callable[..., Any]) -> None:
    params = list(inspect.signature(fn).parameters.values())[1:]  # after ctx
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params)
    named = {p.name: p for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    for key, value in input.items():
        p = named.get(key)
        if p is None:
            if accepts_any:
                continue
            raise fail(
                f"input.{key}",
                f"unknown argument (the workflow takes: {', '.join(named) or 'none'})",
                "spec_unknown_field",
            )
        allowed = _JSON_TYPES.get(p.annotation)
        if allowed is not None and (
            not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool))
        ):
            raise fail(f"input.{key}", f"must be of type {allowed[-1].__name__}")
    for key, p in named.items():
        if p.default is p.empty and key not in input:
            raise fail(f"input.{key}", "is required", "spec_missing_field")
