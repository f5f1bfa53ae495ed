"""Old path of gaitweb.lib.errors, kept only while jobs/engine.py and jobs/recurring.py (being
rewritten in parallel, issue #15) still import it: delete this file when they are merged."""

from gaitweb.lib.errors import Conflict, Forbidden, GaitError, InvalidInput, LimitExceeded, NotFound  # noqa: F401
