"""Stored policies: saving a version, finding one by name, version or digest, and the binding
of a job to one (``PolicyBinding``). The policy document itself — its format, parsing and
evaluation — is approvals/policy_format.py; which policy an identity's jobs get is
approvals/identities.py.

Old versions stay resolvable by digest forever: jobs and packs refer to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Max

from approvals.models import Policy, PolicyVersion
from approvals.policy_format import Policy as PolicyDoc
from approvals.policy_format import policy_parse
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.errors import Hints, InvalidInput, NotFound, PolicyRefused
from gaitweb.lib.validation import text_field

POLICY_NAME_MAX = 128
FILE_POLICY_PREFIX = "file:"
# What a caller might write to ask for no policy at all: refused by name, never looked up.
NONE_WORDS = frozenset({"none", "null", "off", "ungated", "no-policy"})
# where each interface lists the stored policies
POLICY_LIST_HINTS = Hints(
    cli="gait policy list",
    api="GET /api/v1/policies lists the stored policies",
    dashboard="the stored policies are listed under Approvals › Policies in admin",
    mcp="ask an admin which policies are stored",
)


@dataclass(frozen=True)
class PolicyBinding:
    """A policy a job is bound to, or re-evaluated against on resume.

    ``version`` is set when the policy is managed in gaitweb (Django admin / API); a policy read
    from a file by the CLI has only a digest and a ref (the path)."""

    digest: str
    ref: str
    version: PolicyVersion | None = None

    @classmethod
    def of(cls, version: PolicyVersion, *, name: str | None = None) -> PolicyBinding:
        """The binding to stored policy ``version`` (``policy:<name>``); ``name`` is its
        policy's, when the caller already has it (saves reading the policy row)."""
        return cls(
            digest=version.digest, ref=f"policy:{name or version.policy.name}", version=version
        )


def policy_request_check(ref: Any) -> None:
    """A caller may never ask for "no policy": refuse the words that would mean it before they
    are looked up as a policy name (``policy_none_refused``)."""
    if isinstance(ref, str) and ref.strip().lower() in NONE_WORDS:
        raise PolicyRefused(
            reasons.POLICY_NONE_REFUSED,
            f"a job cannot ask for no policy ({ref.strip()!r}); omit the field to get the "
            "policy an admin assigned",
            details={"field": "policy", "policy": ref.strip()},
        )


def _policy_version_store(
    *, policy: Policy, source: str, parsed: PolicyDoc, author: str
) -> PolicyVersion:
    """A new version of ``policy`` (row locked by the caller), unless ``parsed`` (the caller's
    parse of ``source``, done before the lock) has the current version's digest: saving an
    unchanged policy is a no-op."""
    current = policy.current
    if current is not None and current.digest == parsed.digest:
        return current
    last = PolicyVersion.objects.filter(policy=policy).aggregate(n=Max("version"))["n"] or 0
    version = PolicyVersion.objects.create(
        policy=policy,
        version=last + 1,
        source=source,
        normalized=parsed.normalized(),
        digest=parsed.digest,
        author=author[:256],
    )
    policy.current = version
    policy.save(update_fields=["current", "updated_at"])
    return version


def policy_save(
    *, actor: Actor, name: str, source: str, description: str | None = None
) -> PolicyVersion:
    """Store ``source`` as the new current version of policy ``name`` (created if new).

    Strict parse first: a bad policy raises ``InvalidInput`` (line and key named) and nothing is
    written. Old versions stay resolvable by digest forever (jobs and packs refer to them)."""
    actor.require(Scope.ADMIN)
    name = text_field(name, "name", max_len=POLICY_NAME_MAX, required=True)
    if name.startswith(FILE_POLICY_PREFIX):
        raise InvalidInput(
            reasons.INVALID_POLICY_NAME,
            f"policy names starting with '{FILE_POLICY_PREFIX}' are reserved for policy files",
        )
    if name.lower() in NONE_WORDS:
        raise InvalidInput(
            reasons.INVALID_POLICY_NAME,
            f"{name!r} is reserved: a submit naming it asks for no policy, which is refused",
        )
    parsed = policy_parse(source)  # refuse before taking any lock
    with transaction.atomic():
        policy, _ = Policy.objects.get_or_create(name=name)
        policy = (
            Policy.objects.select_for_update(of=("self",))
            .select_related("current")
            .get(pk=policy.pk)
        )
        if description is not None and description != policy.description:
            policy.description = text_field(description, "description", max_len=512)
            policy.save(update_fields=["description", "updated_at"])
        return _policy_version_store(policy=policy, source=source, parsed=parsed, author=actor.name)


