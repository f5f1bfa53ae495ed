"""Claim and checkpoint write on PostgreSQL: one data-modifying CTE each (jobs/engine/backend.py
states what they do; jobs/engine/orm.py does the same with the ORM)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ

from jobs.engine.backend import claim_kind, claim_payload, claim_prestart, write_prestart
from jobs.engine.lease import ENGINE_ACTOR, engine_setting
from jobs.journal import event_build
from jobs.models import Job, JobEvent, JobStatus, StepRun
from jobs.steps import StepResult

if TYPE_CHECKING:
    from jobs.engine.runner import _Runner

S = JobStatus
EVENT_COLUMNS = '("job_id", "revision", "type", "actor", "reason_code", "payload", "created_at", "prev_hash", "hash")'
STEPRUN_COLUMNS = (
    '("job_id", "step_index", "step_name", "attempt", "status", "idempotency_key", "input", "output", '
    '"error", "stdout", "stderr", "worker", "started_at", "finished_at")'
)


class PostgresBackend:
    completes_in_write = True

    def claim(self, runner: _Runner) -> bool:
        """Optimistic claim, two round trips and one commit: read the job with the StepRuns of
        its current step (and earlier outputs), then one statement takes the lease and journals
        the claim only if nothing changed since the read (revision, status and lease token)."""
        for _ in range(10):
            now = timezone.now()
            job = _job_with_runs(runner.job_id)
            if job is None:
                return False
            kind = claim_kind(job, now)
            if kind is None:
                return False
            event_type, reason = kind
            lease = now + timedelta(seconds=float(engine_setting("LEASE_SECONDS")))
            old = {"revision": job.revision, "status": job.status, "token": job.lease_token}
            previous_owner = job.lease_owner
            job.status, job.lease_token, job.lease_owner = (
                S.RUNNING,
                runner.token,
                runner.owner[:128],
            )
            job.lease_expires_at, job.wake_at = lease, None
            job.started_at = job.started_at or now
            jt = Job._meta.db_table
            params: list[Any]
            if event_type:
                job.status_reason_code = reason
                event = event_build(
                    job,
                    type=event_type,
                    actor=ENGINE_ACTOR,
                    reason_code=reason,
                    payload=claim_payload(runner, job, event_type, previous_owner),
                )
                sql = (
                    f'WITH j AS (UPDATE "{jt}" SET "status" = \'running\', "status_reason_code" = %s, '
                    '"lease_token" = %s, "lease_owner" = %s, "lease_expires_at" = %s, "wake_at" = NULL, '
                    '"started_at" = %s, "revision" = %s, "last_event_hash" = %s, "updated_at" = %s '
                    'WHERE "id" = %s AND "revision" = %s AND "status" = %s AND "lease_token" IS NOT DISTINCT FROM %s '
                    'RETURNING "id"), '
                    f'e AS (INSERT INTO "{JobEvent._meta.db_table}" {EVENT_COLUMNS} '
                    "SELECT j.id, %s, %s, %s, %s, %s::jsonb, %s, %s, %s FROM j)"
                )
                params = [
                    reason, runner.token, job.lease_owner, lease, job.started_at, event.revision, event.hash, now,
                    job.pk, old["revision"], old["status"], old["token"],
                    event.revision, event.type, event.actor, event.reason_code, json.dumps(event.payload),
                    event.created_at, event.prev_hash, event.hash,
                ]  # fmt: skip
            else:
                sql = (
                    f'WITH j AS (UPDATE "{jt}" SET "lease_token" = %s, "lease_owner" = %s, "lease_expires_at" = %s, '
                    '"updated_at" = %s WHERE "id" = %s AND "revision" = %s AND "status" = %s '
                    'AND "lease_token" IS NULL RETURNING "id")'
                )
                params = [
                    runner.token,
                    job.lease_owner,
                    lease,
                    now,
                    job.pk,
                    old["revision"],
                    old["status"],
                ]
            runs = [_steprun_from_json(job, r) for r in job._runs]  # type: ignore[attr-defined]
            # the delivery's broker row is deleted by the claim (its acknowledgement), and a
            # non-idempotent step's ``started`` record rides on it: one commit for both
            if runner.broker_row is not None:
                sql += f', q AS (DELETE FROM "{OrmQ._meta.db_table}" WHERE "id" = %s)'
                params.append(runner.broker_row)
            start = claim_prestart(job, runs)
            if start is not None:
                step, attempt_no = start
                sql += (
                    f', n AS (INSERT INTO "{StepRun._meta.db_table}" {STEPRUN_COLUMNS} '
                    "SELECT j.id, %s, %s, %s, 'started', %s, %s::jsonb, NULL, NULL, '', '', %s, %s, NULL "
                    'FROM j RETURNING "id") SELECT (SELECT count(*) FROM j), (SELECT "id" FROM n)'
                )
                params += [
                    job.cursor, step["name"], attempt_no, runner.idempotency_key(step),
                    json.dumps(step["with"]), job.lease_owner, now,
                ]  # fmt: skip
            else:
                sql += " SELECT (SELECT count(*) FROM j), NULL"
            with connection.cursor() as cur:
                cur.execute(sql, params)
                row = cur.fetchone()
            runner.broker_row = None  # acknowledged, whether or not the claim went through
            if not row or not row[0]:
                continue  # someone changed the job since we read it: look again
            runner.job = job
            runner.last_renew = time.monotonic()
            runner.outputs = dict(job._outputs or {})  # type: ignore[attr-defined]
            runner.runs = runs
            if row[1] is not None:
                runner.prestarted = (job.cursor, int(row[1]), now)
            return True
        return False

    def write_success(
        self,
        runner: _Runner,
        prev_rev: int,
        event: JobEvent,
        done: JobEvent | None,
        step: dict[str, Any],
        attempt: int,
        result: StepResult,
        started_at: datetime,
        finished_at: datetime,
        run_id: int | None,
    ) -> str | None:
        """One statement: update the job if we hold the lease and the revision is the one we
        chained from, record the StepRun and the event(s), return the job's status. ``done`` is
        the ``completed`` event of the last step: the job completes in the same statement unless
        it left ``running`` meanwhile (pause, stop)."""
        job = runner.job
        assert job is not None
        output_json = json.dumps(result.output)
        jt, st, et = Job._meta.db_table, StepRun._meta.db_table, JobEvent._meta.db_table
        params: list[Any] = []
        if done is None:
            job_sql = (
                f'UPDATE "{jt}" SET "cursor" = "cursor" + 1, "revision" = %s, "last_event_hash" = %s, '
                '"updated_at" = %s '
                'WHERE "id" = %s AND "lease_token" = %s AND "revision" = %s RETURNING "id", "status"'
            )
            # No indexed column changes here (the lease is renewed by the heartbeat, not by each
            # checkpoint), so PostgreSQL can update the job row in place (HOT) without touching
            # the job table's indexes: the difference is measurable at hundreds of steps/s.
            params += [event.revision, event.hash, finished_at, job.pk, runner.token, prev_rev]
        else:
            # right-hand sides see the row before the update: "status" is the old status
            run = "\"status\" = 'running'"
            job_sql = (
                f'UPDATE "{jt}" SET "cursor" = "cursor" + 1, '
                f'"revision" = CASE WHEN {run} THEN %s ELSE %s END, '
                f'"last_event_hash" = CASE WHEN {run} THEN %s ELSE %s END, '
                f'"status_reason_code" = CASE WHEN {run} THEN \'job_succeeded\' ELSE "status_reason_code" END, '
                f'"finished_at" = CASE WHEN {run} THEN %s ELSE "finished_at" END, '
                f'"outputs" = CASE WHEN {run} THEN %s::jsonb ELSE "outputs" END, '
                f'"lease_token" = CASE WHEN {run} THEN NULL ELSE "lease_token" END, '
                f'"lease_owner" = CASE WHEN {run} THEN \'\' ELSE "lease_owner" END, '
                f'"lease_expires_at" = CASE WHEN {run} THEN NULL ELSE "lease_expires_at" END, '
                f'"status" = CASE WHEN {run} THEN \'completed\' ELSE "status" END, '
                '"updated_at" = %s '
                'WHERE "id" = %s AND "lease_token" = %s AND "revision" = %s RETURNING "id", "status"'
            )
            outputs = {**runner.outputs, step["name"]: result.output}
            params += [
                done.revision, event.revision, done.hash, event.hash, finished_at,
                json.dumps(outputs), finished_at, job.pk, runner.token, prev_rev,
            ]  # fmt: skip
        if run_id is None:
            step_sql = (
                f'INSERT INTO "{st}" {STEPRUN_COLUMNS} '
                "SELECT j.id, %s, %s, %s, 'succeeded', %s, %s::jsonb, %s::jsonb, NULL, %s, %s, %s, %s, %s FROM j"
            )
            params += [
                job.cursor, step["name"], attempt, runner.idempotency_key(step), json.dumps(step["with"]),
                output_json, result.stdout, result.stderr, runner.owner[:128], started_at, finished_at,
            ]  # fmt: skip
        else:
            step_sql = (
                f'UPDATE "{st}" SET "status" = \'succeeded\', "output" = %s::jsonb, "stdout" = %s, "stderr" = %s, '
                f'"finished_at" = %s FROM j WHERE "{st}"."id" = %s'
            )
            params += [output_json, result.stdout, result.stderr, finished_at, run_id]
        sql = f'WITH j AS ({job_sql}), s AS ({step_sql}), e AS (INSERT INTO "{et}" {EVENT_COLUMNS} SELECT j.id, %s, %s, %s, %s, %s::jsonb, %s, %s, %s FROM j)'
        params += [
            event.revision, event.type, event.actor, event.reason_code, json.dumps(event.payload),
            event.created_at, event.prev_hash, event.hash,
        ]  # fmt: skip
        if done is not None:
            sql += (
                f', d AS (INSERT INTO "{et}" {EVENT_COLUMNS} SELECT j.id, %s, %s, %s, %s, %s::jsonb, %s, %s, %s '
                "FROM j WHERE j.status = 'completed')"
            )
            params += [
                done.revision, done.type, done.actor, done.reason_code, json.dumps(done.payload),
                done.created_at, done.prev_hash, done.hash,
            ]  # fmt: skip
        nxt = write_prestart(job)
        if nxt is not None:
            sql += (
                f', n AS (INSERT INTO "{st}" {STEPRUN_COLUMNS} '
                "SELECT j.id, %s, %s, 1, 'started', %s, %s::jsonb, NULL, NULL, '', '', %s, %s, NULL "
                "FROM j WHERE j.status = 'running' RETURNING \"id\") "
                'SELECT j."status", (SELECT "id" FROM n) FROM j'
            )
            params += [
                job.cursor + 1,
                nxt["name"],
                runner.idempotency_key(nxt),
                json.dumps(nxt["with"]),
                runner.owner[:128],
                finished_at,
            ]
        else:
            sql += ' SELECT "status", NULL FROM j'
        with connection.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        if row is None:
            return None
        if row[1] is not None:
            runner.prestarted = (job.cursor + 1, int(row[1]), finished_at)
        return str(row[0])


def _job_with_runs(job_id: str) -> Job | None:
    """The job, with the StepRuns of its current step (``_runs``, json) and the outputs of its
    succeeded steps (``_outputs``): one query, its SQL and column mapping built once per
    process (the ORM's per-query compilation and mapping cost more than the round trip)."""
    sql, attnames, converters = _claim_read()
    with connection.cursor() as cur:
        cur.execute(sql, [job_id])
        row = cur.fetchone()
    if row is None:
        return None
    n = len(attnames)
    values = list(row[:n])
    for i, convert in converters:
        values[i] = convert(values[i], None, connection)
    job = Job.from_db(connection.alias, attnames, values)
    job._runs, job._outputs = row[n], row[n + 1]  # type: ignore[attr-defined]
    return job


@functools.cache
def _claim_read() -> tuple[str, list[str], list[tuple[int, Callable[..., Any]]]]:
    st, jt = StepRun._meta.db_table, Job._meta.db_table
    fields = Job._meta.concrete_fields
    columns = ", ".join(f'"{jt}"."{f.column}"' for f in fields)
    runs_sql = (
        "SELECT coalesce(json_agg(json_build_object('id', r.id, 'attempt', r.attempt, 'status', r.status, "
        "'error', r.error, 'input', r.input, 'output', r.output, 'worker', r.worker) ORDER BY r.attempt), '[]'::json) "
        f'FROM "{st}" r WHERE r.job_id = "{jt}"."id" AND r.step_index = "{jt}"."cursor"'
    )
    outputs_sql = (
        f'CASE WHEN "{jt}"."cursor" > 0 THEN (SELECT json_object_agg(o.step_name, o.output) '
        f'FROM "{st}" o WHERE o.job_id = "{jt}"."id" AND o.status = \'succeeded\') END'
    )
    sql = f'SELECT {columns}, ({runs_sql}), {outputs_sql} FROM "{jt}" WHERE "{jt}"."job_id" = %s'
    # what the ORM would apply to each column (JSONField parses jsonb, which Django reads as text)
    converters = [
        (i, convert) for i, f in enumerate(fields) for convert in f.get_db_converters(connection)
    ]
    return sql, [f.attname for f in fields], converters


def _steprun_from_json(job: Job, r: dict[str, Any]) -> StepRun:
    """A StepRun from the claim query's json_agg row (enough fields for the loop's decisions
    and for ``save(update_fields=…)``)."""
    return StepRun(
        id=r["id"],
        job=job,
        step_index=job.cursor,
        step_name=job.current_step_name,
        attempt=r["attempt"],
        status=r["status"],
        error=r["error"],
        input=r["input"] or {},
        output=r["output"],
        worker=r["worker"] or "",
    )
