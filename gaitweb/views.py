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

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required as django_login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from approvals.selectors import decision_pending_count
from gaitweb.lib import reasons
from gaitweb.lib.actors import Actor, Scope
from gaitweb.lib.errors import GaitError, dashboard_refusal
from gaitweb.lib.middleware import body_limit, upload_max_bytes
from gaitweb.lib.roles import user_role
from packs.keys import public_key_parse
from packs.services import pack_verify


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
    """The header's count of what ``actor`` may see waiting for a reviewer: pending approval
    requests and unanswered decision-needed checkpoints (approvals.selectors). Fragments swap
    it out of band (``_nav_count.html``)."""

    return decision_pending_count(actor=actor)


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


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any
) -> HttpResponse:
    """django-axes' lockout answer (settings.AXES_LOCKOUT_CALLABLE), for the dashboard's login
    and the admin's alike: 429 with a reason code and ``Retry-After``. The cool-off starts again
    with every attempt made while locked out, so waiting is the only way past it."""
    from axes.helpers import get_cool_off

    cool_off = get_cool_off(request)
    seconds = int(cool_off.total_seconds()) if cool_off else 0
    context = {
        "code": reasons.LOGIN_THROTTLED,
        "minutes": max(1, round(seconds / 60)) if seconds else None,
        "failure_limit": settings.AXES_FAILURE_LIMIT,
    }
    response = render(request, "auth/locked_out.html", context, status=429)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response


@login_required
def home(request: HttpRequest) -> HttpResponseRedirect:
    return redirect("jobs-list")


@body_limit(upload_max_bytes)  # a pack upload: refused by Content-Length before it is read
@login_required
@require_http_methods(["GET", "POST"])
def pack_verify_page(request: HttpRequest) -> HttpResponse:
    """Upload a pack zip and read the verification report (packs.services.pack_verify).

    The verdict is green only for a pack a trusted key signed; a pack accepted because the
    user ticked "allow unsigned" says so in amber, and no check is painted green next to a
    failing pack (templates/packs/verify.html)."""

    require_read(request)
    ctx: dict[str, Any] = page_context(request, "verify")
    status = 200
    if request.method == "POST":
        upload = request.FILES.get("pack")
        allow_unsigned = request.POST.get("allow_unsigned") == "on"
        key_text = request.POST.get("public_key", "").strip()
        ctx["allow_unsigned"] = allow_unsigned
        ctx["public_key"] = key_text
        if upload is None:
            ctx["field_error"] = "Choose a pack zip to verify."
            status = 400
        else:
            try:
                # text only (PEM, base64 or hex), never raw key bytes; a key is under 200 bytes
                keys = (
                    [
                        public_key_parse(
                            key_text[:4096].encode("ascii", "replace"),
                            source="public key",
                            raw_ok=False,
                        )
                    ]
                    if key_text
                    else []
                )
                result = pack_verify(
                    source=upload.file, allow_unsigned=allow_unsigned, public_keys=keys
                )
            except GaitError as exc:
                ctx["refusal"] = dashboard_refusal(exc)
                status = exc.http_status
            else:
                ctx["report"] = result.as_dict()
                ctx["filename"] = upload.name
        if request.htmx:
            return render(request, "packs/verify.html#result", ctx, status=200)
    return render(request, "packs/verify.html", ctx, status=status)
