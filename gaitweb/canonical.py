"""Old path of gaitweb.lib.canonical, kept only while jobs/engine.py and jobs/recurring.py (being
rewritten in parallel, issue #15) still import it: delete this file when they are merged."""

from gaitweb.lib.canonical import iso_utc  # noqa: F401
