"""A command step's processes do not outlive the worker that runs them.

A command runs in its own session and process group (so a stop or a timeout kills the whole
tree with one ``killpg``), which also means that killing the worker, even with kill -9 of the
worker's own process group, does not reach it. Two guards close that gap:

- the command's first process asks the kernel for ``SIGKILL`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``, Linux), set between fork and exec;
- a watchdog, a tiny process in a session of its own, holds the read end of a pipe whose write
  end only the worker has. When the worker dies, however it dies, the kernel closes that end,
  the watchdog reads end-of-file and kills the command's whole process group (what the first
  process started in the background too). When the attempt ends normally the worker writes one
  byte and the watchdog exits without killing anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

try:  # resolved once, in the worker: the child between fork and exec only calls it
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the watchdog alone guards the group
    _prctl = None

# Runs with -I -S (no site, no environment): reads the group to guard (one line), then stdin
# until one byte (released) or EOF (the worker is gone), then kills the group. EOF before the
# group's line: the worker died before the command started, or before it could report it (the
# command's leader then dies by its parent-death signal before it runs anything).
_WATCHDOG = (
    "import os,signal\n"
    "def read(n):\n"
    " try:\n"
    "  return os.read(0,n)\n"
    " except OSError:\n"
    "  return b''\n"
    "b=b''\n"
    "while b'\\n' not in b:\n"
    " d=read(64)\n"
    " if not d:\n"
    "  raise SystemExit\n"
    " b+=d\n"
    "line,_,rest=b.partition(b'\\n')\n"
    "if not rest:\n"
    " rest=read(1)\n"
    "if not rest:\n"
    " try:\n"
    "  os.killpg(int(line),signal.SIGKILL)\n"
    " except OSError:\n"
    "  pass\n"
)


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn``: ``sig`` (SIGKILL unless told) to this child when the process that
    forked it dies."""

    def preexec() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the request took effect
            os._exit(137)

    return preexec


class GroupWatchdog:
    """Kills a process group if this process dies before ``release()``. Started *before* the
    command (so no moment exists in which the command runs unguarded while the watchdog's
    interpreter starts), then told the command's group with ``watch(pgid)``."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={},
                start_new_session=True,  # a kill of the worker's group must not take it too
            )
        except OSError:  # the kernel-side guard still holds for the group's leader
            self.proc = None

    def watch(self, pgid: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(f"{pgid}\n".encode())
            self.proc.stdin.flush()

    def release(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write(b"x")
            proc.stdin.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
