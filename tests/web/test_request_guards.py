"""The dashboard's request guards (gaitweb/lib/middleware.py, docs/security.md "Every input is
bounded"): a NUL character anywhere a dashboard or admin view reads it is a 400 with a reason
code (it was a 500 on PostgreSQL, which cannot store NUL), and a body over the limit is refused
by its Content-Length before a byte is read or spooled."""

from __future__ import annotations

import re
import socket
import time
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from approvals.models import ApprovalRequest
from gaitweb.lib.actors import Actor
from jobs.models import Job, JobEvent
from jobs.recurring import template_create
from tests.web.conftest import Browser, agent_job

pytestmark = pytest.mark.django_db

NUL = "\x00"


def refused_for_nul(response: Any) -> bool:
    return response.status_code == 400 and b"<code>nul_character</code>" in response.content


def _journal() -> tuple[int, list[tuple[str, str]]]:
    return JobEvent.objects.count(), sorted(Job.objects.values_list("job_id", "status"))


# Every dashboard page and the query parameters and form fields it reads (gaitweb/web_urls.py).
QUERIES = {
    "/jobs/": ["status", "identity", "label", "q", "after", "fp", "fragment"],
    "/jobs/nul-1/": ["before", "fp"],
    "/jobs/nul-1/chain/": ["fp"],
    "/jobs/new/": ["template"],
    "/templates/": ["fp", "fragment"],
    "/approvals/": ["fp"],
    "/packs/verify/": ["next"],
    "/login/": ["next"],
}
FORMS = {
    "/jobs/new/": {"spec": "steps: []", "job_id": "x", "labels": "a=b", "identity": "i",
                   "policy": "", "template": ""},
    "/jobs/nul-1/pause/": {"reason": "r", "next": "/jobs/", "from": "list"},
    "/jobs/nul-1/stop/": {"reason": "r", "confirm": "emergency-stop"},
    "/jobs/nul-1/pack/": {"next": "/jobs/"},
    "/approvals/REQ/decide/": {"decision": "approve", "reason": "r", "from": "job"},
    "/templates/nul-tpl/pause/": {"from": "list"},
    "/packs/verify/": {"public_key": "k", "allow_unsigned": "on"},
    "/logout/": {"next": "/"},
}  # fmt: skip


@pytest.fixture
def scene(cast: Any) -> dict[str, str]:
    agent_job("nul-1", "running")
    agent_job("nul-2", "decision_needed")
    template_create(
        actor=Actor.system("t"),
        template_id="nul-tpl",
        name="t",
        spec={"steps": [{"name": "a", "kind": "python", "with": {"function": "noop"}}]},
        identity="agent.t",
    )
    request = ApprovalRequest.objects.filter(job__job_id="nul-2").first()
    return {"REQ": request.request_id if request else "req-none"}


def test_a_nul_in_any_dashboard_query_parameter_is_a_400_with_a_reason_code(cast, scene):
    b = Browser(cast.admin)
    for path, params in QUERIES.items():
        for name in params:
            response = b.get(path, **{name: f"a{NUL}b"})
            assert refused_for_nul(response), (path, name, response.status_code)
    # the issue's own example, and a NUL in a parameter's name
    assert refused_for_nul(b.client.get("/jobs/?identity=%00"))
    assert refused_for_nul(b.client.get("/jobs/?a%00=1"))


def test_a_nul_in_any_dashboard_form_field_is_a_400_and_changes_nothing(cast, scene):
    b = Browser(cast.admin)
    before = _journal()
    for path, fields in FORMS.items():
        path = path.replace("REQ", scene["REQ"])
        for name in fields:
            data = {**fields, name: f"{fields[name]}{NUL}"}
            for htmx in (False, True):
                response = b.post(path, data, htmx=htmx)
                assert refused_for_nul(response), (path, name, response.status_code)
    assert _journal() == before
    assert Job.objects.get(job_id="nul-1").status == "running"


