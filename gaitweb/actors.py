"""Old path of gaitweb.lib.actors, kept only while jobs/engine.py and jobs/recurring.py (being
rewritten in parallel, issue #15) still import it: delete this file when they are merged."""

from gaitweb.lib.actors import Actor, Scope  # noqa: F401
