"""Identities: which policy an identity's jobs are bound to — the one an admin assigned, not
the one a caller chose (docs/security.md, "Policies are assigned by admins") — and whether the
identity is revoked.

An identity's policy is, in this order: its ``IdentityPolicy`` row; else the deployment default
``GAIT_DEFAULT_POLICY`` (a stored policy, by name); else none, and its jobs run ungated as they
did before assignments existed (the dashboard and ``gait jobs stats`` say so).

When an identity has a policy, a submit, resume or retry binds the job to that policy's current
version. The caller may ask instead for one of the binding's ``may_request`` policies (stricter
ones the admin lets it choose), always at its current version; anything else is refused with
``policy_not_allowed``, and "no policy" can never be asked for (``policy_none_refused``).

The reads behind that decision write nothing. They run once per submit, resume or retry, never
per gate evaluation: a job carries its bound version, and the engine and ``gate_dispatch``
evaluate that. Binding, clearing and revoking are for admins (``Scope.ADMIN``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from approvals.models import IdentityPolicy, Policy, PolicyVersion, RevokedIdentity
from approvals.policies import policy_named
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.canonical import iso_utc
from gaitweb.lib.errors import GaitError, Hints, InvalidInput, PolicyRefused
from gaitweb.lib.validation import text_field

# Assignment sources, as recorded in a job's journal (``policy_assignment``).
FROM_IDENTITY = "identity"  # the identity's IdentityPolicy row
FROM_DEFAULT = "default"  # GAIT_DEFAULT_POLICY
FROM_REQUEST = "request"  # a policy the caller asked for (allowed by may_request, or ungated)
UNGATED = "none"  # no policy anywhere for this identity

MAX_MAY_REQUEST = 50

DEPLOYMENT_UNGATED = "ungated"  # no default and no identity has a policy
DEPLOYMENT_PARTIAL = "partially_gated"  # no default: identities without a binding are ungated
DEPLOYMENT_GATED = "gated"  # a default policy: every job is bound to a policy


class PolicyAssignmentUnavailable(GaitError):
    """The assigned policy cannot be bound (the default names no stored policy, or the policy
    has no version): submits fail closed rather than run ungated."""

    http_status = 503


@dataclass(frozen=True)
class Assignment:
    """The policy an identity's jobs are bound to. ``policy`` is ``None`` only when ``source``
    is ``UNGATED``. ``may_request`` is read lazily (only a caller asking for another policy
    needs it)."""

    identity: str
    source: str
    policy: Policy | None = None
    binding_pk: int | None = None
    _may_request: list[Policy] | None = field(default=None, compare=False, repr=False)

    @property
    def gated(self) -> bool:
        return self.policy is not None

    @property
    def may_request(self) -> list[Policy]:
        if self._may_request is None:
            found = (
                list(
                    Policy.objects.filter(requestable_by__pk=self.binding_pk)
                    .select_related("current")
                    .order_by("name")
                )
                if self.binding_pk is not None
                else []
            )
            object.__setattr__(self, "_may_request", found)
        return self._may_request or []

    def current(self) -> PolicyVersion:
        """The assigned policy's current version, or ``policy_assignment_unavailable``."""
        assert self.policy is not None
        version = self.policy.current
        if version is None:
            raise PolicyAssignmentUnavailable(
                reasons.POLICY_ASSIGNMENT_UNAVAILABLE,
                f"policy {self.policy.name!r} assigned to identity {self.identity!r} has no version",
                details={"identity": self.identity, "policy": self.policy.name},
                hint=Hints(
                    cli="store a version of the policy: gait policy save NAME FILE",
                    api="an admin stores a version of the policy: POST /api/v1/policies",
                    dashboard="an admin stores a version of the policy in admin › Policies",
                    mcp="ask an admin to store a version of the policy",
                ),
            )
        return version

    def permits(self, policy_pk: int | None) -> bool:
        """Whether a job of this identity may be bound to the stored policy ``policy_pk``."""
        if self.policy is None:
            return True
        if policy_pk is None:
            return False
        return policy_pk == self.policy.pk or any(p.pk == policy_pk for p in self.may_request)

    def as_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "source": self.source,
            "policy": self.policy.name if self.policy else None,
            "policy_digest": self.policy.current.digest
            if self.policy and self.policy.current
            else None,
            "may_request": [p.name for p in self.may_request],
        }


def default_policy_name() -> str:
    return str(settings.GAIT.get("DEFAULT_POLICY") or "")


def policy_assignment_get(*, identity: str) -> Assignment:
    """The policy ``identity``'s jobs are bound to (one indexed read; a second for the default
    when the identity has no binding and a default is configured)."""
    if identity:
        row = (
            IdentityPolicy.objects.select_related("policy__current")
            .filter(identity=identity)
            .first()
        )
        if row is not None:
            return Assignment(
                identity=identity, source=FROM_IDENTITY, policy=row.policy, binding_pk=row.pk
            )
    return _default_assignment(identity)


