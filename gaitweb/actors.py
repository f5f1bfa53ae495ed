"""Who is acting: a person (Django user), an agent (API key), or the local operator (CLI).

Services take an ``Actor`` and check scopes themselves, so every entry point (API, dashboard,
CLI, MCP) enforces the same permissions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gaitweb.errors import Forbidden

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser, AnonymousUser


class Scope:
    SUBMIT = "submit"
    CONTROL = "control"
    APPROVE = "approve"
    READ = "read"
    ADMIN = "admin"
    ALL = frozenset({SUBMIT, CONTROL, APPROVE, READ, ADMIN})


# Django permission (app_label.codename) that grants each scope to a logged-in user.
SCOPE_PERMISSIONS = {
    Scope.SUBMIT: "jobs.submit_job",
    Scope.CONTROL: "jobs.control_job",
    Scope.APPROVE: "approvals.decide_approval",
    Scope.READ: "jobs.view_job",
    Scope.ADMIN: "approvals.manage_policy",
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

    def require(self, scope: str) -> None:
        if not self.can(scope):
            raise Forbidden(
                "permission_denied",
                f"{self.name} lacks the '{scope}' permission",
                details={"required_scope": scope},
            )
