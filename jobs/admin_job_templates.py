"""Django admin for job templates (docs/recurring.md): admins manage templates here; fires are read-only.

The form validates with the same parsers as the services (cron, timezone, spec, labels), so a
bad template is refused with the same reason codes; saving reschedules ``next_fire_at`` the way
``template_update`` does. Imported by jobs/apps.py (jobs/admin.py is the read-only jobs admin).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest

from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.errors import GaitError
from gaitweb.lib.parsing import json_depth_check
from jobs import recurring
from jobs.models import JobTemplate, TemplateFire


def _check(fn: Any, value: Any) -> Any:
    try:
        return fn(value)
    except GaitError as exc:
        raise forms.ValidationError(f"{exc.message} ({exc.code})", code=exc.code) from None


class BoundedJSONField(forms.JSONField):
    """Django's JSON form field parses with ``json.loads``, which recurses into a
    ``RecursionError`` (a 500) on deeply nested text: check the nesting first
    (``json_too_deep``)."""

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and value:
            _check(json_depth_check, value)
        return super().to_python(value)

    def bound_data(self, data: Any, initial: Any) -> Any:
        # the form shown again with its error parses the text once more: show it as typed
        if isinstance(data, str) and data:
            try:
                json_depth_check(data)
            except GaitError:
                return InvalidJSONInput(data)
        return super().bound_data(data, initial)


class JobTemplateForm(forms.ModelForm):
    class Meta:
        model = JobTemplate
        fields = ["template_id", *recurring.UPDATABLE]
        field_classes = {"spec": BoundedJSONField, "labels": BoundedJSONField}

    def clean_template_id(self) -> str:
        return _check(recurring.template_id_check, self.cleaned_data["template_id"])

    def clean_cron(self) -> str:
        return _check(recurring.cron_parse, self.cleaned_data.get("cron") or "")

    def clean_timezone(self) -> str:
        return _check(recurring.timezone_parse, self.cleaned_data["timezone"]).key

    def clean_spec(self) -> Any:
        return _check(recurring._spec, self.cleaned_data.get("spec"))

    def clean_labels(self) -> Any:
        return _check(recurring._labels, self.cleaned_data.get("labels"))


FIRE_FIELDS = ["slot", "trigger", "status", "reason_code", "missed_slots", "job", "lateness_ms"]


class TemplateFireInline(admin.TabularInline):
    model = TemplateFire
    fk_name = "template"
    fields = tuple(FIRE_FIELDS)
    readonly_fields = FIRE_FIELDS
    ordering = ["-fired_at", "-id"]
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[TemplateFire]:
        return super().get_queryset(request).select_related("job")


@admin.register(JobTemplate)
class JobTemplateAdmin(admin.ModelAdmin):
    form = JobTemplateForm
    list_display = [
        "template_id",
        "name",
        "cron",
        "timezone",
        "enabled",
        "next_fire_at",
        "last_fire_at",
        "run_count",
    ]
    list_filter = ["enabled", "continuity", "overlap"]
    search_fields = ["template_id", "name", "identity"]
    readonly_fields = [
        "next_fire_at",
        "last_fire_at",
        "last_job",
        "run_count",
        "continuity_handle",
        "created_by",
        "created_at",
        "updated_at",
    ]
    inlines = [TemplateFireInline]
    actions = ["run_now", "enable", "disable"]

    # gaitweb's admin role (the ``admin`` scope) manages templates, whether or not the group
    # also carries Django's per-model permissions for them
    @staticmethod
    def _is_gait_admin(request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and user.is_staff) and Actor.from_user(user).can(Scope.ADMIN)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_gait_admin(request) or super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._is_gait_admin(request) or super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_gait_admin(request) or super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_gait_admin(request) or super().has_delete_permission(request, obj)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._is_gait_admin(request) or super().has_module_permission(request)

    def save_model(self, request: HttpRequest, obj: JobTemplate, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user.get_username()[:256]
            obj.continuity_handle = recurring.continuity_handle_new()
        if not change or recurring.RESCHEDULE_FIELDS.intersection(form.changed_data):
            recurring._schedule_next(obj)
            super().save_model(request, obj, form, change)
            recurring._after_schedule_change(obj)
        else:
            super().save_model(request, obj, form, change)

    def _each(
        self, request: HttpRequest, queryset: QuerySet[JobTemplate], fn: Any, done: str
    ) -> None:
        actor = Actor.from_user(request.user)
        for template in queryset:
            try:
                fn(actor=actor, template_id=template.template_id)
            except GaitError as exc:
                self.message_user(
                    request, f"{template.template_id}: {exc.message} ({exc.code})", messages.ERROR
                )
            else:
                self.message_user(request, f"{template.template_id}: {done}")

    @admin.action(description="Run now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[JobTemplate]) -> None:
        self._each(request, queryset, recurring.template_run_now, "run started")

    @admin.action(description="Enable schedule", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[JobTemplate]) -> None:
        self._each(request, queryset, recurring.template_enable, "enabled")

    @admin.action(description="Disable schedule", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[JobTemplate]) -> None:
        self._each(request, queryset, recurring.template_disable, "disabled")
