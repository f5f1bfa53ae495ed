"""Settings of the test run: the project's own, with the test suite's python step functions
(tests/stepfns.py). pytest-django exports DJANGO_SETTINGS_MODULE, so the workers and CLI
processes the tests start read this module too."""

import os

os.environ.setdefault("GAIT_STEP_MODULES", "tests.stepfns,tests.workflows,tests.agent_workflows")

from gaitweb.settings import *  # noqa: E402,F403
