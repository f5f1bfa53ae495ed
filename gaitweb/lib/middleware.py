"""Request guards that run before any view reads the request (docs/security.md, "Every input is
bounded").

- ``RequestSizeLimitMiddleware``: a body whose ``Content-Length`` is over the view's limit is
  refused with 413 before a byte of it is read. Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` does
  not do that: it counts only non-file form fields, multipart files are spooled to a temporary
  file whatever their size, and DRF reads JSON straight from the stream. A view that takes
  uploads declares its own, larger limit with ``body_limit`` (a DRF view class sets
  ``body_max_bytes`` and ``body_limit_code``).
- ``NulCharacterMiddleware``: a NUL character in the dashboard's or the admin's path, query,
  form fields, upload file names or cookies is refused with 400 ``nul_character``. PostgreSQL
  text cannot hold NUL, so such a value used to reach a query and become a 500. The API has its
  own checks with its own envelope (gaitweb.api.json_safe_check) and is left to them.

Both answer with the API's error envelope under ``/api/`` and with a small standalone page
elsewhere (it must not touch the session: the refused value may be the session cookie).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from gaitweb.lib import reasons
from gaitweb.lib.errors import GaitError, api_body

API_PREFIX = "/api/"


def request_max_bytes() -> int:
    """The body limit of every view that declares none (``GAIT_REQUEST_MAX_BYTES``)."""
    gait: dict[str, Any] = settings.GAIT
    return int(gait["REQUEST_MAX_BYTES"])


def upload_max_bytes() -> int:
    """The limit of one uploaded pack (``GAIT_UPLOAD_MAX_BYTES``)."""
    gait: dict[str, Any] = settings.GAIT
    return int(gait["UPLOAD_MAX_BYTES"])


def body_limit(
    max_bytes: Callable[[], int], code: str = reasons.UPLOAD_TOO_LARGE
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a function view its own body limit (a callable, read per request, so settings
    overrides apply)."""

    def mark(view: Callable[..., Any]) -> Callable[..., Any]:
        view.body_max_bytes = max_bytes  # type: ignore[attr-defined]
        view.body_limit_code = code  # type: ignore[attr-defined]
        return view

    return mark


def _limit_of(view_func: Any) -> tuple[int, str]:
    # DRF's as_view() keeps the class on the function it returns
    for holder in (view_func, getattr(view_func, "cls", None)):
        limit = getattr(holder, "body_max_bytes", None)
        if limit is not None:
            return int(limit() if callable(limit) else limit), str(
                getattr(holder, "body_limit_code", reasons.UPLOAD_TOO_LARGE)
            )
    return request_max_bytes(), reasons.REQUEST_TOO_LARGE


def refusal_response(
    request: HttpRequest, status: int, code: str, message: str, details: dict[str, Any]
) -> HttpResponse:
    """The error envelope for the API, a standalone page for the dashboard and the admin."""
    if request.path_info.startswith(API_PREFIX):
        refusal = GaitError(code, message, details=details, http_status=status)
        return JsonResponse(api_body(refusal), status=status)
    html = render_to_string("refused.html", {"status": status, "code": code, "message": message})
    return HttpResponse(html, status=status)


class RequestSizeLimitMiddleware:
    """413 by ``Content-Length``, before the body is read or spooled."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            return refusal_response(
                request,
                400,
                reasons.INVALID_CONTENT_LENGTH,
                "the Content-Length header is not a number of bytes",
                {},
            )
        limit, code = _limit_of(view_func)
        if length > limit:
            # The unread body is never spooled; the server discards it (WSGI cannot ask for the
            # connection to close). A proxy's own body limit stops it at the edge.
            return refusal_response(
                request,
                413,
                code,
                f"the request body is {length} bytes; this endpoint takes at most {limit}",
                {"max_bytes": limit, "content_length": length},
            )
        return None


def _has_nul(values: Iterable[str]) -> bool:
    return any("\x00" in value for value in values)


class NulCharacterMiddleware:
    """400 ``nul_character`` for a NUL anywhere a dashboard or admin view would read it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        if request.path_info.startswith(API_PREFIX):
            return None
        where = self._where(request)
        if where is None:
            return None
        return refusal_response(
            request,
            400,
            reasons.NUL_CHARACTER,
            f"the {where} contains a NUL character, which gaitweb never accepts",
            {"field": where},
        )

    @staticmethod
    def _where(request: HttpRequest) -> str | None:
        if "\x00" in request.path_info:
            return "path"
        for name, values in request.GET.lists():
            if _has_nul([name, *values]):
                return "query"
        if _has_nul(request.COOKIES) or _has_nul(request.COOKIES.values()):
            return "cookies"
        if request.method == "POST":
            for name, values in request.POST.lists():
                if _has_nul([name, *values]):
                    return "form"
            for name, files in request.FILES.lists():
                if _has_nul([name, *(f.name or "" for f in files)]):
                    return "form"
        return None