def submit_admission(*, identity: str) -> tuple[bool, Assignment]:
    """What a submit checks about ``identity`` before writing: whether it is revoked, and the
    policy its jobs are bound to. One round trip (a raw statement: no query compilation) when
    the identity has no binding of its own, the common case; a bound identity's policy is then
    read as ``policy_assignment_get`` reads it."""
    if not identity:
        return False, policy_assignment_get(identity=identity)
    revoked_t, bound_t = RevokedIdentity._meta.db_table, IdentityPolicy._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f'SELECT EXISTS (SELECT 1 FROM "{revoked_t}" WHERE "identity" = %s), '
            f'(SELECT "id" FROM "{bound_t}" WHERE "identity" = %s)',
            [identity, identity],
        )
        revoked, bound = cur.fetchone()
    if revoked:
        return True, Assignment(identity=identity, source=UNGATED)  # refused before any use
    if bound is None:
        return False, _default_assignment(identity)
    return False, policy_assignment_get(identity=identity)


def _default_assignment(identity: str) -> Assignment:
    """The assignment of an identity without a binding: the deployment default, if any."""
    name = default_policy_name()
    if not name:
        return Assignment(identity=identity, source=UNGATED)
    policy = Policy.objects.select_related("current").filter(name=name).first()
    if policy is None:
        raise PolicyAssignmentUnavailable(
            reasons.POLICY_ASSIGNMENT_UNAVAILABLE,
            f"GAIT_DEFAULT_POLICY names {name!r}, which is not a stored policy",
            details={"identity": identity, "policy": name},
            hint=Hints(
                cli="store the policy (gait policy save NAME FILE) or fix GAIT_DEFAULT_POLICY",
                api="an admin stores the policy (POST /api/v1/policies) or fixes "
                "GAIT_DEFAULT_POLICY",
                dashboard="an admin stores the policy in admin › Policies or fixes "
                "GAIT_DEFAULT_POLICY",
                mcp="ask an admin to store the policy or fix GAIT_DEFAULT_POLICY",
            ),
        )
    return Assignment(identity=identity, source=FROM_DEFAULT, policy=policy)


def policy_assigned_version(*, identity: str) -> PolicyVersion | None:
    """The current version of the policy ``identity``'s jobs are bound to, or ``None`` when it
    is ungated: what ``gate/evaluate`` judges a caller by when it names no policy."""
    assignment = policy_assignment_get(identity=identity)
    return assignment.current() if assignment.gated else None


def _not_allowed(assignment: Assignment, requested: PolicyVersion, why: str) -> PolicyRefused:
    assert assignment.policy is not None
    return PolicyRefused(
        reasons.POLICY_NOT_ALLOWED,
        f"jobs of identity {assignment.identity!r} are bound to policy "
        f"{assignment.policy.name!r} by an admin; {why}",
        details={
            "identity": assignment.identity,
            "policy": requested.policy.name,
            "assigned_policy": assignment.policy.name,
            "may_request": [p.name for p in assignment.may_request],
        },
        hint="omit the policy to get the assigned one, or ask an admin to allow this one",
    )


def policy_choose(
    *, assignment: Assignment, requested: PolicyVersion | None
) -> tuple[PolicyVersion | None, str]:
    """(the version to bind, its source) for a job of ``assignment.identity`` whose caller asked
    for ``requested`` (``None``: asked for nothing). Refuses with ``policy_not_allowed`` a
    policy the assignment does not permit, or a version that is not its policy's current one
    (an old version may be weaker than the one the admin assigned)."""
    if not assignment.gated:
        return requested, (FROM_REQUEST if requested is not None else UNGATED)
    if requested is None:
        return assignment.current(), assignment.source
    if not assignment.permits(requested.policy_id):
        allowed = [p.name for p in assignment.may_request]
        also = f" (it may also ask for: {', '.join(allowed)})" if allowed else ""
        raise _not_allowed(
            assignment, requested, f"it may not ask for {requested.policy.name!r}{also}"
        )
    current = requested.policy.current
    if current is None or current.digest != requested.digest:
        raise _not_allowed(
            assignment,
            requested,
            f"version {requested.version} of {requested.policy.name!r} is not its current "
            "version; ask for the policy by name",
        )
    assert assignment.policy is not None
    source = assignment.source if requested.policy_id == assignment.policy.pk else FROM_REQUEST
    return current, source


def version_policy_pk(version_pk: int | None) -> int | None:
    """The stored policy a bound version belongs to (a job keeps only the version)."""
    if version_pk is None:
        return None
    return PolicyVersion.objects.filter(pk=version_pk).values_list("policy_id", flat=True).first()


def binding_as_dict(row: IdentityPolicy) -> dict[str, Any]:
    """An identity's binding as the API and the CLI show it (``source`` is always
    ``identity``; ``Assignment.as_dict`` covers the default and ungated cases)."""
    return {
        "identity": row.identity,
        "source": FROM_IDENTITY,
        "policy": row.policy.name,
        "policy_digest": row.policy.current.digest if row.policy.current else None,
        "may_request": sorted(p.name for p in row.may_request.all()),
        "assigned_by": row.assigned_by,
        "updated_at": iso_utc(row.updated_at),
    }


