"""Django admin for API keys: creating one shows the key once; the list shows prefixes only;
revoking is an action (keys are never edited or deleted, so their use stays attributable)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from gaitweb.apikeys import apikey_create, apikey_revoke
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.errors import GaitError
from gaitweb.models import ApiKey


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in sorted(Scope.ALL)],
        widget=forms.CheckboxSelectMultiple,
        required=True,
    )

    class Meta:
        model = ApiKey
        fields = ["name", "identity", "scopes", "user"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "display_prefix",
        "name",
        "identity",
        "scope_list",
        "user",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "identity"]
    actions = ["revoke_selected"]
    readonly_fields = [
        "display_prefix",
        "name",
        "identity",
        "scopes",
        "user",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
    ]

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ["name", "identity", "scopes", "user"]

    # keys are managed by whoever holds the admin scope (the admin role, superusers), the same
    # rule the service applies; not by Django's per-model permissions
    def _is_key_admin(self, request: HttpRequest) -> bool:
        return Actor.from_user(request.user).can(Scope.ADMIN)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._is_key_admin(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_key_admin(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._is_key_admin(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # the changelist (and its revoke action) needs this; single keys are never edited
        return obj is None and self._is_key_admin(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        # the service draws the prefix and secret; the form's instance is replaced by its row
        try:
            created = apikey_create(
                actor=Actor.from_user(request.user),
                identity=form.cleaned_data["identity"],
                scopes=form.cleaned_data["scopes"],
                name=form.cleaned_data.get("name") or "",
                user=form.cleaned_data.get("user"),
            )
        except GaitError as exc:
            messages.error(request, f"{exc.code}: {exc.message}")
            raise
        obj.pk = created.api_key.pk
        obj.prefix = created.api_key.prefix
        messages.warning(
            request,
            f"API key for {created.api_key.identity}: {created.key} — copy it now, it will not be shown again.",
        )

    @admin.action(description="Revoke selected API keys")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        actor = Actor.from_user(request.user)
        n = 0
        for key in queryset.filter(revoked_at__isnull=True):
            apikey_revoke(actor=actor, prefix=key.prefix)
            n += 1
        messages.success(request, f"revoked {n} API key(s)")