def test_a_nul_in_a_path_is_a_400_for_every_dashboard_url(cast, scene):
    """Every URL pattern outside the API, so a page added later is covered too."""
    b = Browser(cast.admin)
    routes: list[str] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                if not route.startswith(("api/", "admin/")):
                    walk(p.url_patterns, route)
            elif isinstance(p, URLPattern) and "<" in route:
                routes.append(route)

    walk(get_resolver().url_patterns, "")
    assert len(routes) >= 8  # job, chain, pack, action, template x2, decide, download …
    for route in routes:
        url = "/" + re.sub(r"<(?:str:|path:)?\w+>", "a%00b", route)
        for method in (b.client.get, b.client.post):
            response = method(url)
            assert refused_for_nul(response), (method.__name__, url, response.status_code)
    # the example
    assert refused_for_nul(b.post("/approvals/a%00/decide/", {"decision": "approve"}))


def test_a_nul_in_the_login_form_or_the_admin_is_a_400(cast, scene):
    anonymous = Browser(None)
    for data in ({"username": f"ada{NUL}", "password": "x"}, {"username": "a", "password": NUL}):
        assert refused_for_nul(anonymous.post("/login/", data))
        assert refused_for_nul(anonymous.post("/admin/login/", data))
    cast.admin.is_staff = True
    cast.admin.save()
    admin = Browser(cast.admin)
    assert refused_for_nul(admin.get("/admin/jobs/job/", q=f"x{NUL}"))
    assert refused_for_nul(admin.client.get("/admin/approvals/policy/a%00/change/"))


def test_a_nul_in_a_cookie_is_a_400_without_touching_the_session(cast):
    # a quoted cookie value's octal escape unquotes to a NUL (http.cookies)
    response = Browser(None).client.get("/jobs/", HTTP_COOKIE='sessionid="aaaaaaaaaaaa\\000"')
    assert refused_for_nul(response)


def test_text_without_nul_passes_the_guard(cast, scene):
    b = Browser(cast.admin)
    assert b.get("/jobs/", identity="agent.smith").status_code == 200
    assert b.post("/jobs/nul-1/pause/", {"reason": "maintenance"}).status_code == 302
    assert Job.objects.get(job_id="nul-1").status == "paused"


def test_the_alias_bomb_pasted_into_run_a_job_is_refused_inline(cast):
    from tests.hostile import REFUSAL_PEAK_BYTES, cheaply, spec_alias_bomb

    b = Browser(cast.operator)
    response, _, peak = cheaply(
        lambda: b.post("/jobs/new/", {"spec": spec_alias_bomb(), "job_id": "bomb-1"})
    )
    assert response.status_code == 400 and peak < REFUSAL_PEAK_BYTES
    assert "may not use YAML anchors or aliases" in response.content.decode()
    assert not Job.objects.filter(job_id="bomb-1").exists()


def test_a_dashboard_form_over_the_body_limit_is_413(cast, settings):
    settings.GAIT = {**settings.GAIT, "REQUEST_MAX_BYTES": 2048}
    b = Browser(cast.operator)
    response = b.post("/jobs/new/", {"spec": "#" * 4096, "job_id": "big-1"})
    assert response.status_code == 413
    assert b"<code>request_too_large</code>" in response.content
    assert not Job.objects.filter(job_id="big-1").exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/packs/verify/", "/api/v1/packs/verify"])
def test_an_oversized_upload_is_refused_by_content_length_before_it_is_spooled(
    path, live_server, cast, settings, tmp_path
):
    """A streaming client sends the headers of a 10 GB multipart upload and 64 KB of its body,
    then waits: the 413 arrives while the rest is still unsent, so the server read only what
    its socket buffered, and no temporary upload file was ever created."""
    spool = tmp_path / "spool"
    spool.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(spool)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # any upload that got read would spool at once
    from tests.conftest import PASSWORD

    session = Browser(None).client
    assert session.login(username=cast.viewer.username, password=PASSWORD)
    cookie = f"sessionid={session.cookies['sessionid'].value}"
    boundary = "gaitwebboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="pack"; filename="big.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    host, port = live_server.url.removeprefix("http://").split(":")
    declared = 10 * 1024**3
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {declared}\r\n\r\n"
            ).encode()
            + head
            + b"\0" * 65536
        )
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        waited = time.monotonic() - started
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413"), reply[:300]
    assert waited < 5
    assert list(spool.iterdir()) == []
