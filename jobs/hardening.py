"""Keep command steps out of the worker's own memory (docs/security.md).

A command runs as the worker's user. Its environment is an allow-list (jobs.steps), but on
Linux a process of the same user can still read another's ``/proc/<pid>/environ`` and ``mem``
(``DATABASE_URL``, ``SECRET_KEY``, the ``GAIT_SECRET_*`` store) or attach a debugger to it. A
process that is not "dumpable" has its ``/proc/<pid>`` files owned by root and refuses
``ptrace`` from unprivileged processes, so gaitweb processes of a deployment that runs command
steps clear that flag at start-up. Forked children (django-q2's sentinel and workers) inherit
it; an executed command gets the default back, which is what it should have.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Any

from django.conf import settings

log = logging.getLogger("gaitweb.engine")

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _prctl(option: int, arg: int = 0) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return int(libc.prctl(option, arg, 0, 0, 0))


def process_dumpable() -> bool | None:
    """Whether this process is dumpable (None where prctl does not exist)."""
    if not sys.platform.startswith("linux"):
        return None
    return _prctl(PR_GET_DUMPABLE) == 1


def process_harden() -> bool:
    """Make this process non-dumpable when the deployment runs command steps
    (``GAIT_PROCESS_UNDUMPABLE`` turns it off, e.g. to attach a debugger). True if done."""
    gait: dict[str, Any] = settings.GAIT  # type: ignore[assignment]
    if not (gait["COMMAND_STEPS"] and gait["PROCESS_UNDUMPABLE"]):
        return False
    if not sys.platform.startswith("linux"):
        return False
    if _prctl(PR_SET_DUMPABLE, 0) != 0:  # pragma: no cover - prctl refusing this is unheard of
        log.warning("could not make the process non-dumpable (errno %s)", ctypes.get_errno())
        return False
    return True
