"""Jobs over HTTP (docs/api.md): thin DRF views over jobs/services.py, jobs/selectors.py and the
engine's ``job_signal`` / ``job_stats``. Each view parses input with an input serializer, calls
one service, and renders an output serializer; refusals are the services' ``GaitError``s,
turned into the error envelope by gaitweb.api.exception_handler.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from approvals.api import DecideOut
from approvals.policies import policy_request_resolve
from approvals.services import job_decide
from gaitweb.api import KeysetPagination, StrictInput, StrictQuery, page_serializer
from gaitweb.api_views import ApiView
from gaitweb.idempotency import job_submit_idempotent
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.canonical import iso_utc
from gaitweb.lib.errors import Interface, PolicyRefused
from jobs import services
from jobs.engine.sweep import SWEEP_BEAT_KEY
from jobs.models import Checkpoint, Job, JobEvent, JobStatus, StepRun
from jobs.selectors import (
    checkpoint_get,
    job_checkpoints,
    job_events,
    job_filter,
    job_get,
    job_list,
    job_snapshot,
    job_step_runs,
)
from jobs.services import job_signal
from jobs.stats import job_stats

READ, SUBMIT, CONTROL, APPROVE = Scope.READ, Scope.SUBMIT, Scope.CONTROL, Scope.APPROVE

# --- output serializers ------------------------------------------------------------------------


class JobOut(serializers.Serializer):
    job_id = serializers.CharField()
    status = serializers.ChoiceField(choices=JobStatus.choices)
    stop_reason = serializers.CharField(allow_blank=True)
    status_reason_code = serializers.CharField(allow_blank=True)
    identity = serializers.CharField(allow_blank=True)
    policy_digest = serializers.CharField(allow_blank=True)
    policy_ref = serializers.CharField(allow_blank=True)
    environment_fingerprint = serializers.CharField(allow_blank=True)
    revision = serializers.IntegerField()
    last_event_hash = serializers.CharField(allow_blank=True)
    cursor = serializers.IntegerField(help_text="index of the next step")
    step_count = serializers.IntegerField()
    current_step = serializers.CharField(allow_blank=True)
    checkpoint_count = serializers.IntegerField()
    labels = serializers.DictField(child=serializers.CharField(allow_blank=True))
    created_by = serializers.CharField(allow_blank=True)
    created_at = serializers.CharField()
    updated_at = serializers.CharField()
    started_at = serializers.CharField(allow_null=True)
    finished_at = serializers.CharField(allow_null=True)
    stopped_at = serializers.CharField(allow_null=True)
    stopped_by = serializers.CharField(allow_blank=True)
    wake_at = serializers.CharField(allow_null=True)
    deadline = serializers.CharField(allow_null=True)
    retry_of = serializers.CharField(allow_null=True)


class EventOut(serializers.Serializer):
    revision = serializers.IntegerField()
    type = serializers.CharField()
    actor = serializers.CharField(allow_blank=True)
    reason_code = serializers.CharField(allow_blank=True)
    payload = serializers.JSONField()
    created_at = serializers.CharField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField()


class CheckpointOut(serializers.Serializer):
    checkpoint_id = serializers.CharField()
    type = serializers.CharField()
    summary = serializers.CharField(allow_blank=True)
    required_action = serializers.CharField(allow_blank=True)
    reason_code = serializers.CharField(allow_blank=True)
    actor = serializers.CharField(allow_blank=True)
    revision = serializers.IntegerField()
    created_at = serializers.CharField()


class CheckpointAddOut(serializers.Serializer):
    checkpoint = CheckpointOut()
    job = JobOut()


class StepRunOut(serializers.Serializer):
    step_index = serializers.IntegerField()
    step_name = serializers.CharField()
    attempt = serializers.IntegerField()
    status = serializers.CharField()
    idempotency_key = serializers.CharField(allow_blank=True)
    input = serializers.JSONField()
    output = serializers.JSONField(allow_null=True)
    error = serializers.JSONField(allow_null=True)
    stdout_tail = serializers.CharField(allow_blank=True)
    stderr_tail = serializers.CharField(allow_blank=True)
    worker = serializers.CharField(allow_blank=True)
    started_at = serializers.CharField()
    finished_at = serializers.CharField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)


class ChainOut(serializers.Serializer):
    ok = serializers.BooleanField()
    job_id = serializers.CharField()
    chain = serializers.DictField(child=serializers.JSONField())


class InspectOut(serializers.Serializer):
    job = JobOut()
    checkpoints = CheckpointOut(many=True)
    events = serializers.ListField(child=serializers.DictField(child=serializers.JSONField()))
    chain = serializers.DictField(child=serializers.JSONField())


JobPage = page_serializer(JobOut, "JobPage")
EventPage = page_serializer(EventOut, "EventPage")
CheckpointPage = page_serializer(CheckpointOut, "CheckpointPage")
StepRunPage = page_serializer(StepRunOut, "StepRunPage")


def _event_dict(e: JobEvent) -> dict[str, Any]:
    return {
        "revision": e.revision,
        "type": e.type,
        "actor": e.actor,
        "reason_code": e.reason_code,
        "payload": e.payload,
        "created_at": iso_utc(e.created_at),
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


def _steprun_dict(r: StepRun) -> dict[str, Any]:
    return {
        "step_index": r.step_index,
        "step_name": r.step_name,
        "attempt": r.attempt,
        "status": r.status,
        "idempotency_key": r.idempotency_key,
        "input": r.input,
        "output": r.output,
        "error": r.error,
        "stdout_tail": r.stdout,
        "stderr_tail": r.stderr,
        "worker": r.worker,
        "started_at": iso_utc(r.started_at),
        "finished_at": iso_utc(r.finished_at),
        "duration_ms": r.duration_ms,
    }


# --- input serializers -------------------------------------------------------------------------


class JobSubmitIn(StrictInput):
    job_id = serializers.CharField(
        required=False,
        max_length=128,
        help_text="client-chosen id (generated when omitted); makes the submit idempotent",
    )
    identity = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=256,
        help_text="agent identity; an API key may only name its own",
    )
    policy = serializers.CharField(
        required=False, max_length=200, help_text="stored policy: NAME, NAME@N or its sha256 digest"
    )
    spec = serializers.DictField(
        required=False,
        child=serializers.JSONField(),
        help_text="{steps: [...]} for gaitweb's workers; omit for an agent-driven job",
    )
    labels = serializers.DictField(
        required=False, child=serializers.CharField(allow_blank=True, max_length=256)
    )
    parent_id = serializers.CharField(required=False, max_length=128)


class PageQuery(StrictQuery):
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)


class JobListQuery(PageQuery):
    """The filters of every job list (jobs.selectors.job_filter; the dashboard and MCP take
    the same ones)."""

    status = serializers.CharField(
        required=False, max_length=400, help_text="one status or a comma-separated list"
    )
    identity = serializers.CharField(
        required=False,
        max_length=256,
        help_text="only this identity's jobs (an identity-bound key sees its own only anyway)",
    )
    label = serializers.ListField(
        required=False,
        max_length=16,
        child=serializers.CharField(max_length=400),
        help_text="key=value (the label's text) or key (the label is set); repeatable: all must match",
    )
    q = serializers.CharField(required=False, max_length=128, help_text="job id prefix")
    template_id = serializers.CharField(
        required=False, max_length=64, help_text="runs of this job template"
    )
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)


class CheckpointAddIn(StrictInput):
    type = serializers.CharField(
        max_length=32, help_text="plan | progress | decision-needed | blocked | completed"
    )
    summary = serializers.CharField(allow_blank=True, max_length=2048, help_text="≤ 512 bytes")
    required_action = serializers.CharField(required=False, allow_blank=True, max_length=2048)
    reason_code = serializers.CharField(required=False, allow_blank=True, max_length=256)


class ReasonIn(StrictInput):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=4096)


class ResumeIn(ReasonIn):
    identity = serializers.CharField(
        required=False,
        max_length=256,
        help_text="identity asserting the resume; an API key asserts its own",
    )
    policy = serializers.CharField(
        required=False,
        max_length=200,
        help_text="stored policy to re-evaluate (default: the bound policy's current version)",
    )
    allow_env_mismatch = serializers.BooleanField(required=False, default=False)
    environment_fingerprint = serializers.CharField(required=False, max_length=128)


class SignalIn(StrictInput):
    payload = serializers.JSONField(required=False, allow_null=True, default=None)


# --- helpers -----------------------------------------------------------------------------------


def asserted_identity(actor: Actor, requested: str | None) -> str | None:
    """The identity a request asserts. An API key IS its identity: naming another one is
    refused (``identity_binding_mismatch``); a person may assert one (like the CLI's
    ``--identity``) or none."""
    if actor.kind == "apikey":
        if requested not in (None, "") and requested != actor.identity:
            raise PolicyRefused(
                reasons.IDENTITY_BINDING_MISMATCH,
                f"this API key is bound to identity {actor.identity!r}, not {requested!r}",
                details={"identity": requested, "key_identity": actor.identity},
            )
        return actor.identity
    return requested or None


def policy_binding(ref: str | None) -> services.PolicyBinding | None:
    """A stored policy named by the request. Unlike the CLI, the API never reads files."""
    if not ref:
        return None

    return policy_request_resolve(ref=ref)


def idempotency_owner(actor: Actor) -> str:
    return f"{actor.kind}:{actor.identity or actor.name}"


_jobs_page = KeysetPagination(("-created_at", "-id"), datetime_fields=("created_at",))
_events_page = KeysetPagination(("revision",))
_rows_page = KeysetPagination(("id",))


def _job_response(job: Job, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # job_snapshot already is JobOut's shape (the schema; schemathesis checks responses against
    # it): skipping the serializer pass saves ~1 ms of CPU on the hottest endpoints
    return Response(job_snapshot(job), status=status, headers=headers)


def _job_rows_response(
    view: ApiView,
    job_id: str,
    *,
    rows: Callable[..., Any],
    pagination: KeysetPagination,
    out: type[serializers.Serializer],
    as_dict: Callable[[Any], dict[str, Any]],
) -> Response:
    """One page of a job's child rows (events, checkpoints, step runs) from their selector;
    404 for a job the caller cannot see, as for an unknown one."""
    request = view.request
    view.query(PageQuery)
    qs = rows(actor=view.actor, job_id=job_id)
    rows_, next_cursor = pagination.paginate(request, qs)
    data = out([as_dict(r) for r in rows_], many=True).data
    return Response(pagination.response(request, data, next_cursor))


# --- views ------------------------------------------------------------------------------------


class JobsView(ApiView):
    required_scopes = {"GET": READ, "POST": SUBMIT}

    @extend_schema(
        operation_id="jobs_list",
        parameters=[JobListQuery],
        responses={200: JobPage},
        summary="List jobs, newest first (cursor pagination)",
    )
    def get(self, request: Request) -> Response:
        q = self.query(JobListQuery)
        filters = job_filter(
            status=q.get("status"),
            identity=q.get("identity"),
            label=q.get("label"),
            q=q.get("q"),
            template_id=q.get("template_id"),
            created_after=q.get("created_after"),
            created_before=q.get("created_before"),
        )
        qs = job_list(actor=self.actor, filters=filters)
        rows, next_cursor = _jobs_page.paginate(request, qs.select_related("retry_of"))
        data = [job_snapshot(j) for j in rows]  # JobOut's shape, as in _job_response
        return Response(_jobs_page.response(request, data, next_cursor))

    @extend_schema(
        operation_id="jobs_submit",
        request=JobSubmitIn,
        responses={201: JobOut, 200: JobOut},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="retrying with the same key and body returns the same job (200); a different body is a 409",
            )
        ],
        summary="Submit a job (with a spec, or without steps for an agent-driven job)",
    )
    def post(self, request: Request) -> Response:
        data = self.input(JobSubmitIn)
        actor = self.actor
        identity = asserted_identity(actor, data.get("identity"))
        body = {
            "job_id": data.get("job_id"),
            "identity": identity or "",
            "policy": data.get("policy") or "",
            "spec": data.get("spec") or {},
            "labels": data.get("labels") or {},
            "parent_id": data.get("parent_id") or "",
        }

        def submit(in_transaction: Callable[[Job], object] | None) -> Job:
            return services.job_submit(
                actor=actor,
                job_id=data.get("job_id"),
                identity=identity or "",
                policy=policy_binding(data.get("policy")),
                spec=data.get("spec"),
                labels=data.get("labels"),
                parent_id=data.get("parent_id"),
                in_transaction=in_transaction,
            )

        # ScopePermission checked SUBMIT, so a replay (which never reaches job_submit) is covered
        job, replayed = job_submit_idempotent(
            owner=idempotency_owner(actor),
            header_key=request.headers.get("Idempotency-Key"),
            body=body,
            submit=submit,
        )
        headers = {"Location": f"/api/v1/jobs/{job.job_id}"}
        if replayed:  # the job was just read from its idempotency record: no refresh needed
            headers["Idempotent-Replayed"] = "true"
        return _job_response(job, 200 if replayed else 201, headers)


class JobDetailView(ApiView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="jobs_get", responses={200: JobOut}, summary="A job's status and state"
    )
    def get(self, request: Request, job_id: str) -> Response:
        return _job_response(job_get(actor=self.actor, job_id=job_id))


class JobEventsView(ApiView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="jobs_events",
        parameters=[PageQuery],
        responses={200: EventPage},
        summary="The job's hash-chained journal, oldest first",
    )
    def get(self, request: Request, job_id: str) -> Response:
        return _job_rows_response(
            self,
            job_id,
            rows=job_events,
            pagination=_events_page,
            out=EventOut,
            as_dict=_event_dict,
        )


class JobCheckpointsView(ApiView):
    required_scopes = {"GET": READ, "POST": SUBMIT}

    @extend_schema(
        operation_id="jobs_checkpoints_list",
        parameters=[PageQuery],
        responses={200: CheckpointPage},
        summary="The job's checkpoints, oldest first (cursor pagination)",
    )
    def get(self, request: Request, job_id: str) -> Response:
        return _job_rows_response(
            self,
            job_id,
            rows=job_checkpoints,
            pagination=_rows_page,
            out=CheckpointOut,
            as_dict=Checkpoint.as_dict,
        )

    @extend_schema(
        operation_id="jobs_checkpoints_add",
        request=CheckpointAddIn,
        responses={201: CheckpointAddOut},
        summary="Report a checkpoint (decision-needed, blocked and completed move the job)",
    )
    def post(self, request: Request, job_id: str) -> Response:
        data = self.input(CheckpointAddIn)
        cp = services.job_checkpoint_add(
            actor=self.actor,
            job_id=job_id,
            type=data["type"],
            summary=data["summary"],
            required_action=data.get("required_action", ""),
            reason_code=data.get("reason_code", ""),
        )
        job = job_get(actor=self.actor, job_id=job_id)
        out = {"checkpoint": cp.as_dict(), "job": job_snapshot(job)}
        return Response(CheckpointAddOut(out).data, status=201)


class JobCheckpointDetailView(ApiView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="jobs_checkpoints_show",
        responses={200: CheckpointOut},
        summary="One checkpoint of the job, by its id (cp_0001)",
    )
    def get(self, request: Request, job_id: str, checkpoint_id: str) -> Response:
        cp = checkpoint_get(actor=self.actor, job_id=job_id, checkpoint_id=checkpoint_id)
        return Response(CheckpointOut(cp.as_dict()).data)


class JobStepsView(ApiView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="jobs_steps",
        parameters=[PageQuery],
        responses={200: StepRunPage},
        summary="Step runs (one per attempt) with outputs, errors and log tails",
    )
    def get(self, request: Request, job_id: str) -> Response:
        return _job_rows_response(
            self,
            job_id,
            rows=job_step_runs,
            pagination=_rows_page,
            out=StepRunOut,
            as_dict=_steprun_dict,
        )


class JobSignalView(ApiView):
    required_scopes = {"POST": SUBMIT}

    @extend_schema(
        operation_id="jobs_signal",
        request=SignalIn,
        responses={202: JobOut},
        summary="Deliver a signal (a wait_event step consumes it)",
    )
    def post(self, request: Request, job_id: str, name: str) -> Response:
        data = self.input(SignalIn)
        job = job_signal(actor=self.actor, job_id=job_id, name=name, payload=data.get("payload"))
        return _job_response(job, 202)


def _action_view(fn: Callable[..., Job], scope: str, summary: str) -> type[ApiView]:
    """POST jobs/<job_id>/<action> for the service ``job_<action>(actor=, job_id=, reason=)``."""
    action = fn.__name__.removeprefix("job_")

    @extend_schema(
        operation_id=f"jobs_{action}", request=ReasonIn, responses={200: JobOut}, summary=summary
    )
    def post(self: ApiView, request: Request, job_id: str) -> Response:
        data = self.input(ReasonIn)
        return _job_response(fn(actor=self.actor, job_id=job_id, reason=data.get("reason", "")))

    name = f"Job{action.capitalize()}View"
    return type(
        name, (ApiView,), {"required_scopes": {"POST": scope}, "post": post, "__doc__": summary}
    )


JobPauseView = _action_view(services.job_pause, CONTROL, "Pause at the next step boundary")
JobStopView = _action_view(
    services.job_stop,
    CONTROL,
    "Emergency stop: preempt the running step, block later dispatches",
)


class JobDecisionResultOut(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    question = serializers.CharField(allow_blank=True, help_text="what was decided")
    approval_request = DecideOut(
        allow_null=True,
        help_text="the decision recorded on the approval request the job waited on, if any",
    )
    resumed = serializers.BooleanField()
    resume_error = serializers.DictField(
        allow_null=True, child=serializers.CharField(allow_blank=True)
    )


class JobDecisionOut(JobOut):
    decided = JobDecisionResultOut(help_text="what the approve or reject recorded")


def _decision_view(decision: str, summary: str, description: str) -> type[ApiView]:
    """POST jobs/<job_id>/approve|reject: a decision on whatever the job waits on
    (approvals.services.job_decide): its pending approval request, or its own decision point."""

    @extend_schema(
        operation_id=f"jobs_{decision}",
        request=ReasonIn,
        responses={200: JobDecisionOut},
        summary=summary,
        description=description,
    )
    def post(self: ApiView, request: Request, job_id: str) -> Response:
        data = self.input(ReasonIn)
        outcome = job_decide(
            actor=self.actor, job_id=job_id, decision=decision, reason=data.get("reason", "")
        )
        return Response({**job_snapshot(outcome.job), "decided": outcome.as_dict(Interface.API)})

    name = f"Job{decision.capitalize()}View"
    return type(
        name, (ApiView,), {"required_scopes": {"POST": APPROVE}, "post": post, "__doc__": summary}
    )


JobApproveView = _decision_view(
    "approve",
    "Approve what the job waits on (its approval request, or its decision point)",
    "A job waiting on an approval request gets a decision on that request (N-of-M, distinct "
    "approvers, separation of duties, expiry; the last approval resumes the job): "
    "`decided.approval_request` shows it. Otherwise the approval is recorded on the job and a "
    "resume checks for it.",
)
JobRejectView = _decision_view(
    "reject",
    "Reject what the job waits on (the job becomes blocked); reason required",
    "A job waiting on an approval request gets a reject on that request.",
)
JobCancelView = _action_view(services.job_cancel, CONTROL, "Cancel the job")
JobRetryView = _action_view(
    services.job_retry,
    CONTROL,
    "Retry a failed, blocked or cancelled job from the failed step",
)


class JobResumeView(ApiView):
    required_scopes = {"POST": CONTROL}

    @extend_schema(
        operation_id="jobs_resume",
        request=ResumeIn,
        responses={200: JobOut},
        summary="Resume after the five checks (status, approvals, policy, identity, environment)",
    )
    def post(self, request: Request, job_id: str) -> Response:
        data = self.input(ResumeIn)
        actor = self.actor
        identity = asserted_identity(actor, data.get("identity"))
        if actor.bound_identity is None and not data.get("identity"):
            # a cross-identity key resumes like an operator: it asserts no identity, and the
            # job's own is checked for revocation (resume check 4)
            identity = None
        job = services.job_resume(
            actor=actor,
            job_id=job_id,
            reason=data.get("reason", ""),
            identity=identity,
            policy=policy_binding(data.get("policy")),
            allow_env_mismatch=data.get("allow_env_mismatch", False),
            environment_fingerprint=data.get("environment_fingerprint"),
        )
        return _job_response(job)


# the lifecycle actions, POST /api/v1/jobs/<job_id>/<action> (mounted in gaitweb/api_urls.py)
JOB_ACTION_VIEWS: dict[str, type[ApiView]] = {
    "pause": JobPauseView,
    "stop": JobStopView,
    "approve": JobApproveView,
    "reject": JobRejectView,
    "resume": JobResumeView,
    "cancel": JobCancelView,
    "retry": JobRetryView,
}


class JobInspectView(ApiView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="jobs_inspect",
        responses={200: InspectOut},
        summary="Job, checkpoints, latest events, chain status",
    )
    def get(self, request: Request, job_id: str) -> Response:
        return Response(InspectOut(services.job_inspect(actor=self.actor, job_id=job_id)).data)


class JobVerifyChainView(ApiView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="jobs_verify_chain",
        responses={200: ChainOut},
        summary="Recompute the journal's hash chain (ok false names the first bad revision)",
    )
    def get(self, request: Request, job_id: str) -> Response:
        report = services.job_verify_chain(actor=self.actor, job_id=job_id)
        return Response(
            ChainOut({"ok": report.ok, "job_id": job_id, "chain": report.as_dict()}).data
        )


# --- stats and health -----------------------------------------------------------------------------


class StatsView(ApiView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="stats",
        responses={200: OpenApiTypes.OBJECT},
        summary="Counters: jobs by outcome, step attempts, queue depth, recent reason codes",
    )
    def get(self, request: Request) -> Response:
        return Response(job_stats(actor=self.actor))


class HealthOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded", "down"])
    database = serializers.DictField(child=serializers.JSONField())
    worker = serializers.DictField(child=serializers.JSONField())
    at = serializers.CharField()


def worker_last_seen() -> dict[str, Any]:
    """When a django-q2 worker was last seen: the engine's sweep beat (written by a worker
    every SWEEP_SECONDS, jobs.engine.sweep.sweep_run) or django-q2's own cluster stats."""
    import time

    from django.conf import settings
    from django.core.cache import cache

    gait: dict[str, Any] = settings.GAIT
    period = float(gait.get("SWEEP_SECONDS", 2.0))
    stale_after = 3 * period + 5
    beat: float | None = None
    try:
        raw = cache.get(SWEEP_BEAT_KEY)
        beat = float(raw) if raw is not None else None
    except Exception:
        beat = None
    clusters = 0
    try:
        from django_q.brokers import get_broker
        from django_q.status import Stat

        clusters = len(Stat.get_all(broker=get_broker()))
    except Exception:
        clusters = 0
    age = None if beat is None else max(0.0, time.time() - beat)
    seen = clusters > 0 or (age is not None and age <= stale_after)
    return {
        "seen_recently": seen,
        "last_beat_age_seconds": None if age is None else round(age, 3),
        "clusters": clusters,
        "stale_after_seconds": stale_after,
    }


class HealthView(ApiView):
    """No authentication: for load balancers and ``make run``. 200 when the database answers
    (``degraded`` if no worker was seen recently), 503 when it does not."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    required_scopes: dict[str, str | None] = {}

    @extend_schema(
        operation_id="health",
        responses={200: HealthOut, 503: HealthOut},
        auth=[],
        summary="Database and worker health",
    )
    def get(self, request: Request) -> Response:
        started = timezone.now()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            db = {"ok": True, "vendor": connection.vendor}
        except Exception as exc:
            db = {"ok": False, "error": type(exc).__name__}
        worker = worker_last_seen() if db["ok"] else {"seen_recently": False}
        status = "down" if not db["ok"] else ("ok" if worker["seen_recently"] else "degraded")
        db["latency_ms"] = round((timezone.now() - started) / timedelta(milliseconds=1), 3)
        body = {"status": status, "database": db, "worker": worker, "at": iso_utc(timezone.now())}
        return Response(HealthOut(body).data, status=200 if db["ok"] else 503)
