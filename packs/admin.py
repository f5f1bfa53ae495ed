"""Signing keys and packs in Django admin: read-only. Keys change through `gait keys init|rotate`
(packs.keys), which write the private half to a file that the admin never sees; packs are built
by packs.services.pack_build and are evidence, so nobody edits or deletes them here."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from packs.models import Pack, SigningKey


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SigningKey)
class SigningKeyAdmin(ReadOnlyAdmin):
    list_display = ["key_id", "status", "private_location", "created_at", "retired_at"]
    list_filter = ["status"]
    search_fields = ["key_id"]
    fields = readonly_fields = (
        "key_id",
        "status",
        "public_key",
        "private_location",
        "created_at",
        "retired_at",
    )


@admin.register(Pack)
class PackAdmin(ReadOnlyAdmin):
    list_display = ["pack_id", "job", "job_revision", "size", "key_id", "created_by", "created_at"]
    search_fields = ["pack_id", "job__job_id", "sha256"]
    list_select_related = ["job"]
    fields = readonly_fields = (
        "pack_id",
        "job",
        "job_revision",
        "sha256",
        "size",
        "key_id",
        "created_by",
        "created_at",
        "download",
    )

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).defer("data")  # never load the zips for a list

    @admin.display(description="download")
    def download(self, obj: Pack) -> str:
        url = reverse("packs:download", args=[obj.pack_id])
        return format_html('<a href="{}">pack_{}.zip</a>', url, obj.pack_id)
