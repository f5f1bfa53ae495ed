"""Django admin for policies (validated YAML, digest, versions, "try an intent"), identities,
the policy bound to each identity, revocations, and a read-only view of approval requests.

Writes go through the services (policy_save, identity_policy_set, identity_revoke), so the
admin enforces the same validation and permissions as the CLI and the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from approvals.forms import PolicyAdminForm, TryIntentForm
from approvals.gate import gate_evaluate
from approvals.identities import (
    deployment_gate_status,
    identity_policy_clear,
    identity_policy_set,
    identity_revoke,
)
from approvals.models import (
    ApprovalRequest,
    Decision,
    Identity,
    IdentityPolicy,
    Policy,
    PolicyVersion,
    RevokedIdentity,
)
from approvals.policies import FILE_POLICY_PREFIX, policy_save
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.errors import GaitError


class PolicyVersionInline(admin.TabularInline):
    model = PolicyVersion
    fk_name = "policy"
    fields = ("version", "digest", "author", "created_at")
    readonly_fields = ("version", "digest", "author", "created_at")
    extra = 0
    can_delete = False
    ordering = ["-version"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PolicyOriginFilter(admin.SimpleListFilter):
    """Authored policies by default; the copies the CLI stores for ``--policy FILE``
    (``file:<name>@<digest12>``, one per distinct file content) on request."""

    title = "origin"
    parameter_name = "origin"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("files", "files stored by the CLI"), ("all", "all")]

    def choices(self, changelist: Any) -> Any:
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "authored",
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        prefix = FILE_POLICY_PREFIX
        if self.value() == "files":
            return queryset.filter(name__startswith=prefix)
        if self.value() == "all":
            return queryset
        return queryset.exclude(name__startswith=prefix)


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    form = PolicyAdminForm
    inlines = [PolicyVersionInline]
    list_display = ["name", "origin", "current_version", "current_digest", "updated_at"]
    list_filter = [PolicyOriginFilter]
    search_fields = ["name", "description"]
    list_select_related = ["current"]  # current_version / current_digest read it per row
    readonly_fields = ["current_version", "current_digest", "try_link"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        base = ("name", "description", "source")
        return base + (("current_version", "current_digest", "try_link") if obj else ())

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # a rename would be a different policy: jobs refer to policies by name
        return (["name"] if obj else []) + self.readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and Actor.from_user(request.user).can(
            Scope.ADMIN
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and Actor.from_user(request.user).can(
            Scope.ADMIN
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # old digests must stay resolvable forever

    @admin.display(description="origin")
    def origin(self, obj: Policy) -> str:
        return "file (CLI)" if obj.is_file_copy else "authored"

    @admin.display(description="version")
    def current_version(self, obj: Policy) -> Any:
        return obj.current.version if obj.current else "-"

    @admin.display(description="digest")
    def current_digest(self, obj: Policy) -> str:
        return obj.current.digest if obj.current else "-"

    @admin.display(description="try an intent")
    def try_link(self, obj: Policy) -> str:
        url = reverse("admin:approvals_policy_try", args=[obj.pk])
        return format_html('<a href="{}">Evaluate an intent against this policy</a>', url)

    def save_model(
        self, request: HttpRequest, obj: Policy, form: PolicyAdminForm, change: bool
    ) -> None:
        version = policy_save(
            actor=Actor.from_user(request.user),
            name=obj.name,
            source=form.cleaned_data["source"],
            description=form.cleaned_data.get("description", ""),
        )
        obj.pk = version.policy_id
        obj.refresh_from_db()
        messages.info(
            request, f"{obj.name} is at version {version.version}, digest {version.digest}"
        )

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return self.inlines if obj else []

    def get_urls(self) -> list[Any]:
        extra = [
            path(
                "<path:object_id>/try/",
                self.admin_site.admin_view(self.try_intent_view),
                name="approvals_policy_try",
            ),
        ]
        return extra + super().get_urls()

    def try_intent_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        policy = get_object_or_404(Policy.objects.select_related("current"), pk=object_id)
        if not self.has_view_permission(request, policy):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        form = TryIntentForm(request.POST or None)
        result = None
        error = ""
        if request.method == "POST" and form.is_valid():
            if policy.current is None:
                error = "this policy has no version yet"
            else:
                try:
                    result = gate_evaluate(
                        intent=form.cleaned_data["intent"], policy=policy.current
                    ).as_dict()
                except GaitError as exc:  # pragma: no cover - the form already validated the intent
                    error = exc.message
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": policy,
            "title": f"Try an intent against {policy.name}",
            "form": form,
            "result": result,
            "error": error,
            "version": policy.current,
        }
        return TemplateResponse(request, "admin/approvals/policy/try_intent.html", context)


@admin.register(Identity)
class IdentityAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "revoked", "created_at"]
    search_fields = ["name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Identity]:
        # one EXISTS in the list query rather than one query per row
        revoked = RevokedIdentity.objects.filter(identity=OuterRef("name"))
        return super().get_queryset(request).annotate(is_revoked=Exists(revoked))

    @admin.display(boolean=True)
    def revoked(self, obj: Identity) -> bool:
        return bool(obj.is_revoked)  # type: ignore[attr-defined]


@admin.register(IdentityPolicy)
class IdentityPolicyAdmin(admin.ModelAdmin):
    """Bind a policy to an identity: its jobs are bound to that policy whatever they ask for,
    or to one of ``may_request`` if they ask for it (docs/security.md)."""

    list_display = ["identity", "policy", "requestable", "assigned_by", "updated_at"]
    search_fields = ["identity", "policy__name"]
    list_select_related = ["policy"]
    fields = ["identity", "policy", "may_request", "assigned_by", "updated_at"]
    readonly_fields = ["assigned_by", "updated_at"]
    filter_horizontal = ["may_request"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[IdentityPolicy]:
        return super().get_queryset(request).prefetch_related("may_request")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return (["identity"] if obj else []) + self.readonly_fields

    def _admin(self, request: HttpRequest) -> bool:
        return Actor.from_user(request.user).can(Scope.ADMIN)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and self._admin(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and self._admin(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and self._admin(request)

    @admin.display(description="may also ask for")
    def requestable(self, obj: IdentityPolicy) -> str:
        return ", ".join(sorted(p.name for p in obj.may_request.all())) or "-"

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        gate = deployment_gate_status()
        if gate["warning"]:
            messages.warning(request, gate["warning"])
        else:
            messages.info(
                request, f"Deployment default (GAIT_DEFAULT_POLICY): {gate['default_policy']}"
            )
        return super().changelist_view(request, extra_context)

    def save_model(
        self, request: HttpRequest, obj: IdentityPolicy, form: Any, change: bool
    ) -> None:
        row = identity_policy_set(
            actor=Actor.from_user(request.user),
            identity=obj.identity,
            policy=form.cleaned_data["policy"].name,
            may_request=[p.name for p in form.cleaned_data.get("may_request") or []],
        )
        obj.pk = row.pk
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # identity_policy_set wrote may_request (without the assigned policy itself)

    def delete_model(self, request: HttpRequest, obj: IdentityPolicy) -> None:
        identity_policy_clear(actor=Actor.from_user(request.user), identity=obj.identity)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[IdentityPolicy]) -> None:
        actor = Actor.from_user(request.user)
        for identity in queryset.values_list("identity", flat=True):
            identity_policy_clear(actor=actor, identity=identity)


@admin.register(RevokedIdentity)
class RevokedIdentityAdmin(admin.ModelAdmin):
    list_display = ["identity", "reason", "revoked_by", "revoked_at"]
    search_fields = ["identity", "reason"]
    readonly_fields = ["revoked_by", "revoked_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return (["identity"] if obj else []) + self.readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and Actor.from_user(request.user).can(
            Scope.ADMIN
        )

    def save_model(
        self, request: HttpRequest, obj: RevokedIdentity, form: Any, change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        revoked = identity_revoke(
            actor=Actor.from_user(request.user), identity=obj.identity, reason=obj.reason
        )
        obj.pk = revoked.pk
        obj.refresh_from_db()


class DecisionInline(admin.TabularInline):
    model = Decision
    fields = ("actor", "identity", "decision", "reason", "decided_at")
    readonly_fields = ("actor", "identity", "decision", "reason", "decided_at")
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    """Read-only: requests are decided by reviewers in the dashboard / API, never edited."""

    inlines = [DecisionInline]
    list_display = [
        "request_id",
        "job",
        "status",
        "required_approvals",
        "tool_name",
        "expires_at",
        "escalated",
        "created_at",
    ]
    list_filter = ["status", "escalated", "on_expiry"]
    search_fields = ["request_id", "job__job_id", "tool_name", "summary"]
    list_select_related = ["job"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
