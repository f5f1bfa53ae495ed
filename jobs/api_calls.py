"""Durable calls of external agents over HTTP (jobs.durable_api; the client is
``gaitclient.GaitClient.run``). Thin views: parse strictly, call one service, render."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from gaitweb.api import StrictInput
from gaitweb.api_views import ApiView
from gaitweb.lib.actors import Scope
from jobs import durable_api


class CallBeginIn(StrictInput):
    position = serializers.IntegerField(min_value=1, max_value=durable_api.MAX_POSITION)
    name = serializers.CharField(max_length=128)
    kind = serializers.ChoiceField(choices=list(durable_api.EXTERNAL_KINDS))
    args = serializers.JSONField(required=False, default=dict)
    targets = serializers.JSONField(required=False, default=list)
    idempotent = serializers.BooleanField(required=False, default=False)


class CallFinishIn(StrictInput):
    attempt = serializers.IntegerField(min_value=1, max_value=10_000)
    status = serializers.ChoiceField(choices=["succeeded", "failed"])
    output = serializers.JSONField(required=False, allow_null=True, default=None)
    error = serializers.JSONField(required=False, allow_null=True, default=None)


class JobCallsView(ApiView):
    required_scopes = {"GET": Scope.READ, "POST": Scope.SUBMIT}

    @extend_schema(
        operation_id="jobs_calls_list",
        responses={200: OpenApiTypes.OBJECT},
        summary="The recorded durable calls of an agent-driven job",
    )
    def get(self, request: Request, job_id: str) -> Response:
        return Response({"calls": durable_api.call_list(actor=self.actor, job_id=job_id)})

    @extend_schema(
        operation_id="jobs_calls_begin",
        request=CallBeginIn,
        responses={200: OpenApiTypes.OBJECT},
        summary="Begin a durable call: replay it, raise it again, wait, or run it (gated)",
    )
    def post(self, request: Request, job_id: str) -> Response:
        data: dict[str, Any] = self.input(CallBeginIn)
        return Response(durable_api.call_begin(actor=self.actor, job_id=job_id, **data))


class JobCallView(ApiView):
    required_scopes = {"POST": Scope.SUBMIT}

    @extend_schema(
        operation_id="jobs_calls_finish",
        request=CallFinishIn,
        responses={200: OpenApiTypes.OBJECT},
        summary="Record how a begun call ended",
    )
    def post(self, request: Request, job_id: str, position: int) -> Response:
        data: dict[str, Any] = self.input(CallFinishIn)
        return Response(
            durable_api.call_finish(actor=self.actor, job_id=job_id, position=position, **data)
        )
