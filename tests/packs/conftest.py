"""Fixtures for pack tests: signing keys in a private directory, a job with history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gaitweb.lib.actors import Actor
from jobs.models import Job
from tests.packs.helpers import job_with_history


@pytest.fixture(autouse=True)
def keys_dir(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own key directory and no signing key in the environment."""
    path = tmp_path / "keys"
    settings.GAIT = {**settings.GAIT, "KEYS_DIR": path}
    monkeypatch.delenv(settings.GAIT["SIGNING_KEY_ENV"], raising=False)
    return path


@pytest.fixture
def admin() -> Actor:
    return Actor.system("ada-admin")


@pytest.fixture
def job(db: Any) -> Job:
    return job_with_history()
