"""The five roles as Django groups, each a set of scope permissions (gaitweb/lib/actors.py).

Groups are (re)created after every migrate, so a fresh database always has them; an admin may
add users to groups in Django admin. ``integrator`` is for service accounts behind API keys:
the only role confined to its own identity.
"""

from __future__ import annotations

from typing import Any

from gaitweb.lib.actors import SCOPE_PERMISSIONS, Scope

# The staff roles see every identity's objects (cross_identity); an integrator is an agent's
# account and sees only the jobs, templates, approvals and packs of its own identity (its
# username), like an API key (docs/security.md).
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "viewer": frozenset({Scope.READ, Scope.CROSS_IDENTITY}),
    "reviewer": frozenset({Scope.READ, Scope.APPROVE, Scope.CROSS_IDENTITY}),
    "operator": frozenset({Scope.READ, Scope.SUBMIT, Scope.CONTROL, Scope.CROSS_IDENTITY}),
    "integrator": frozenset({Scope.READ, Scope.SUBMIT, Scope.CONTROL}),
    "admin": Scope.ALL,
}
ROLE_ORDER = ["admin", "operator", "reviewer", "integrator", "viewer"]


def roles_ensure() -> None:
    from django.contrib.auth.models import Group, Permission

    for role, scopes in ROLE_SCOPES.items():
        group, _ = Group.objects.get_or_create(name=role)
        perms = []
        for scope in scopes:
            app_label, codename = SCOPE_PERMISSIONS[scope].split(".")
            perms.append(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        if role == "admin":
            # admins manage policies, identities, revocations, signing keys, API keys, job
            # templates, login lockouts and what steps may touch in Django admin (jobs and events
            # stay read-only there)
            perms += list(
                Permission.objects.filter(
                    # axes: unlocking a login locked out by django-axes (docs/security.md)
                    content_type__app_label__in=["approvals", "packs", "gaitweb", "axes"]
                )
            )
            perms += list(
                Permission.objects.filter(
                    content_type__app_label="jobs",
                    content_type__model__in=[
                        "jobtemplate",
                        "templatefire",
                        "allowedexecutable",
                        "allowedhttphost",
                    ],
                )
            )
        group.permissions.set(perms)


def roles_ensure_on_migrate(sender: Any, app_config: Any = None, **kwargs: Any) -> None:
    # run once, after the last of our apps has migrated and its permissions exist
    if app_config is None or app_config.label != "packs":
        return
    roles_ensure()


def user_role(user: Any) -> str:
    """The strongest role of a user, for the dashboard header."""
    if not user.is_authenticated:
        return ""
    if user.is_superuser:
        return "admin"
    names = set(user.groups.values_list("name", flat=True))
    for role in ROLE_ORDER:
        if role in names:
            return role
    return "none"
