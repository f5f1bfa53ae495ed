"""The migrations describe the models: a model change without its migration fails here, not on
a user's first `migrate` after an upgrade."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection


@pytest.mark.django_db
def test_no_model_change_lacks_a_migration() -> None:
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:  # --check exits 1 when a migration would be written
        pytest.fail(f"models changed without a migration (exit {exc.code}):\n{out.getvalue()}")


@pytest.mark.django_db
def test_a_jobs_optional_foreign_keys_are_looked_up_through_their_partial_indexes() -> None:
    """The optional foreign keys of a job are indexed only where set (jobs.models.Job.Meta); an
    equality lookup (a job's children and retries, and what Django's SET_NULL and PROTECT look
    up when the referenced row is deleted) must still find its index."""
    if connection.vendor != "postgresql":
        pytest.skip("reads PostgreSQL's plans")
    with connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        for column, index in [
            ("parent_id", "job_parent_set"),
            ("retry_of_id", "job_retry_of_set"),
            ("policy_id", "job_policy_set"),
            ("created_by_user_id", "job_created_by_user_set"),
        ]:
            cur.execute(f'EXPLAIN SELECT "id" FROM "jobs_job" WHERE "{column}" = 1')
            plan = " ".join(row[0] for row in cur.fetchall())
            assert index in plan, (column, plan)
