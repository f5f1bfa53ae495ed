"""API keys and submit idempotency records (the REST API's own state, docs/api.md).

An API key is ``gw_<prefix>_<secret>``. Only the prefix (to find the row) and the sha256 of the
whole key (to check it, in constant time) are stored; the key itself is shown once at creation.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

API_KEY_PREFIX_LEN = 12


class ApiKey(models.Model):
    name = models.CharField(max_length=128, blank=True, default="")
    # public, unique, lower-case hex: looked up on every request (gaitweb.apikeys.apikey_authenticate)
    prefix = models.CharField(max_length=API_KEY_PREFIX_LEN, unique=True)
    # sha256 hex of the whole key. The secret part is 256 random bits, so a fast hash is as
    # strong as a slow one here, and keeps authentication off the request's critical path.
    secret_hash = models.CharField(max_length=64)
    identity = models.CharField(max_length=256)
    scopes = models.JSONField(default=list)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="optional: the key then never has more scopes than this user",
    )
    created_by = models.CharField(max_length=256, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=256, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def __str__(self) -> str:
        return f"{self.display_prefix} ({self.identity})"

    @property
    def display_prefix(self) -> str:
        return f"gw_{self.prefix}_…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyRecord(models.Model):
    """One submit made with an ``Idempotency-Key`` header or a client-chosen ``job_id``.

    ``owner`` scopes header keys to the caller (two agents may pick the same key); records for
    a client ``job_id`` have an empty owner, since job ids are global. ``request_digest`` is the
    sha256 of the canonical submit body: a retry with the same body returns ``job``, a different
    body is refused (409)."""

    owner = models.CharField(max_length=300, blank=True, default="")
    key = models.CharField(max_length=300)
    request_digest = models.CharField(max_length=64)
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # gaitweb.idempotency.job_submit_idempotent: one job per (owner, key), first writer wins
            models.UniqueConstraint(fields=["owner", "key"], name="idempotency_unique_owner_key"),
            models.CheckConstraint(condition=~Q(key=""), name="idempotency_key_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.owner}:{self.key}"


class ThrottleCounter(models.Model):
    """The API's request counter per client (gaitweb.api.ApiRateThrottle) when the shared
    cache is the database cache: one row per client, bumped by a single atomic upsert. (The
    database cache cannot increment atomically, and a get + set costs six statements.)"""

    ident = models.CharField(max_length=200, primary_key=True)
    window_start = models.BigIntegerField()
    count = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.ident}: {self.count}"
