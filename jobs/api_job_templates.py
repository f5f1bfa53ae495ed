"""REST API for job templates and recurring jobs (docs/recurring.md), mounted under /api/v1/templates.

Thin DRF views over jobs.recurring, following gaitweb/api.py's conventions: input serializers,
one service call, output serializers, refusals as the services' ``GaitError`` (one envelope),
cursor pagination for the fires feed.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from approvals.policies import policy_resolve
from gaitweb.api import KeysetPagination, StrictInput, page_serializer
from gaitweb.api_views import ApiView
from gaitweb.lib.actors import Scope
from jobs import recurring
from jobs.api import JobOut, PageQuery, asserted_identity
from jobs.models import (
    FireStatus,
    FireTrigger,
    TemplateCatchUp,
    TemplateContinuity,
    TemplateFire,
    TemplateOverlap,
)
from jobs.selectors import job_snapshot, template_fires, template_get, template_list

READ, SUBMIT, CONTROL = Scope.READ, Scope.SUBMIT, Scope.CONTROL


# --- serializers -------------------------------------------------------------------------------


class FireOut(serializers.Serializer):
    template_id = serializers.CharField()
    slot = serializers.CharField(
        help_text="the schedule slot (UTC); the request time for manual runs"
    )
    trigger = serializers.ChoiceField(choices=FireTrigger.choices)
    status = serializers.ChoiceField(choices=FireStatus.choices)
    reason_code = serializers.CharField(allow_blank=True)
    missed_slots = serializers.IntegerField(help_text="earlier slots this fire covered or skipped")
    job_id = serializers.CharField(allow_null=True)
    job_status = serializers.CharField(allow_null=True)
    previous_job_id = serializers.CharField(allow_null=True)
    fired_at = serializers.CharField()
    lateness_ms = serializers.IntegerField()
    actor = serializers.CharField(allow_blank=True)


class TemplateOut(serializers.Serializer):
    template_id = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    spec = serializers.JSONField()
    identity = serializers.CharField(allow_blank=True)
    policy = serializers.CharField(allow_null=True)
    labels = serializers.DictField(child=serializers.CharField(allow_blank=True))
    cron = serializers.CharField(allow_blank=True)
    timezone = serializers.CharField()
    continuity = serializers.ChoiceField(choices=TemplateContinuity.choices)
    overlap = serializers.ChoiceField(choices=TemplateOverlap.choices)
    catch_up = serializers.ChoiceField(choices=TemplateCatchUp.choices)
    enabled = serializers.BooleanField()
    next_fire_at = serializers.CharField(allow_null=True)
    last_fire_at = serializers.CharField(allow_null=True)
    last_job_id = serializers.CharField(allow_null=True)
    run_count = serializers.IntegerField()
    created_by = serializers.CharField(allow_blank=True)
    created_at = serializers.CharField()
    updated_at = serializers.CharField()
    fires = FireOut(many=True, required=False)


class RunOut(serializers.Serializer):
    fire = FireOut()
    job = JobOut(allow_null=True)


# passed to template_create as they are (timezone, identity and policy are mapped first)
_CREATE_FIELDS = (
    "name",
    "template_id",
    "description",
    "spec",
    "labels",
    "cron",
    "enabled",
    "continuity",
    "overlap",
    "catch_up",
)


class TemplatePatchIn(StrictInput):
    # choices are checked by the service (stable reason codes), not here
    name = serializers.CharField(required=False, max_length=400)
    description = serializers.CharField(required=False, allow_blank=True, max_length=4096)
    spec = serializers.DictField(required=False, child=serializers.JSONField())
    identity = serializers.CharField(required=False, allow_blank=True, max_length=256)
    policy = serializers.CharField(
        required=False, allow_blank=True, max_length=200, help_text="stored policy NAME"
    )
    labels = serializers.DictField(
        required=False, child=serializers.CharField(allow_blank=True, max_length=256)
    )
    cron = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text='five fields, a macro such as "@daily", or six fields with seconds last; '
        "empty: no schedule",
    )
    timezone = serializers.CharField(required=False, max_length=64, help_text="IANA name")
    continuity = serializers.CharField(required=False, help_text="fresh | resume")
    overlap = serializers.CharField(required=False, help_text="skip | queue")
    catch_up = serializers.CharField(required=False, help_text="once | skip")
    enabled = serializers.BooleanField(required=False)


class TemplateCreateIn(TemplatePatchIn):
    name = serializers.CharField(max_length=400)
    template_id = serializers.CharField(
        required=False, max_length=64, help_text="default: the name, slugified"
    )


class RunIn(StrictInput):
    job_id = serializers.CharField(required=False, max_length=128)
    labels = serializers.DictField(
        required=False, child=serializers.CharField(allow_blank=True, max_length=256)
    )


TemplatePage = page_serializer(TemplateOut, "TemplatePage")
FirePage = page_serializer(FireOut, "FirePage")
_fires_page = KeysetPagination(("-fired_at", "-id"), datetime_fields=("fired_at",))
_templates_page = KeysetPagination(("id",))


def _policy_ref(value: Any) -> Any:
    """The API names stored policies only: it never reads a file on the server."""
    if not value:
        return None

    return policy_resolve(ref=value).policy


def _run_response(fire: TemplateFire, status: int) -> Response:
    fire = TemplateFire.objects.select_related("template", "job", "previous_job").get(pk=fire.pk)
    body = {
        "fire": recurring.fire_snapshot(fire),
        "job": job_snapshot(fire.job) if fire.job else None,
    }
    return Response(RunOut(body).data, status=status)


# --- views -------------------------------------------------------------------------------------


class TemplatesView(ApiView):
    required_scopes = {"GET": READ, "POST": CONTROL}

    @extend_schema(
        operation_id="templates_list",
        parameters=[PageQuery],
        responses={200: TemplatePage},
        summary="List job templates (cursor pagination)",
    )
    def get(self, request: Request) -> Response:
        self.query(PageQuery)
        qs = template_list(actor=self.actor)
        rows, next_cursor = _templates_page.paginate(request, qs)
        data = TemplateOut([recurring.template_snapshot(t) for t in rows], many=True).data
        return Response(_templates_page.response(request, data, next_cursor))

    @extend_schema(
        operation_id="templates_create",
        request=TemplateCreateIn,
        responses={201: TemplateOut},
        summary="Create a job template, optionally recurring (cron)",
    )
    def post(self, request: Request) -> Response:
        data = self.input(TemplateCreateIn)
        actor = self.actor
        kwargs: dict[str, Any] = {k: data[k] for k in _CREATE_FIELDS if k in data}
        if "timezone" in data:
            kwargs["timezone_name"] = data["timezone"]
        kwargs["identity"] = asserted_identity(actor, data.get("identity")) or ""
        kwargs["policy"] = _policy_ref(data.get("policy"))
        template = recurring.template_create(actor=actor, **kwargs)
        return Response(TemplateOut(recurring.template_snapshot(template)).data, status=201)


class TemplateDetailView(ApiView):
    required_scopes = {"GET": READ, "PATCH": CONTROL}

    @extend_schema(
        operation_id="templates_detail",
        responses={200: TemplateOut},
        summary="A template with its next fire time and recent fires",
    )
    def get(self, request: Request, template_id: str) -> Response:
        template = template_get(actor=self.actor, template_id=template_id)
        return Response(TemplateOut(recurring.template_snapshot(template, fires=20)).data)

    @extend_schema(
        operation_id="templates_update",
        request=TemplatePatchIn,
        responses={200: TemplateOut},
        summary="Change a template (a new cron, timezone or enabled flag reschedules)",
    )
    def patch(self, request: Request, template_id: str) -> Response:
        data = self.input(TemplatePatchIn)
        actor = self.actor
        if "identity" in data:
            data["identity"] = asserted_identity(actor, data["identity"]) or ""
        if "policy" in data:
            data["policy"] = _policy_ref(data["policy"])
        template = recurring.template_update(actor=actor, template_id=template_id, **data)
        return Response(TemplateOut(recurring.template_snapshot(template)).data)


class TemplateRunView(ApiView):
    required_scopes = {"POST": SUBMIT}

    @extend_schema(
        operation_id="templates_run",
        request=RunIn,
        responses={201: RunOut, 202: RunOut},
        summary="Run a template now (202 when queued behind an active run)",
    )
    def post(self, request: Request, template_id: str) -> Response:
        data = self.input(RunIn)
        fire = recurring.template_run_now(
            actor=self.actor,
            template_id=template_id,
            job_id=data.get("job_id"),
            labels=data.get("labels"),
        )
        return _run_response(fire, 202 if fire.status == FireStatus.PENDING else 201)


class _ToggleView(ApiView):
    required_scopes = {"POST": CONTROL}
    enabled = True

    def post(self, request: Request, template_id: str) -> Response:
        self.input(None)
        fn = recurring.template_enable if self.enabled else recurring.template_disable
        template = fn(actor=self.actor, template_id=template_id)
        return Response(TemplateOut(recurring.template_snapshot(template)).data)


@extend_schema_view(
    post=extend_schema(
        operation_id="templates_enable",
        request=None,
        responses={200: TemplateOut},
        summary="Enable a template: it fires from the next slot after now",
    )
)
class TemplateEnableView(_ToggleView):
    enabled = True


@extend_schema_view(
    post=extend_schema(
        operation_id="templates_disable",
        request=None,
        responses={200: TemplateOut},
        summary="Disable a template: no more fires (runs in flight continue)",
    )
)
class TemplateDisableView(_ToggleView):
    enabled = False


class TemplateFiresView(ApiView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="templates_fires",
        parameters=[PageQuery],
        responses={200: FirePage},
        summary="A template's fires (past runs, skips and refusals), newest first",
    )
    def get(self, request: Request, template_id: str) -> Response:
        self.query(PageQuery)
        template = template_get(actor=self.actor, template_id=template_id)
        qs = template_fires(template=template, limit=None)
        rows, next_cursor = _fires_page.paginate(request, qs)
        data = FireOut([recurring.fire_snapshot(f) for f in rows], many=True).data
        return Response(_fires_page.response(request, data, next_cursor))


# mounted in gaitweb/api_urls.py, before the catch-all
urlpatterns = [
    path("templates", TemplatesView.as_view(), name="api-templates"),
    path("templates/<str:template_id>", TemplateDetailView.as_view(), name="api-template"),
    path("templates/<str:template_id>/run", TemplateRunView.as_view(), name="api-template-run"),
    path(
        "templates/<str:template_id>/enable",
        TemplateEnableView.as_view(),
        name="api-template-enable",
    ),
    path(
        "templates/<str:template_id>/disable",
        TemplateDisableView.as_view(),
        name="api-template-disable",
    ),
    path(
        "templates/<str:template_id>/fires", TemplateFiresView.as_view(), name="api-template-fires"
    ),
]
