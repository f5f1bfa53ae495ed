"""Read-only admin for jobs and their journal (the journal is append-only, so is its admin), and
the allow-lists of what command and http steps may touch."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from jobs.models import (
    AllowedExecutable,
    AllowedHttpHost,
    Checkpoint,
    Job,
    JobEvent,
    StepRun,
)


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class JobEventInline(ReadOnlyMixin, admin.TabularInline):
    model = JobEvent
    fields = ["revision", "type", "reason_code", "actor", "created_at", "hash"]
    readonly_fields = fields
    ordering = ["-revision"]
    extra = 0
    show_change_link = False
    max_num = 0


class CheckpointInline(ReadOnlyMixin, admin.TabularInline):
    model = Checkpoint
    fields = ["checkpoint_id", "type", "summary", "required_action", "actor", "created_at"]
    readonly_fields = fields
    extra = 0


class StepRunInline(ReadOnlyMixin, admin.TabularInline):
    model = StepRun
    fields = ["step_index", "step_name", "attempt", "status", "started_at", "finished_at", "worker"]
    readonly_fields = fields
    extra = 0


@admin.register(Job)
class JobAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "job_id",
        "status",
        "identity",
        "cursor",
        "step_count",
        "revision",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["job_id", "identity"]
    readonly_fields = [f.name for f in Job._meta.fields]
    inlines = [CheckpointInline, StepRunInline, JobEventInline]
    list_select_related = False
    show_full_result_count = False  # COUNT(*) over 100k jobs on every page view is wasted work

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return (
            request.user.is_active
            and request.user.is_staff
            and request.user.has_perm("jobs.view_job")
        )


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["job", "revision", "type", "reason_code", "actor", "created_at"]
    list_filter = ["type"]
    search_fields = ["job__job_id"]
    readonly_fields = [f.name for f in JobEvent._meta.fields]
    list_select_related = ["job"]
    show_full_result_count = False


# --- what steps may touch (docs/security.md): admins manage these lists -----------------------


class _AllowlistAdmin(admin.ModelAdmin):
    readonly_fields = ["created_by", "created_at"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user.get_username()
        super().save_model(request, obj, form, change)


@admin.register(AllowedExecutable)
class AllowedExecutableAdmin(_AllowlistAdmin):
    list_display = ["name", "path", "note", "created_by", "created_at"]
    search_fields = ["name", "path"]
    fields = ["name", "path", "note", "created_by", "created_at"]


@admin.register(AllowedHttpHost)
class AllowedHttpHostAdmin(_AllowlistAdmin):
    list_display = ["host", "port", "note", "created_by", "created_at"]
    search_fields = ["host"]
    fields = ["host", "port", "note", "created_by", "created_at"]
