"""Login throttling (django-axes, docs/security.md "Deployment basics"): 30 wrong passwords in
a few seconds used to pass unthrottled on the dashboard's login and the admin's; now the
(username, address) pair is locked out with 429 after GAIT_LOGIN_FAILURE_LIMIT failures, the
right password included, until the cool-off ends or an admin unlocks it."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command

from tests.conftest import PASSWORD
from tests.web.conftest import Browser

pytestmark = pytest.mark.django_db

LOGIN_PAGES = ["/login/", "/admin/login/"]


def _attempt(page: str, username: str, password: str, **extra: Any) -> Any:
    browser = Browser(None)
    return browser.post(page, {"username": username, "password": password}, **extra)


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_thirty_wrong_passwords_in_seconds_are_throttled_and_the_right_one_is_refused_too(
    page: str, cast: Any, settings: Any
) -> None:
    cast.admin.is_staff = True
    cast.admin.save()
    limit = settings.AXES_FAILURE_LIMIT
    statuses = [_attempt(page, "ada_admin", f"guess-{i}").status_code for i in range(30)]

    assert statuses[: limit - 1] == [200] * (limit - 1)  # the form again, with an error
    assert set(statuses[limit:]) == {429}
    locked = _attempt(page, "ada_admin", PASSWORD)
    assert locked.status_code == 429
    assert b"<code>login_throttled</code>" in locked.content
    assert int(locked["Retry-After"]) == 15 * 60
    assert "_auth_user_id" not in locked.wsgi_request.session


def test_the_lockout_is_per_username_and_address(cast: Any, settings: Any) -> None:
    for i in range(settings.AXES_FAILURE_LIMIT):
        _attempt("/login/", "ada_admin", f"guess-{i}")
    assert _attempt("/login/", "ada_admin", PASSWORD).status_code == 429
    # another account from the same address, and the same account from another address
    assert _attempt("/login/", "vera_viewer", PASSWORD).status_code == 302
    elsewhere = _attempt("/login/", "ada_admin", PASSWORD, REMOTE_ADDR="10.9.8.7")
    assert elsewhere.status_code == 302


def test_an_admin_unlocks_a_locked_login(cast: Any, settings: Any) -> None:
    for i in range(settings.AXES_FAILURE_LIMIT):
        _attempt("/login/", "vera_viewer", f"guess-{i}")
    assert _attempt("/login/", "vera_viewer", PASSWORD).status_code == 429

    call_command("axes_reset_username", "vera_viewer", verbosity=0)

    assert _attempt("/login/", "vera_viewer", PASSWORD).status_code == 302


def test_the_admin_role_sees_and_clears_lockouts_in_django_admin(cast: Any, settings: Any) -> None:
    from axes.models import AccessAttempt

    for i in range(settings.AXES_FAILURE_LIMIT):
        _attempt("/login/", "vera_viewer", f"guess-{i}")
    attempt = AccessAttempt.objects.get(username="vera_viewer")
    cast.admin.is_staff = True
    cast.admin.save()
    admin = Browser(cast.admin)

    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and b"vera_viewer" in listing.content
    deleted = admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert _attempt("/login/", "vera_viewer", PASSWORD).status_code == 302


def test_a_successful_login_resets_the_count(cast: Any, settings: Any) -> None:
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        _attempt("/login/", "otto_operator", f"guess-{i}")
    assert _attempt("/login/", "otto_operator", PASSWORD).status_code == 302
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        _attempt("/login/", "otto_operator", f"again-{i}")
    assert _attempt("/login/", "otto_operator", PASSWORD).status_code == 302
