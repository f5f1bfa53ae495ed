"""Policies (versioned), identities and revocations, approval requests and their decisions."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Policy(models.Model):
    """A named policy. Its content lives in immutable ``PolicyVersion`` rows; ``current`` is the
    version new jobs bind to and resumes re-evaluate against."""

    name = models.CharField(max_length=128, unique=True)
    description = models.CharField(max_length=512, blank=True, default="")
    current = models.ForeignKey(
        "PolicyVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "policies"
        permissions = [("manage_policy", "Can manage policies, identities and keys")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_file_copy(self) -> bool:
        """Stored by the CLI for ``--policy FILE`` (``file:<name>@<digest12>``), not authored."""
        return self.name.startswith("file:")  # approvals.services.FILE_POLICY_PREFIX


class PolicyVersion(models.Model):
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    source = models.TextField()
    normalized = models.JSONField()
    digest = models.CharField(max_length=64, db_index=True)
    author = models.CharField(max_length=256, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["policy", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["policy", "version"], name="policyversion_unique_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.policy.name} v{self.version} ({self.digest[:12]})"


class Identity(models.Model):
    name = models.CharField(max_length=256, unique=True)
    description = models.CharField(max_length=512, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "identities"

    def __str__(self) -> str:
        return self.name


class IdentityPolicy(models.Model):
    """An admin's assignment of a policy to an agent identity (docs/security.md).

    Every job of ``identity`` is bound to ``policy``'s current version whatever its submit asks
    for; the identity may ask instead for one of ``may_request`` (stricter policies the admin
    allows it to choose), never for another policy or for none. Identities without a row get
    the deployment default (``GAIT_DEFAULT_POLICY``)."""

    identity = models.CharField(max_length=256, unique=True)
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="identity_bindings")
    may_request = models.ManyToManyField(
        Policy,
        blank=True,
        related_name="requestable_by",
        help_text="stricter policies this identity may ask for instead of the assigned one",
    )
    assigned_by = models.CharField(max_length=256, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["identity"]
        verbose_name = "identity policy"
        verbose_name_plural = "identity policies"

    def __str__(self) -> str:
        return f"{self.identity} → {self.policy.name}"


class RevokedIdentity(models.Model):
    identity = models.CharField(max_length=256, unique=True)
    reason = models.CharField(max_length=512, blank=True, default="")
    revoked_by = models.CharField(max_length=256, blank=True, default="")
    revoked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["identity"]
        verbose_name_plural = "revoked identities"

    def __str__(self) -> str:
        return self.identity


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class ExpiryFallback(models.TextChoices):
    REJECT = "reject"
    ESCALATE = "escalate"


class ApprovalRequest(models.Model):
    request_id = models.CharField(max_length=64, unique=True)
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="approval_requests")
    step_index = models.IntegerField(null=True, blank=True)
    step_name = models.CharField(max_length=128, blank=True, default="")
    checkpoint_id = models.CharField(max_length=16, blank=True, default="")
    summary = models.CharField(max_length=512, blank=True, default="")
    tool_name = models.CharField(max_length=256, blank=True, default="")
    intent = models.JSONField(default=dict, blank=True)
    gate_result = models.JSONField(default=dict, blank=True)
    required_approvals = models.PositiveIntegerField(default=1)
    distinct_approvers = models.BooleanField(default=True)
    forbid_submitter = models.BooleanField(default=True)
    status = models.CharField(
        max_length=16, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    on_expiry = models.CharField(
        max_length=16, choices=ExpiryFallback.choices, default=ExpiryFallback.REJECT
    )
    escalated = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("decide_approval", "Can approve or reject paused work")]
        indexes = [
            # reviewers' queue (approvals.selectors.approval_pending_list) and the expiry sweep
            models.Index(
                fields=["expires_at"], name="approval_pending_expiry", condition=Q(status="pending")
            ),
            models.Index(fields=["status", "-created_at"], name="approval_status_created"),
        ]

    def __str__(self) -> str:
        return self.request_id

    @property
    def approvals_count(self) -> int:
        return sum(1 for d in self.decisions.all() if d.decision == DecisionKind.APPROVE)


class DecisionKind(models.TextChoices):
    APPROVE = "approve"
    REJECT = "reject"


class Decision(models.Model):
    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="decisions")
    actor = models.CharField(max_length=256)
    # the agent identity behind the actor (API key), so distinct-approver checks see one person
    identity = models.CharField(max_length=256, blank=True, default="")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    decision = models.CharField(max_length=8, choices=DecisionKind.choices)
    reason = models.CharField(max_length=1024, blank=True, default="")
    decided_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "decided_at"]
        constraints = [
            models.UniqueConstraint(fields=["request", "actor"], name="decision_one_per_actor"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id}:{self.actor}:{self.decision}"
