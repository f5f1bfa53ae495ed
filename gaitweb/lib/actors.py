"""Who is acting: a person (Django user), an agent (API key), or the local operator (CLI).

Services take an ``Actor`` and check scopes themselves, so every entry point (API, dashboard,
CLI, MCP) enforces the same permissions. Selectors take it too: an actor without the
``cross_identity`` scope (or ``admin``) sees and acts on its own identity's jobs, templates,
approvals and packs only (``bound_identity``; docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gaitweb.lib import reasons
from gaitweb.lib.errors import Forbidden, PolicyRefused

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser, AnonymousUser


class Scope:
    SUBMIT = "submit"
    CONTROL = "control"
    APPROVE = "approve"
    READ = "read"
    ADMIN = "admin"
    # lifts the identity bound: see and act on every identity's objects (service accounts, and
    # the dashboard's staff roles); it grants no action by itself
    CROSS_IDENTITY = "cross_identity"
    ALL = frozenset({SUBMIT, CONTROL, APPROVE, READ, ADMIN, CROSS_IDENTITY})


# Django permission (app_label.codename) that grants each scope to a logged-in user.
SCOPE_PERMISSIONS = {
    Scope.SUBMIT: "jobs.submit_job",
    Scope.CONTROL: "jobs.control_job",
    Scope.APPROVE: "approvals.decide_approval",
    Scope.READ: "jobs.view_job",
    Scope.ADMIN: "approvals.manage_policy",
    Scope.CROSS_IDENTITY: "jobs.cross_identity",
}


@dataclass(frozen=True)
class Actor:
    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    user: Any = None  # AbstractBaseUser | None
    identity: str | None = None
    kind: str = "system"  # system | user | apikey

    @classmethod
    def system(cls, name: str = "system", identity: str | None = None) -> Actor:
        """The local operator (CLI, engine): trusted with every scope."""
        return cls(name=name or "system", scopes=Scope.ALL, identity=identity, kind="system")

    @classmethod
    def from_user(cls, user: AbstractUser | AnonymousUser) -> Actor:
        if not user.is_authenticated or not user.is_active:
            return cls(name="anonymous", scopes=frozenset(), kind="user")
        if user.is_superuser:
            scopes = Scope.ALL
        else:
            scopes = frozenset(s for s, perm in SCOPE_PERMISSIONS.items() if user.has_perm(perm))
        return cls(
            name=user.get_username(),
            scopes=scopes,
            user=user,
            identity=user.get_username(),
            kind="user",
        )

    def can(self, scope: str) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes

    @property
    def bound_identity(self) -> str | None:
        """The identity whose objects this actor is confined to, or ``None`` when it sees every
        identity's (``cross_identity`` or ``admin``; the local operator has both). ``""`` for
        a confined actor without an identity: it sees nothing."""
        if self.can(Scope.CROSS_IDENTITY):
            return None
        return self.identity or ""

    def sees_identity(self, identity: str) -> bool:
        """Whether an object of ``identity`` (a job's, a template's) is visible to this actor."""
        bound = self.bound_identity
        return bound is None or (bound != "" and identity == bound)

    def require_identity(self, identity: str) -> None:
        """An identity-bound actor acts as its own identity only: submitting a job or saving a
        template for another one is ``identity_binding_mismatch``."""
        if not self.sees_identity(identity):
            raise PolicyRefused(
                reasons.IDENTITY_BINDING_MISMATCH,
                f"{self.name} is bound to identity {self.bound_identity!r}, not {identity!r}",
                details={"identity": identity, "bound_identity": self.bound_identity},
            )

    def require(self, scope: str) -> None:
        if not self.can(scope):
            raise Forbidden(
                reasons.PERMISSION_DENIED,
                f"{self.name} lacks the '{scope}' permission",
                details={"required_scope": scope},
            )
