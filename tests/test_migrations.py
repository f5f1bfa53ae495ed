"""The migrations describe the models: a model change without its migration fails here, not on
a user's first `migrate` after an upgrade."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_lacks_a_migration() -> None:
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:  # --check exits 1 when a migration would be written
        pytest.fail(f"models changed without a migration (exit {exc.code}):\n{out.getvalue()}")
