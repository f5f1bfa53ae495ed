"""What steps may touch: the deployment's switches and the admin's allow-lists (docs/security.md,
"Steps that touch the machine are opt-in").

Checked twice. At submit, ``spec_authorize`` (called by ``job_submit`` and when a template is
saved) refuses a command step while command steps are off, ``shell: true`` while the shell is
off, an executable that is not on the list, and an http URL whose host is a refused IP literal
or ``localhost``; each refusal names the path. On the worker, just before the step runs,
``command_authorize`` and ``http_host_allowed`` check again against the table itself, so an
executable or a host removed after submit is not reached (the attempt fails, not retryable).

Submit reads a per-process copy of the lists that lives ``ALLOWLIST_CACHE_SECONDS`` (a job
submit must not cost a query per command step); a save or delete in this process drops it at
once, other processes see the change within that time. The worker never uses the copy.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from gaitweb.lib import reasons
from gaitweb.lib.errors import Forbidden
from jobs.egress import host_literal_category, host_normalize
from jobs.models import AllowedExecutable, AllowedHttpHost

# reason codes (docs/security.md)

SHELL = "/bin/sh"


def _gait(name: str) -> Any:
    return settings.GAIT[name]  # type: ignore[index]


@dataclass(frozen=True)
class Allowlists:
    executables: Mapping[str, str]  # name -> absolute path
    paths: frozenset[str]
    hosts: frozenset[tuple[str, int]]  # (normalized host, port or 0 for any)

    def executable(self, argv0: str) -> str | None:
        """The file to run for ``argv0``: a bare name is looked up by name (never on ``PATH``
        or in the working directory); a path must be absolute, normalized and itself listed
        (``./git`` and ``/tmp/git`` never match an allow-listed ``git``)."""
        if "/" not in argv0:
            return self.executables.get(argv0)
        if os.path.isabs(argv0) and os.path.normpath(argv0) == argv0 and argv0 in self.paths:
            return argv0
        return None

    def host_allowed(self, host: str, port: int) -> bool:
        host = host_normalize(host)
        return (host, port) in self.hosts or (host, 0) in self.hosts


_cached: tuple[float, Allowlists] | None = None
_lock = threading.Lock()


def allowlists_load() -> Allowlists:
    """The lists as the database has them now (two small queries)."""
    exes = dict(AllowedExecutable.objects.values_list("name", "path"))
    hosts = frozenset(AllowedHttpHost.objects.values_list("host", "port"))
    return Allowlists(executables=exes, paths=frozenset(exes.values()), hosts=hosts)


def allowlists_cached() -> Allowlists:
    """The per-process copy submit uses (see the module docstring)."""
    global _cached
    ttl = float(_gait("ALLOWLIST_CACHE_SECONDS"))
    now = time.monotonic()
    with _lock:
        if _cached is not None and now - _cached[0] < ttl:
            return _cached[1]
    lists = allowlists_load()
    with _lock:
        _cached = (now, lists)
    return lists


def allowlists_forget(**_: Any) -> None:
    """Drop this process's copy (connected to the allow-list models' save and delete)."""
    global _cached
    with _lock:
        _cached = None


def command_authorize(w: Mapping[str, Any], *, lists: Allowlists, path: str = "step") -> str:
    """The file a command step runs (``/bin/sh`` for ``shell: true``), or ``Forbidden`` whose
    ``details.path`` starts with ``path`` (the step's own, ``steps[2]``)."""
    if not _gait("COMMAND_STEPS"):
        raise Forbidden(
            reasons.COMMAND_STEPS_DISABLED,
            "command steps are turned off in this deployment",
            details={"path": f"{path}.kind"},
            hint="an admin turns them on with GAIT_COMMAND_STEPS=true (docs/security.md)",
        )
    if w.get("shell"):
        if not _gait("COMMAND_SHELL"):
            raise Forbidden(
                reasons.COMMAND_SHELL_DISABLED,
                "shell: true is turned off in this deployment",
                details={"path": f"{path}.with.shell"},
                hint="use argv with an allow-listed executable, or ask an admin for "
                "GAIT_COMMAND_SHELL=true (docs/security.md)",
            )
        return SHELL
    argv0 = str(w["argv"][0])
    executable = lists.executable(argv0)
    if executable is None:
        raise Forbidden(
            reasons.COMMAND_NOT_ALLOWED,
            f"{argv0!r} is not an allowed executable",
            details={"path": f"{path}.with.argv[0]", "executable": argv0[:256]},
            hint="an admin adds executables under Jobs › Allowed executables; name them by "
            "their bare name (git) or their listed absolute path (/usr/bin/git)",
        )
    return executable


def http_url_authorize(url: str, *, lists: Allowlists, path: str = "with.url") -> None:
    """Refuse at submit a URL whose host is a refused IP literal or ``localhost`` (names are
    resolved, and every address checked, only when the step runs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    category = host_literal_category(host)
    if category is not None and not lists.host_allowed(host, port):
        raise Forbidden(
            reasons.HTTP_DESTINATION_FORBIDDEN,
            f"{host} is a {category.replace('_', '-')} address: http steps may not reach it",
            details={"path": path, "host": host_normalize(host), "category": category},
            hint="an admin allow-lists internal hosts under Jobs › Allowed HTTP hosts",
        )


def spec_authorize(spec: Mapping[str, Any]) -> None:
    """Refuse a normalized spec (jobs.spec) whose steps this deployment does not allow."""
    lists: Allowlists | None = None
    for i, step in enumerate(spec.get("steps") or ()):
        kind = step["kind"]
        if kind not in ("command", "http"):
            continue
        if lists is None:
            lists = allowlists_cached()
        if kind == "command":
            command_authorize(step["with"], lists=lists, path=f"steps[{i}]")
        else:
            http_url_authorize(step["with"]["url"], lists=lists, path=f"steps[{i}].with.url")