def identity_policy_list(*, actor: Actor) -> list[IdentityPolicy]:
    """Every identity's binding, for admins."""
    actor.require(Scope.ADMIN)
    return list(
        IdentityPolicy.objects.select_related("policy__current")
        .prefetch_related("may_request")
        .order_by("identity")
    )


def identity_policy_show(*, actor: Actor, identity: str) -> Assignment:
    """The policy ``identity``'s jobs are bound to and where it comes from, for admins."""
    actor.require(Scope.ADMIN)
    return policy_assignment_get(identity=identity)


def deployment_gate_status() -> dict[str, Any]:
    """Whether this deployment gates its jobs: ``gated`` (a default policy binds every job),
    ``partially_gated`` (only identities with a binding are gated) or ``ungated`` (no policy
    anywhere: every tool call is allowed). Two small reads; the dashboard and stats show it."""
    name = default_policy_name()
    bindings = IdentityPolicy.objects.count()
    default_ok = bool(name) and Policy.objects.filter(name=name, current__isnull=False).exists()
    if default_ok:
        mode = DEPLOYMENT_GATED
    elif bindings:
        mode = DEPLOYMENT_PARTIAL
    else:
        mode = DEPLOYMENT_UNGATED
    warning = ""
    if name and not default_ok:
        warning = (
            f"GAIT_DEFAULT_POLICY names {name!r}, which is not a stored policy with a version: "
            "submits of identities without a binding are refused"
        )
    elif mode == DEPLOYMENT_UNGATED:
        warning = (
            "UNGATED: no policy is assigned (no GAIT_DEFAULT_POLICY, no identity policies); "
            "jobs without a policy of their own run every tool call unchecked"
        )
    elif mode == DEPLOYMENT_PARTIAL:
        warning = (
            "PARTIALLY GATED: no GAIT_DEFAULT_POLICY; jobs of identities without an identity "
            "policy run ungated"
        )
    return {
        "mode": mode,
        "default_policy": name,
        "default_policy_ok": default_ok,
        "identity_policies": bindings,
        "warning": warning,
    }


# --- bindings and revocation (admins) ---------------------------------------------------------


def identity_policy_set(
    *, actor: Actor, identity: str, policy: str, may_request: Iterable[str] = ()
) -> IdentityPolicy:
    """Bind the stored policy ``policy`` to ``identity`` (admins only): every job of the
    identity submitted, resumed or retried from now on is bound to its current version whatever
    the request says. ``may_request`` names the stricter policies the identity may ask for
    instead. Replaces an earlier binding of the identity; everything is checked first."""
    actor.require(Scope.ADMIN)
    identity = text_field(identity, "identity", max_len=256, required=True)
    assigned = policy_named(policy, "policy")
    if isinstance(may_request, str) or not all(isinstance(n, str) for n in may_request):
        raise InvalidInput(
            reasons.INVALID_MAY_REQUEST,
            "may_request must be a list of stored policy names",
            details={"field": "may_request"},
        )
    names = sorted(set(may_request) - {assigned.name})
    if len(names) > MAX_MAY_REQUEST:
        raise InvalidInput(
            reasons.INVALID_MAY_REQUEST,
            f"may_request names at most {MAX_MAY_REQUEST} policies",
            details={"field": "may_request"},
        )
    extra = [policy_named(n, "may_request") for n in names]
    with transaction.atomic():
        row, _ = IdentityPolicy.objects.update_or_create(
            identity=identity, defaults={"policy": assigned, "assigned_by": actor.name[:256]}
        )
        row.may_request.set(extra)
    return row


def identity_policy_clear(*, actor: Actor, identity: str) -> bool:
    """Remove ``identity``'s binding (admins only): its jobs fall back to GAIT_DEFAULT_POLICY,
    or run ungated if there is none. True if there was a binding."""
    actor.require(Scope.ADMIN)
    identity = text_field(identity, "identity", max_len=256, required=True)
    deleted, _ = IdentityPolicy.objects.filter(identity=identity).delete()
    return deleted > 0


def identity_revoke(*, actor: Actor, identity: str, reason: str = "") -> RevokedIdentity:
    """Revoke an agent identity: its dispatches are blocked (``identity_revoked``), it cannot
    submit, and jobs bound to it cannot resume. Revoking twice keeps the first record."""
    actor.require(Scope.ADMIN)
    identity = text_field(identity, "identity", max_len=256, required=True)
    reason = text_field(reason, "reason", max_len=512)
    revoked, _ = RevokedIdentity.objects.get_or_create(
        identity=identity, defaults={"reason": reason, "revoked_by": actor.name}
    )
    return revoked


def identity_is_revoked(identity: str) -> bool:
    return bool(identity) and RevokedIdentity.objects.filter(identity=identity).exists()
