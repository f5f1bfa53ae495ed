"""The base API view and the OpenAPI schema class (plumbing in gaitweb/api.py)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import exceptions, serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gaitweb.api import (
    ApiKeyAuthentication,
    ApiRateThrottle,
    ErrorEnvelopeSerializer,
    ScopePermission,
    StrictInput,
    StrictQuery,
    actor_of,
    json_safe_check,
    unknown_fields_check,
)
from gaitweb.lib.actors import Actor


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "gaitweb.api.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "gw_<prefix>_<secret>",
            "description": "API key created with `gait apikey create` or in Django admin.",
        }


# --- schema ------------------------------------------------------------------------------------

ERROR_STATUSES = {
    "400": "invalid input (reason code in error.code)",
    "401": "missing or invalid credentials",
    "403": "authenticated but lacking the scope, or CSRF failed",
    "404": "no such job / checkpoint / request / pack",
    "409": "conflict: invalid transition, lost race, idempotency key reused",
    "422": "refused by policy or the approval rules",
    "429": "throttled (Retry-After says when to retry)",
}


class GaitAutoSchema(AutoSchema):
    """Every operation documents the error envelope for the statuses it can answer, and is
    described by its own method's or view's docstring, never one inherited from a base class
    (the base view's would otherwise describe every operation)."""

    def get_description(self) -> str:  # type: ignore[override]
        method = getattr(self.view, getattr(self.view, "action", None) or self.method.lower(), None)
        own_view_doc = type(self.view).__dict__.get("__doc__")
        own_method_doc = getattr(method, "__doc__", None)
        for doc in (own_method_doc, own_view_doc):
            if doc:
                return inspect.cleandoc(doc)
        return ""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        ref = self.resolve_serializer(ErrorEnvelopeSerializer, "response").ref
        public = not getattr(self.view, "required_scopes", None)
        for status, description in ERROR_STATUSES.items():
            if public and status in ("401", "403", "409", "422"):
                continue
            operation["responses"].setdefault(
                status,
                {"description": description, "content": {"application/json": {"schema": ref}}},
            )
        operation["responses"].setdefault(
            "405",
            {"description": "method not allowed", "content": {"application/json": {"schema": ref}}},
        )
        operation["responses"].setdefault(
            "415",
            {
                "description": "unsupported media type",
                "content": {"application/json": {"schema": ref}},
            },
        )
        return operation


# --- views ---------------------------------------------------------------------------------------


class ApiView(APIView):
    """Base of every gaitweb API view: the policies above, set explicitly."""

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [ScopePermission]
    throttle_classes = [ApiRateThrottle]
    schema = GaitAutoSchema()
    required_scopes: dict[str, str | None] = {}

    @property
    def actor(self) -> Actor:
        return actor_of(self.request)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        for name, value in kwargs.items():
            json_safe_check(value, name)

    def input(self, serializer_class: type[StrictInput] | None) -> dict[str, Any]:
        """Validate the request body with an input serializer (a ``StrictInput``: unknown
        fields are refused). ``None``: the operation takes no body, so any field is unknown."""
        data = self.request.data
        if serializer_class is None:
            self.body_fields()
            return {}
        if not issubclass(serializer_class, StrictInput) or issubclass(
            serializer_class, StrictQuery
        ):
            raise TypeError(f"{serializer_class.__name__} must be a StrictInput (gaitweb.api)")
        json_safe_check(data if isinstance(data, dict | list) else None)
        s = serializer_class(data=data)
        s.is_valid(raise_exception=True)
        return dict(s.validated_data)

    def body_fields(self, *allowed: str) -> None:
        """For a body no input serializer reads (an upload, an operation without a body): only
        the ``allowed`` fields (form fields or multipart files) may be there."""
        data = self.request.data
        if isinstance(data, Mapping):
            unknown_fields_check(data.keys(), allowed)

    def query(self, serializer_class: type[StrictQuery]) -> dict[str, Any]:
        if not issubclass(serializer_class, StrictQuery):
            raise TypeError(f"{serializer_class.__name__} must be a StrictQuery (gaitweb.api)")
        for key, values in self.request.query_params.lists():
            json_safe_check([key, *values], "query")
        s = serializer_class(data=self.request.query_params)
        s.is_valid(raise_exception=True)
        return dict(s.validated_data)

    @staticmethod
    def output(
        serializer_class: type[serializers.Serializer],
        value: Any,
        *,
        status: int = 200,
        many: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return Response(serializer_class(value, many=many).data, status=status, headers=headers)


class NotFoundView(ApiView):
    """Any unknown path under /api/v1/: the error envelope, not Django's HTML 404."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []
    schema = None  # type: ignore[assignment]  # not an operation: left out of the schema

    def _missing(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise exceptions.NotFound(f"no API endpoint at {request.path}")

    get = post = put = patch = delete = head = options = _missing
