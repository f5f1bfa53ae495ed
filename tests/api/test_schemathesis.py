"""Property-based run against the live OpenAPI schema (schemathesis, docs/api.md).

A real HTTP server (pytest-django's live_server on 127.0.0.1) serves the app; schemathesis reads
the schema it publishes and sends generated requests to every operation, once with an admin key
and once with a key of a second identity. Checks: no 5xx, every status code, content type,
header and body as documented. Then every read of the first identity's objects (its job and
everything under it, its pack, its template) is sent with the second identity's key and must
be a documented 404 (docs/security.md). Bounded: a few examples per operation so the whole run
stays well under a minute or two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from gaitweb.apikeys import apikey_create
from gaitweb.lib.actors import Actor
from jobs.recurring import template_create
from jobs.services import job_checkpoint_add, job_submit
from packs.services import pack_build

MAX_EXAMPLES = 6
SEED_IDENTITY = "seed-agent"


@dataclass(frozen=True)
class Seeded:
    admin_key: str
    other_key: str  # identity "other-agent": read, submit, control
    path_parameters: dict[str, str]  # the seed identity's objects


@pytest.fixture
def seeded(transactional_db: Any) -> Seeded:
    """Committed keys and one identity's job (with a checkpoint and a pack) and template, so
    generated requests meet real rows too."""

    seed = Actor.system("seed", identity=SEED_IDENTITY)
    job_submit(actor=seed, job_id="seed-job", identity=SEED_IDENTITY)
    job_checkpoint_add(actor=seed, job_id="seed-job", type="plan", summary="plan")
    pack = pack_build(actor=seed, job_id="seed-job").pack
    template_create(actor=seed, name="Seed", template_id="seed-tpl", identity=SEED_IDENTITY)
    test = Actor.system("test")
    return Seeded(
        admin_key=apikey_create(actor=test, identity="fuzzer", scopes="admin").key,
        other_key=apikey_create(
            actor=test, identity="other-agent", scopes="read,submit,control"
        ).key,
        path_parameters={
            "job_id": "seed-job",
            "checkpoint_id": "cp_0001",
            "pack_id": pack.pack_id,
            "template_id": "seed-tpl",
        },
    )


def _checks() -> list[Any]:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]


@pytest.mark.parametrize("who", ["admin", "other_identity"])
def test_generated_requests_to_every_operation_get_documented_responses_and_no_5xx(
    live_server: Any, seeded: Seeded, who: str
) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/")
    checks = _checks()
    key = seeded.admin_key if who == "admin" else seeded.other_key
    headers = {"Authorization": f"Bearer {key}"}
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


def test_a_second_identity_reads_none_of_the_first_identitys_objects(
    live_server: Any, seeded: Seeded
) -> None:
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/")
    headers = {"Authorization": f"Bearer {seeded.other_key}"}
    owner_names = {"job_id", "pack_id", "template_id"}
    probed, wrong = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        params = {p.name for p in operation.path_parameters}
        if operation.method.upper() != "GET" or not params & owner_names:
            continue
        case = operation.Case(
            path_parameters={k: v for k, v in seeded.path_parameters.items() if k in params}
        )
        response = case.call(base_url=live_server.url, headers=headers)
        probed.append(operation.path)
        if response.status_code != 404:
            wrong.append(f"GET {operation.path}: {response.status_code} {response.text[:200]}")
            continue
        case.validate_response(response, checks=_checks())
    assert len(probed) >= 12, probed
    assert wrong == [], "\n".join(wrong)


NEGATIVE_EXAMPLES = 10


def test_negative_data_to_every_operation_never_gets_a_5xx(
    live_server: Any, seeded: Seeded
) -> None:
    """Schemathesis's negative mode: bodies, query strings and path parameters that break the
    schema on purpose (wrong types, missing fields, out-of-range values, odd strings). Every
    one must be refused with a 4xx, never a 500 (docs/security.md, "Every input is bounded")."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/")
    headers = {"Authorization": f"Bearer {seeded.admin_key}"}
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
