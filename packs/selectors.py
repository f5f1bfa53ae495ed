"""The read side of stored packs: scoped by the ``Actor`` like jobs (jobs/selectors.py).

A pack belongs to its job's identity; another identity's pack is ``pack_not_found``, as if it
did not exist. Verifying, inspecting and diffing an *uploaded* zip read nothing stored, so they
are not scoped (packs/services.py).
"""

from __future__ import annotations

import re

from django.db.models import QuerySet

from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.errors import InvalidInput, NotFound
from jobs.selectors import identity_scoped, job_get
from packs.models import Pack

PACK_ID_RE = re.compile(r"^[0-9a-f]{64}$")


def packs_visible(actor: Actor | None) -> QuerySet[Pack]:
    return identity_scoped(Pack.objects.all(), actor, "job__identity")


def pack_get(*, actor: Actor, pack_id: str) -> Pack:
    """The newest stored pack with this id (a re-signed rebuild shares the pack_id)."""
    actor.require(Scope.READ)
    if not isinstance(pack_id, str) or not PACK_ID_RE.match(pack_id):
        raise InvalidInput(
            reasons.INVALID_PACK_ID,
            "a pack id is 64 lowercase hex digits",
            details={"pack_id": pack_id},
        )
    pack = (
        packs_visible(actor)
        .filter(pack_id=pack_id)
        .select_related("job")
        .order_by("-created_at", "-id")
        .first()
    )
    if pack is None:
        raise NotFound(
            reasons.PACK_NOT_FOUND, f"no pack with id {pack_id}", details={"pack_id": pack_id}
        )
    return pack


def pack_list(*, actor: Actor, job_id: str) -> list[Pack]:
    """The packs of one job, newest first, without their bytes."""
    actor.require(Scope.READ)
    job = job_get(actor=actor, job_id=job_id)
    # pack_as_dict reads pack.job: load it with the packs rather than once per pack
    packs = Pack.objects.filter(job=job).select_related("job").defer("data")
    return list(packs.order_by("-created_at", "-id"))
