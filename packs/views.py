"""The two pack URLs outside the API and the dashboard: published public keys, and download.

The dashboard and the REST API build, list and verify packs through packs.services; these
views only serve what a third party or a logged-in reader fetches directly.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import Forbidden, InvalidInput, NotFound
from packs.keys import keys_published
from packs.models import Pack
from packs.selectors import pack_get


@require_GET
def keys_json(request: HttpRequest) -> JsonResponse:
    """Current and retired public keys, no authentication: anyone holding a pack can check its
    signature against the keys this instance has ever signed with."""
    response = JsonResponse(keys_published())
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
    return response


def _get_pack_for_user(request: HttpRequest, pack_id: str) -> Pack:
    try:
        return pack_get(actor=Actor.from_user(request.user), pack_id=pack_id)
    except Forbidden:
        raise PermissionDenied from None
    except (NotFound, InvalidInput):
        raise Http404("no such pack") from None


@login_required
@require_GET
def pack_download(request: HttpRequest, pack_id: str) -> HttpResponse:
    pack = _get_pack_for_user(request, pack_id)
    response = HttpResponse(bytes(pack.data), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="pack_{pack.pack_id}.zip"'
    response["Content-Length"] = str(pack.size)
    response["ETag"] = f'"{pack.sha256}"'
    response["Cache-Control"] = "private, no-cache"
    return response
