"""Job specs: parsing and strict validation into one normalized form (docs/engine.md).

``spec_validate(raw)`` takes the JSON object of the API (or the text of a YAML/JSON file) and
returns the normalized spec the engine runs: every step has all its options filled in, and every
duration is a number of seconds. Anything unexpected is refused with ``InvalidInput`` whose
``details["path"]`` names the offending field (``steps[2].retry.max_attempts``); nothing is
guessed and unknown keys are errors, never ignored.

Normalized shape::

    {"steps": [{"name", "kind", "with", "retry": {"max_attempts", "initial_interval",
                "backoff", "max_interval", "non_retryable"}, "timeout", "idempotent", "tool"}],
     "deadline_seconds": float | None, "description": str}

A step's ``tool`` is the caller's label, shown in the dashboard and the journal. The policy gate
never sees it: it matches the name ``step_gate_tool`` derives from what the step will really do
(docs/engine.md, "The gate").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml
from django.conf import settings

from gaitweb.lib import reasons
from gaitweb.lib.errors import InvalidInput, LimitExceeded
from gaitweb.lib.parsing import json_loads, yaml_load
from jobs.secret_store import SECRET_NAME_RE, credential_like, secret_ref
from jobs.steps import step_function_get
from jobs.workflow_registry import workflow_call_normalize

STEP_KINDS = ("python", "command", "http", "sleep", "wait_event", "approval")
# Kinds the engine executes itself (durable timers and decisions): they never run user code, so
# they are idempotent by construction and never "in doubt".
PARKING_KINDS = frozenset({"sleep", "wait_event", "approval"})
STEP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SIGNAL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

TOP_KEYS = {"steps", "deadline", "description"}
# a job whose spec is a workflow in code (jobs.durable, docs/workflows.md)
WORKFLOW_TOP_KEYS = {"workflow", "input", "version", "deadline", "description"}
STEP_KEYS = {"name", "kind", "with", "retry", "timeout", "idempotent", "tool"}
RETRY_KEYS = {"max_attempts", "initial_interval", "backoff", "max_interval", "non_retryable"}
WITH_KEYS = {
    "python": ({"function"}, {"function", "args"}),
    "command": (set(), {"argv", "command", "shell", "cwd", "env"}),
    "http": ({"url"}, {"method", "url", "headers", "json", "body", "timeout_is_retryable"}),
    "sleep": ({"duration"}, {"duration"}),
    "wait_event": ({"signal"}, {"signal", "timeout"}),
    "approval": (
        set(),
        {"summary", "required_approvals", "distinct_approvers", "expires_in", "on_expiry"},
    ),
}
RETRY_DEFAULTS = {
    "max_attempts": 1,
    "initial_interval": 1.0,
    "backoff": 2.0,
    "max_interval": 60.0,
    "non_retryable": [],
}
MAX_ATTEMPTS_LIMIT = 100
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Variables read by the dynamic loader or the shell before the program's own code runs
# (LD_PRELOAD turns any allow-listed executable into any code), PATH (the commands' PATH is the
# deployment's), and GAIT_* (the step variables and the worker's secret store).
ENV_RESERVED_NAMES = frozenset({"PATH", "IFS", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "PS4"})
ENV_RESERVED_PREFIXES = ("LD_", "DYLD_", "GAIT_", "BASH_FUNC_")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# set by gaitweb from the URL and the body, never by a spec
HEADERS_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "idempotency-key"})


def _gait(name: str) -> Any:
    return settings.GAIT[name]  # type: ignore[index]


def _fail(
    path: str, message: str, code: str = reasons.SPEC_INVALID, **details: Any
) -> InvalidInput:
    return InvalidInput(
        code, f"{path}: {message}" if path else message, details={"path": path, **details}
    )


def duration_parse(
    value: Any, path: str, *, allow_zero: bool = False, max_seconds: float | None = None
) -> float:
    """Seconds from ``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"24h"``, ``"1d"`` or
    compounds like ``"1h30m"``, at most ``max_seconds`` (default ``SPEC_DURATION_MAX``): a
    bound on every duration keeps every ``now + duration`` a date the database can hold."""
    if max_seconds is None:
        max_seconds = float(_gait("SPEC_DURATION_MAX"))
    if isinstance(value, bool):
        raise _fail(
            path, "must be a duration such as 30s, 5m or 24h", reasons.SPEC_INVALID_DURATION
        )
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and value.strip():
            seconds = _duration_text(value, path)
        else:
            raise _fail(
                path, "must be a duration such as 30s, 5m or 24h", reasons.SPEC_INVALID_DURATION
            )
    except OverflowError:  # float() of an integer with hundreds of digits
        seconds = math.inf
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise _fail(path, "must be a positive duration", reasons.SPEC_INVALID_DURATION)
    if seconds > max_seconds:
        raise _fail(
            path,
            f"must be at most {max_seconds:g} seconds",
            reasons.SPEC_DURATION_TOO_LONG,
            max_seconds=max_seconds,
        )
    return seconds


def _duration_text(value: str, path: str) -> float:
    text = value.strip().replace(" ", "")
    pos, seconds = 0, 0.0
    for m in DURATION_PART_RE.finditer(text):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos == len(text) and pos:
        return seconds
    try:
        return float(text)
    except ValueError:
        raise _fail(
            path,
            f"{value[:64]!r} is not a duration such as 30s, 5m or 24h",
            reasons.SPEC_INVALID_DURATION,
        ) from None


def _obj(
    value: Any, path: str, allowed: set[str], required: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, "must be an object")
    for key in value:
        if not isinstance(key, str) or key not in allowed:
            sub = f"{path}.{key}" if path else str(key)
            raise _fail(
                sub,
                f"unknown field (allowed: {', '.join(sorted(allowed))})",
                reasons.SPEC_UNKNOWN_FIELD,
            )
    for key in sorted(required):
        if key not in value:
            sub = f"{path}.{key}" if path else key
            raise _fail(sub, "is required", reasons.SPEC_MISSING_FIELD)
    return dict(value)


def _str(value: Any, path: str, *, max_len: int = 4096, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise _fail(path, "must be a non-empty string")
    if len(value) > max_len:
        raise _fail(path, f"must be at most {max_len} characters")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "must be true or false")
    return value


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(path, f"must be an integer from {lo} to {hi}")
    return value


def _value_map(value: Any, path: str, *, what: str) -> dict[str, Any]:
    """Header or env values: literal strings, or references ``{"secret": NAME}`` (resolved by
    the worker, jobs.secret_store). A literal in a credential-like name is refused: the spec is
    stored, shown to every reader of the job and packed."""
    if not isinstance(value, Mapping):
        raise _fail(path, "must be an object of strings or secret references")
    out: dict[str, Any] = {}
    for k, v in value.items():
        sub = f"{path}.{k}"
        if not isinstance(k, str) or not k:
            raise _fail(sub, "must be a non-empty name")
        name = secret_ref(v)
        if name is not None:
            if not SECRET_NAME_RE.match(name):
                raise _fail(
                    f"{sub}.secret",
                    "must be 1-128 upper-case letters, digits and _ (BILLING_TOKEN)",
                )
            out[k] = {"secret": name}
            continue
        if not isinstance(v, str):
            raise _fail(sub, 'must be a string or {"secret": "NAME"}')
        if "\x00" in v or (what == "header" and ("\r" in v or "\n" in v)):
            raise _fail(sub, "must not contain NUL (nor, in a header, CR or LF)")
        if credential_like(k):
            raise InvalidInput(
                reasons.SECRET_LITERAL_REFUSED,
                f"{sub}: a {what} named like a credential must not hold a literal value",
                details={"path": sub},
                hint=f'refer to a secret instead: {{"{k}": {{"secret": "NAME"}}}}, set as '
                "GAIT_SECRET_NAME on the workers (docs/security.md)",
            )
        out[k] = v
    return out


def _retry(value: Any, path: str) -> dict[str, Any]:
    raw = _obj(value, path, RETRY_KEYS)
    out: dict[str, Any] = dict(RETRY_DEFAULTS)
    if "max_attempts" in raw:
        out["max_attempts"] = _int(
            raw["max_attempts"], f"{path}.max_attempts", 1, MAX_ATTEMPTS_LIMIT
        )
    if "initial_interval" in raw:
        out["initial_interval"] = duration_parse(
            raw["initial_interval"], f"{path}.initial_interval", allow_zero=True
        )
    if "backoff" in raw:
        b = raw["backoff"]
        if isinstance(b, bool) or not isinstance(b, int | float) or not 1.0 <= b <= 100.0:
            raise _fail(f"{path}.backoff", "must be a number from 1 to 100")
        out["backoff"] = float(b)
    if "max_interval" in raw:
        out["max_interval"] = duration_parse(raw["max_interval"], f"{path}.max_interval")
    if "non_retryable" in raw:
        items = raw["non_retryable"]
        if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
            raise _fail(f"{path}.non_retryable", "must be a list of error names")
        out["non_retryable"] = list(items)
    if out["max_interval"] < out["initial_interval"]:
        raise _fail(f"{path}.max_interval", "must not be shorter than initial_interval")
    return out


def _with_python(w: dict[str, Any], path: str) -> dict[str, Any]:
    name = _str(w["function"], f"{path}.function", max_len=200)
    if step_function_get(name) is None:
        raise _fail(
            f"{path}.function",
            f"no python step function is registered as {name!r}",
            reasons.SPEC_UNKNOWN_FUNCTION,
            function=name,
        )
    args = w.get("args", {})
    if not isinstance(args, Mapping):
        raise _fail(f"{path}.args", "must be an object")
    return {"function": name, "args": dict(args)}


def _with_command(w: dict[str, Any], path: str) -> dict[str, Any]:
    shell = _bool(w.get("shell", False), f"{path}.shell")
    out: dict[str, Any] = {"shell": shell}
    if "argv" in w and "command" in w:
        raise _fail(f"{path}.command", "give either argv or command, not both")
    if shell:
        if "command" not in w:
            raise _fail(
                f"{path}.command", "is required when shell is true", reasons.SPEC_MISSING_FIELD
            )
        out["command"] = _str(w["command"], f"{path}.command", max_len=16384)
    else:
        if "command" in w:
            raise _fail(f"{path}.command", "needs shell: true (use argv to run without a shell)")
        if "argv" not in w:
            raise _fail(f"{path}.argv", "is required", reasons.SPEC_MISSING_FIELD)
        argv = w["argv"]
        if not isinstance(argv, list) or not argv:
            raise _fail(f"{path}.argv", "must be a non-empty list of strings")
        for i, a in enumerate(argv):
            if not isinstance(a, str) or (i == 0 and not a) or "\x00" in a:
                raise _fail(f"{path}.argv[{i}]", "must be a string without NUL")
        out["argv"] = list(argv)
    out["cwd"] = _str(w["cwd"], f"{path}.cwd") if "cwd" in w else ""
    for key in ("command", "cwd"):
        if "\x00" in out.get(key, ""):
            raise _fail(f"{path}.{key}", "must not contain NUL")
    env = w.get("env", {})
    for k in env if isinstance(env, Mapping) else ():
        if not isinstance(k, str) or (
            not ENV_NAME_RE.match(k)
            or k.upper() in ENV_RESERVED_NAMES
            or k.upper().startswith(ENV_RESERVED_PREFIXES)
        ):
            raise _fail(
                f"{path}.env.{k}",
                "is not a variable a spec may set (names are [A-Za-z_][A-Za-z0-9_]*; PATH, "
                "LD_*, DYLD_*, GAIT_*, IFS, ENV, BASH_ENV… belong to the loader, the shell or "
                "gaitweb)",
                reasons.SPEC_ENV_RESERVED,
            )
    out["env"] = _value_map(env, f"{path}.env", what="variable")
    return out


def _with_http(w: dict[str, Any], path: str) -> dict[str, Any]:
    method = w.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        raise _fail(f"{path}.method", f"must be one of {', '.join(HTTP_METHODS)}")
    url = _str(w["url"], f"{path}.url", max_len=8192)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(f"{path}.url", "must be an absolute http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _fail(f"{path}.url", "has an invalid port") from None
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(
            reasons.SECRET_LITERAL_REFUSED,
            f"{path}.url: credentials in the URL are stored and shown with the spec",
            details={"path": f"{path}.url"},
            hint='send them in a header that refers to a secret: {"Authorization": '
            '{"secret": "NAME"}} (docs/security.md)',
        )
    if "json" in w and "body" in w:
        raise _fail(f"{path}.body", "give either json or body, not both")
    out: dict[str, Any] = {
        "method": method.upper(),
        "url": url,
        "headers": _value_map(w.get("headers", {}), f"{path}.headers", what="header"),
    }
    if "json" in w:
        out["json"] = w["json"]
    if "body" in w:
        out["body"] = _str(w["body"], f"{path}.body", max_len=1 << 20, allow_empty=True)
    for h, v in out["headers"].items():
        if isinstance(v, str) and not v.isascii():
            raise _fail(f"{path}.headers.{h}", "must be ASCII")
        if not HEADER_NAME_RE.match(h):
            raise _fail(f"{path}.headers.{h}", "is not a valid header name")
        if h.lower() in HEADERS_RESERVED:
            raise _fail(
                f"{path}.headers.{h}",
                "is set by gaitweb (Host from the URL, Idempotency-Key as job_id/step_name)",
            )
    return out


def _with_sleep(w: dict[str, Any], path: str) -> dict[str, Any]:
    return {"duration": duration_parse(w["duration"], f"{path}.duration", allow_zero=True)}


def _with_wait_event(w: dict[str, Any], path: str) -> dict[str, Any]:
    signal = _str(w["signal"], f"{path}.signal", max_len=128)
    if not SIGNAL_NAME_RE.match(signal):
        raise _fail(
            f"{path}.signal",
            "must be 1-128 letters, digits and . _ : - (starting with a letter or digit)",
        )
    timeout = duration_parse(w["timeout"], f"{path}.timeout") if "timeout" in w else None
    return {"signal": signal, "timeout": timeout}


def _with_approval(w: dict[str, Any], path: str, step_name: str) -> dict[str, Any]:
    summary = w.get("summary", f"Approve step {step_name}?")
    summary = _str(summary, f"{path}.summary", max_len=512)
    on_expiry = w.get("on_expiry", "reject")
    if on_expiry not in ("reject", "escalate"):
        raise _fail(f"{path}.on_expiry", "must be reject or escalate")
    return {
        "summary": summary,
        "required_approvals": _int(
            w.get("required_approvals", 1), f"{path}.required_approvals", 1, 20
        ),
        "distinct_approvers": _bool(
            w.get("distinct_approvers", True), f"{path}.distinct_approvers"
        ),
        "expires_in": duration_parse(w["expires_in"], f"{path}.expires_in")
        if "expires_in" in w
        else None,
        "on_expiry": on_expiry,
    }


def _step(raw: Any, path: str) -> dict[str, Any]:
    s = _obj(raw, path, STEP_KEYS, {"name", "kind"})
    name = _str(s["name"], f"{path}.name", max_len=128)
    if not STEP_NAME_RE.match(name):
        raise _fail(
            f"{path}.name",
            "must be 1-128 letters, digits and . _ - (starting with a letter or digit)",
        )
    kind = s["kind"]
    if kind not in STEP_KINDS:
        raise _fail(
            f"{path}.kind",
            f"must be one of {', '.join(STEP_KINDS)}",
            reasons.SPEC_UNKNOWN_KIND,
            kind=str(kind)[:64],
        )
    required, allowed = WITH_KEYS[kind]
    w = _obj(s.get("with", {}), f"{path}.with", allowed, required)
    wp = f"{path}.with"
    if kind == "python":
        norm_with = _with_python(w, wp)
    elif kind == "command":
        norm_with = _with_command(w, wp)
    elif kind == "http":
        norm_with = _with_http(w, wp)
    elif kind == "sleep":
        norm_with = _with_sleep(w, wp)
    elif kind == "wait_event":
        norm_with = _with_wait_event(w, wp)
    else:
        norm_with = _with_approval(w, wp, name)

    max_timeout = float(_gait("STEP_TIMEOUT_MAX"))
    timeout = float(_gait("STEP_TIMEOUT_DEFAULT"))
    if "timeout" in s:
        if kind in PARKING_KINDS:
            raise _fail(f"{path}.timeout", f"does not apply to {kind} steps (see with.* instead)")
        timeout = duration_parse(s["timeout"], f"{path}.timeout", max_seconds=max_timeout)
    if "retry" in s and kind in PARKING_KINDS:
        raise _fail(f"{path}.retry", f"does not apply to {kind} steps")
    retry = _retry(s["retry"], f"{path}.retry") if "retry" in s else dict(RETRY_DEFAULTS)
    idempotent = (
        _bool(s["idempotent"], f"{path}.idempotent") if "idempotent" in s else kind in PARKING_KINDS
    )
    # a label for people (the gate derives its own name: step_gate_tool)
    tool = _str(s["tool"], f"{path}.tool", max_len=256) if "tool" in s else kind
    return {
        "name": name,
        "kind": kind,
        "with": norm_with,
        "retry": retry,
        "timeout": min(timeout, max_timeout),
        "idempotent": idempotent,
        "tool": tool,
    }


def step_gate_tool(step: Mapping[str, Any]) -> str:
    """The tool name the policy gate matches for a python, command or http step, derived from
    the validated ``with`` (never from the caller's ``tool`` label, which could say anything):

    - python: ``python:<function>``, the name the function was registered under in code;
    - command: ``command:<argv[0]>``, the executable exactly as the step runs it; with
      ``shell: true`` always ``shell``, whatever the command line says;
    - http: ``http:<method>:<host>``, e.g. ``http:post:payments.example.com`` (no port).

    The gate folds tool names to lower case, as it does for policies."""
    kind = step["kind"]
    w = step["with"]
    if kind == "python":
        return f"python:{w['function']}"
    if kind == "command":
        return "shell" if w.get("shell") else f"command:{w['argv'][0]}"
    if kind == "http":
        return f"http:{str(w['method']).lower()}:{urlsplit(w['url']).hostname or ''}"
    return str(kind)


def _size_check(size: int) -> None:
    limit = int(_gait("SPEC_MAX_BYTES"))
    if size > limit:
        raise LimitExceeded(
            reasons.SPEC_TOO_LARGE,
            f"the spec is larger than {limit} bytes",
            details={"path": "", "max_bytes": limit},
        )


def spec_load(text: str | bytes, *, source: str = "") -> dict[str, Any]:
    """The raw spec object from the text of a YAML or JSON file (JSON is YAML, but JSON's error
    messages are better for JSON files, so it is tried first)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    _size_check(len(text.encode("utf-8")))
    stripped = text.lstrip()
    what = source or "the spec"
    try:
        # bounded parsers (gaitweb.lib.parsing): no YAML anchors or aliases, no nesting that would
        # exhaust the stack; their refusals (yaml_alias_refused, json_too_deep, …) pass through
        data = (
            json_loads(text, what=what) if stripped.startswith("{") else yaml_load(text, what=what)
        )
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = (mark.line + 1) if mark is not None else getattr(exc, "lineno", None)
        raise InvalidInput(
            reasons.SPEC_UNPARSEABLE,
            f"{source or 'spec'} is not valid YAML or JSON: {exc}",
            details={"path": "", "line": line, "source": source},
        ) from None
    if not isinstance(data, dict):
        raise _fail("", "the spec must be an object with a steps list")
    return data


def spec_validate(raw: Any) -> dict[str, Any]:
    """The normalized spec for ``raw`` (a mapping, or YAML/JSON text), or ``InvalidInput``."""
    if isinstance(raw, str | bytes):
        raw = spec_load(raw)
    if not isinstance(raw, Mapping):
        raise _fail("", "the spec must be an object with a steps list")
    try:
        size = len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError):
        raise _fail("", "the spec must be plain JSON data") from None
    _size_check(size)
    if "workflow" in raw:
        return _workflow_spec(raw)
    top = _obj(raw, "", TOP_KEYS, {"steps"})
    steps_raw = top["steps"]
    if not isinstance(steps_raw, list):
        raise _fail("steps", "must be a list")
    steps = []
    seen: dict[str, int] = {}
    for i, item in enumerate(steps_raw):
        step = _step(item, f"steps[{i}]")
        if step["name"] in seen:
            raise _fail(
                f"steps[{i}].name",
                f"duplicates the name of steps[{seen[step['name']]}]",
                reasons.SPEC_DUPLICATE_STEP_NAME,
            )
        seen[step["name"]] = i
        steps.append(step)
    return {"steps": steps, **_spec_common(top)}


