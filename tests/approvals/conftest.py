"""Fixtures for the policy gate and approvals tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import GAIT_VECTORS


@pytest.fixture
def gait_vectors() -> Path:
    """Gait's own policies and intents (../shared/gait-vectors), read in place, never copied."""
    assert (GAIT_VECTORS / "README.md").is_file(), f"gait vectors missing at {GAIT_VECTORS}"
    return GAIT_VECTORS
