"""Evidence packs built for jobs, and the Ed25519 signing keys' public halves."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class SigningKeyStatus(models.TextChoices):
    ACTIVE = "active"
    RETIRED = "retired"


class SigningKey(models.Model):
    """The public half of a signing key. The private key lives in a file under the data dir
    (mode 0600) or an environment variable; ``private_location`` says where, never what."""

    key_id = models.CharField(max_length=64, unique=True)
    public_key = models.CharField(max_length=64)  # hex of the raw 32-byte Ed25519 public key
    private_location = models.CharField(max_length=512, blank=True, default="")
    status = models.CharField(
        max_length=8, choices=SigningKeyStatus.choices, default=SigningKeyStatus.ACTIVE
    )
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # packs.keys.key_init / key_rotate: at most one key signs new packs
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="active"), name="signingkey_one_active"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key_id[:16]} ({self.status})"


class Pack(models.Model):
    pack_id = models.CharField(max_length=64)
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="packs")
    job_revision = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    key_id = models.CharField(max_length=64, blank=True, default="")
    data = models.BinaryField()
    created_by = models.CharField(max_length=256, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["pack_id"], name="pack_pack_id")]
        constraints = [
            # packs.services.pack_build: rebuilding an unchanged job returns the stored pack
            models.UniqueConstraint(fields=["job", "sha256"], name="pack_unique_job_sha256"),
        ]

    def __str__(self) -> str:
        return self.pack_id