def _spec_common(top: dict[str, Any]) -> dict[str, Any]:
    deadline = duration_parse(top["deadline"], "deadline") if "deadline" in top else None
    description = (
        _str(top["description"], "description", max_len=512, allow_empty=True)
        if "description" in top
        else ""
    )
    return {"deadline_seconds": deadline, "description": description}


def _workflow_spec(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``{"workflow": NAME, "input": {...}, "version"?, "deadline"?, "description"?}``: one step
    of kind ``workflow`` that runs the registered function (jobs.durable)."""
    top = _obj(raw, "", WORKFLOW_TOP_KEYS, {"workflow"})
    version = top.get("version")
    if version is not None and not isinstance(version, str):
        raise _fail("version", "must be a string")
    call = workflow_call_normalize(top["workflow"], top.get("input"), version=version, fail=_fail)
    step = {
        "name": call["workflow"],
        "kind": "workflow",
        "with": call,
        "retry": dict(RETRY_DEFAULTS),
        "timeout": float(_gait("STEP_TIMEOUT_MAX")),
        "idempotent": True,
        "tool": "workflow",
    }
    return {"workflow": call["workflow"], "steps": [step], **_spec_common(top)}


def step_backoff_seconds(retry: Mapping[str, Any], failures: int) -> float:
    """Delay before the next attempt after ``failures`` failed attempts (1-based)."""
    delay = float(retry["initial_interval"]) * float(retry["backoff"]) ** max(failures - 1, 0)
    return min(delay, float(retry["max_interval"]))
