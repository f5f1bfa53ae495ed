"""Dashboard plumbing shared by every page: login/logout, the home redirect, the page context
(role and pending-approvals count for the header), refusals shown inline, and the
verify-a-pack page (packs/views.py belongs to the packs API; this page is the dashboard's).

Views are thin: parse the request, call one service, render. Every action is a
POST form with CSRF that works without JavaScript (redirect) and with htmx (fragment).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required as django_login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from gaitweb.actors import Actor, Scope
from gaitweb.errors import GaitError
from gaitweb.roles import user_role

# An uploaded pack larger than this is refused before it is read (packs.zipsafe guards the
# entries; this guards the request).
VERIFY_UPLOAD_MAX_BYTES = 256 * 1024 * 1024


def login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Django's login_required, except that an htmx request (a poll after the session expired)
    gets ``HX-Redirect`` to the login page: following a 302 would swap the login form into a
    fragment of the page."""
    plain = django_login_required(view)

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.htmx and not request.user.is_authenticated:
            from django_htmx.http import HttpResponseClientRedirect

            page = request.htmx.current_url_abs_path or request.get_full_path()
            return HttpResponseClientRedirect(redirect_to_login(page)["Location"])
        return plain(request, *args, **kwargs)

    return wrapper


def actor_for(request: HttpRequest) -> Actor:
    return Actor.from_user(request.user)


def require_read(request: HttpRequest) -> Actor:
    """The actor behind the request; every dashboard page needs at least the read scope."""
    actor = actor_for(request)
    if not actor.can(Scope.READ):
        raise PermissionDenied("your account has no role in gaitweb; ask an admin for one")
    return actor


def nav_pending_count(actor: Actor) -> int:
    """The header's pending-approvals count of the requests ``actor`` may see
    (approvals.selectors). Fragments swap it out of band (``_nav_count.html``)."""
    from approvals.selectors import approval_pending_count

    return approval_pending_count(actor=actor)


def page_context(request: HttpRequest, nav: str) -> dict[str, Any]:
    """What the header needs: the user's role, whether they may run jobs, and how many
    approvals are pending."""
    actor = actor_for(request)
    return {
        "nav": nav,
        "nav_role": user_role(request.user),
        "nav_can_submit": actor.can(Scope.SUBMIT),
        "nav_pending_approvals": nav_pending_count(actor),
    }


def refusal_of(exc: GaitError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message, "hint": exc.hint, "details": exc.details}


def safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


class LoginView(auth_views.LoginView):
    template_name = "auth/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    pass


@login_required
def home(request: HttpRequest) -> HttpResponseRedirect:
    return redirect("jobs-list")


@login_required
@require_http_methods(["GET", "POST"])
def pack_verify_page(request: HttpRequest) -> HttpResponse:
    """Upload a pack zip and read the verification report (packs.services.pack_verify)."""
    from packs.services import pack_verify

    require_read(request)
    ctx: dict[str, Any] = page_context(request, "verify")
    status = 200
    if request.method == "POST":
        upload = request.FILES.get("pack")
        if upload is None:
            ctx["field_error"] = "Choose a pack zip to verify."
            status = 400
        elif upload.size > VERIFY_UPLOAD_MAX_BYTES:
            ctx["field_error"] = (
                f"The file is larger than {VERIFY_UPLOAD_MAX_BYTES // (1024 * 1024)} MB."
            )
            status = 400
        else:
            try:
                result = pack_verify(source=upload.file)
            except GaitError as exc:
                ctx["refusal"] = refusal_of(exc)
                status = exc.http_status
            else:
                ctx["report"] = result.as_dict()
                ctx["filename"] = upload.name
        if request.htmx:
            return render(request, "packs/verify.html#result", ctx, status=200)
    return render(request, "packs/verify.html", ctx, status=status)