def policy_list(*, actor: Actor, file_copies: bool = True) -> list[Policy]:
    """Stored policies by name. ``file_copies=False`` leaves out the ``file:<name>@<digest>``
    copies the CLI stores for ``--policy FILE`` (pickers offer only authored policies)."""
    actor.require(Scope.READ)
    qs = Policy.objects.select_related("current").order_by("name")
    if not file_copies:
        qs = qs.exclude(name__startswith=FILE_POLICY_PREFIX)
    return list(qs)


def policy_resolve(*, ref: str, actor: Actor | None = None) -> PolicyVersion:
    """A stored version by ``NAME`` (its current version), ``NAME@N`` / ``NAME@vN``, or a
    digest (64 hex, optionally ``sha256:``-prefixed; the oldest version with that digest)."""
    if actor is not None:
        actor.require(Scope.READ)
    ref = text_field(ref, "ref", max_len=POLICY_NAME_MAX + 16, required=True)
    hex_ref = ref.removeprefix("sha256:").lower()
    if len(hex_ref) == 64 and all(c in "0123456789abcdef" for c in hex_ref):
        found = (
            PolicyVersion.objects.filter(digest=hex_ref)
            .select_related("policy")
            .order_by("created_at", "id")
            .first()
        )
        if found is None:
            raise NotFound(
                reasons.POLICY_NOT_FOUND,
                f"no stored policy has digest {hex_ref}",
                details={"ref": ref},
            )
        return found
    name, _, number = ref.rpartition("@") if "@" in ref else (ref, "", "")
    if number:
        digits = number.removeprefix("v")
        if not digits.isdigit():
            raise InvalidInput(
                reasons.INVALID_POLICY_REF,
                f"policy version must be a number: {ref}",
                details={"ref": ref},
            )
        found = (
            PolicyVersion.objects.filter(policy__name=name, version=int(digits))
            .select_related("policy")
            .first()
        )
        if found is None:
            raise NotFound(
                reasons.POLICY_NOT_FOUND,
                f"policy {name} has no version {digits}",
                details={"ref": ref},
            )
        return found
    policy = Policy.objects.filter(name=ref).select_related("current", "current__policy").first()
    if policy is None or policy.current is None:
        raise NotFound(
            reasons.POLICY_NOT_FOUND,
            f"no policy named {ref!r}",
            details={"ref": ref},
            hint=POLICY_LIST_HINTS,
        )
    return policy.current


def policy_binding_resolve(*, ref: str, actor: Actor | None = None) -> PolicyBinding:
    """What ``--policy`` / a submit's policy field names: a YAML file, or a stored policy
    (``policy_resolve`` forms). A file is parsed strictly and stored content-addressed as the
    single version of policy ``file:<name>@<digest12>``, so workers on any machine can evaluate
    it and resumes re-evaluate the same content (a file is pinned by what it said)."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInput(reasons.INVALID_POLICY_REF, "a policy file or name is required")
    policy_request_check(ref)
    path = Path(ref)
    looks_like_file = ref.endswith((".yaml", ".yml", ".json")) or "/" in ref
    if path.is_file():
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(
                reasons.POLICY_FILE_UNREADABLE,
                f"cannot read policy file {ref}: {exc}",
                details={"path": ref},
            ) from None
        parsed = policy_parse(source)
        name = f"{FILE_POLICY_PREFIX}{path.name[:96]}@{parsed.digest[:12]}"
        with transaction.atomic():
            policy, _ = Policy.objects.get_or_create(name=name)
            policy = (
                Policy.objects.select_for_update(of=("self",))
                .select_related("current")
                .get(pk=policy.pk)
            )
            version = _policy_version_store(
                policy=policy,
                source=source,
                parsed=parsed,
                author=actor.name if actor else "file",
            )
        return PolicyBinding(digest=version.digest, ref=ref, version=version)
    if looks_like_file and "@" not in ref:
        raise InvalidInput(
            reasons.POLICY_FILE_NOT_FOUND, f"policy file not found: {ref}", details={"path": ref}
        )
    return PolicyBinding.of(policy_resolve(ref=ref))


def policy_request_resolve(*, ref: str) -> PolicyBinding:
    """The stored policy a submit or resume over the API, MCP or the dashboard asks for (never a
    file on the server). "No policy" is refused by name (``policy_none_refused``); whether the
    identity may have this policy is decided by ``job_submit`` (approvals.identities)."""
    policy_request_check(ref)
    return PolicyBinding.of(policy_resolve(ref=ref))


def policy_named(name: Any, field: str) -> Policy:
    name = text_field(name, field, max_len=POLICY_NAME_MAX, required=True)
    policy = Policy.objects.filter(name=name).select_related("current").first()
    if policy is None or policy.current is None:
        raise NotFound(
            reasons.POLICY_NOT_FOUND,
            f"no stored policy named {name!r}",
            details={"field": field, "ref": name},
            hint=POLICY_LIST_HINTS,
        )
    return policy
