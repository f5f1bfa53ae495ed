"""Property-based run against the live OpenAPI schema (schemathesis, docs/api.md).

A real HTTP server (pytest-django's live_server on 127.0.0.1) serves the app; schemathesis reads
the schema it publishes and sends generated requests to every operation with an admin key.
Checks: no 5xx, every status code, content type, header and body as documented. Bounded: a
few examples per operation so the whole run stays well under a minute.
"""

from __future__ import annotations

from typing import Any

import pytest

MAX_EXAMPLES = 6


@pytest.fixture
def seeded(transactional_db: Any) -> str:
    """A committed admin key and one job, so generated requests meet real rows too."""
    from gaitweb.actors import Actor
    from gaitweb.apikeys import apikey_create
    from jobs.services import job_submit

    job_submit(actor=Actor.system("seed"), job_id="seed-job", identity="seed-agent")
    return apikey_create(actor=Actor.system("test"), identity="fuzzer", scopes="admin").key


def test_generated_requests_to_every_operation_get_documented_responses_and_no_5xx(
    live_server: Any, seeded: str
) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    headers = {"Authorization": f"Bearer {seeded}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(base_url=live_server.url, headers=headers, checks=checks)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert operations >= 35
    assert failures == [], "\n\n".join(failures)


NEGATIVE_EXAMPLES = 10


def test_negative_data_to_every_operation_never_gets_a_5xx(live_server: Any, seeded: str) -> None:
    """Schemathesis's negative mode: bodies, query strings and path parameters that break the
    schema on purpose (wrong types, missing fields, out-of-range values, odd strings). Every
    one must be refused with a 4xx, never a 500 (docs/security.md, "Every input is bounded")."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/")
    headers = {"Authorization": f"Bearer {seeded}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @settings(
            max_examples=NEGATIVE_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(
                base_url=live_server.url, headers=headers, checks=[not_a_server_error]
            )

        try:
            run()
        except Unsatisfiable:  # nothing to break: no parameters and no body (GET /health)
            continue
        except Exception as exc:  # every operation's failure, then all of them at once
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
        operations += 1
    assert operations >= 30
    assert failures == [], "\n\n".join(failures)
