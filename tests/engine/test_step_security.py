"""Steps that touch the machine are opt-in, secrets go by reference, every duration is bounded
(docs/security.md). Each test replays an attack that used to work: a submit with an integrator
key, or an attempt run by the executor itself (real subprocesses, a real local HTTP server).
The same attacks against real workers are in test_workers_security.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
from typing import Any

import pytest
from rest_framework.test import APIClient

from gaitweb.demo import demo_allowlist_ensure
from gaitweb.lib.actors import Actor
from gaitweb.lib.errors import Forbidden, InvalidInput
from jobs.egress import address_category
from jobs.engine.runner import advance
from jobs.models import AllowedExecutable, AllowedHttpHost, Job, JobEvent, JobTemplate, StepRun
from jobs.recurring import template_create
from jobs.secret_store import Redactor, SecretMissing
from jobs.services import job_submit
from jobs.spec import duration_parse, spec_validate
from jobs.steps import StepContext, step_execute
from tests.api.conftest import error_code
from tests.api.conftest import make_key as make_key  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db

TOKEN = "tok_live_8f2b6c1e9a7d4b3f0e5c"  # a secret value: must never be stored anywhere


@pytest.fixture
def agent(make_key: Any) -> APIClient:  # noqa: F811
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key('submit,read,control')}")
    return client


def submit(client: APIClient, *steps: dict[str, Any], **spec: Any) -> Any:
    return client.post("/api/v1/jobs", {"spec": {"steps": list(steps), **spec}}, format="json")


def refusal(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert error_code(response) == code
    assert Job.objects.count() == 0  # nothing written
    return response.json()["error"]


def cmd(*argv: str, name: str = "c", retry: Any = None, **w: Any) -> dict[str, Any]:
    with_: dict[str, Any] = {"argv": list(argv)} if argv else {}
    step = {"name": name, "kind": "command", "with": {**with_, **w}}
    return {**step, "retry": retry} if retry else step


def http(url: str, name: str = "h", **w: Any) -> dict[str, Any]:
    return {"name": name, "kind": "http", "with": {"url": url, **w}}


def ctx_for(step_raw: dict[str, Any], job_id: str = "job-1") -> StepContext:
    """An attempt as the worker runs it, skipping submit's checks (a spec admitted earlier)."""
    from types import SimpleNamespace

    step = spec_validate({"steps": [step_raw]})["steps"][0]
    return StepContext(
        job=SimpleNamespace(job_id=job_id),
        step=step,
        step_index=0,
        attempt=1,
        idempotency_key=f"{job_id}/{step['name']}",
        outputs={},
    )


def which(name: str) -> str:
    from django.conf import settings

    path = shutil.which(name, path=settings.GAIT["COMMAND_PATH"])
    assert path
    return path


# --- command steps: off, then an allow-list, shell behind its own switch -----------------------


def test_a_command_step_is_refused_at_submit_while_command_steps_are_off(agent: APIClient) -> None:
    err = refusal(submit(agent, cmd("id")), 403, "command_steps_disabled")
    assert err["details"]["path"] == "steps[0].kind" and "GAIT_COMMAND_STEPS" in err["hint"]


def test_a_command_step_runs_only_an_allow_listed_executable(
    agent: APIClient, allow_commands: Any
) -> None:
    allow_commands()  # command steps on, nothing on the list
    err = refusal(submit(agent, cmd("id")), 403, "command_not_allowed")
    assert err["details"] == {"path": "steps[0].with.argv[0]", "executable": "id"}
    allow_commands("id")
    assert submit(agent, cmd("id")).status_code == 201


@pytest.mark.parametrize("argv0", ["./echo", "bin/echo", "/tmp/echo", "/usr/bin/../bin/echo"])
def test_an_allow_listed_name_is_not_satisfied_by_another_path(
    agent: APIClient, allow_commands: Any, argv0: str
) -> None:
    allow_commands("echo")
    err = refusal(submit(agent, cmd(argv0, "hi")), 403, "command_not_allowed")
    assert err["details"]["executable"] == argv0


def test_an_allow_listed_executable_runs_its_listed_file_whatever_the_working_directory(
    allow_commands: Any, tmp_path: Any
) -> None:
    allow_commands("echo")
    fake = tmp_path / "echo"  # an "echo" in the working directory (or first on a PATH)
    fake.write_text("#!/bin/sh\necho pwned\n")
    fake.chmod(0o755)
    r = step_execute(ctx_for(cmd("echo", "real", cwd=str(tmp_path))), timeout=5)
    assert r.ok and r.stdout == "real\n"
    r = step_execute(ctx_for(cmd(which("echo"), "by path")), timeout=5)  # the listed path
    assert r.ok and r.stdout == "by path\n"


def test_shell_true_needs_its_own_switch(agent: APIClient, allow_commands: Any) -> None:
    allow_commands("sh")  # even an allow-listed sh does not make shell: true acceptable
    step = {"name": "s", "kind": "command", "with": {"shell": True, "command": "id; env"}}
    err = refusal(submit(agent, step), 403, "command_shell_disabled")
    assert err["details"]["path"] == "steps[0].with.shell"
    allow_commands(shell=True)
    assert submit(agent, step).status_code == 201


def test_a_template_with_a_refused_command_step_is_not_saved(allow_commands: Any) -> None:
    with pytest.raises(Forbidden) as info:
        template_create(actor=Actor.system("ada"), name="t", spec={"steps": [cmd("id")]})
    assert info.value.code == "command_steps_disabled" and not JobTemplate.objects.exists()


@pytest.mark.django_db(transaction=True)  # the engine commits
def test_an_executable_removed_after_submit_is_refused_before_it_runs(
    allow_commands: Any, tmp_path: Any
) -> None:
    allow_commands("touch")
    marker = tmp_path / "ran"
    job = job_submit(
        actor=Actor.system("tester"),
        spec={"steps": [cmd("touch", str(marker), retry={"max_attempts": 3})]},
    )
    AllowedExecutable.objects.filter(name="touch").delete()  # the admin changed their mind
    assert advance(job.job_id) == "failed"
    job.refresh_from_db()
    assert job.status_reason_code == "command_not_allowed" and not marker.exists()
    (run,) = StepRun.objects.filter(job=job)  # refused: no retry
    assert run.error["type"] == "command_not_allowed" and run.error["retryable"] is False


def test_command_steps_turned_off_after_submit_are_refused_before_they_run(
    allow_commands: Any, settings: Any, tmp_path: Any
) -> None:
    marker = tmp_path / "ran"
    allow_commands("touch")
    ctx = ctx_for(cmd("touch", str(marker)))
    settings.GAIT = {**settings.GAIT, "COMMAND_STEPS": False}
    r = step_execute(ctx, timeout=5)
    assert r.error["type"] == "command_steps_disabled" and not marker.exists()


# --- a command's environment is an allow-list ---------------------------------------------------


def test_a_command_sees_none_of_the_workers_environment(
    allow_commands: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://gaitweb:hunter2@db/gaitweb")
    monkeypatch.setenv("SECRET_KEY", "django-insecure-key-of-the-worker")
    monkeypatch.setenv("GAIT_SECRET_BILLING_TOKEN", TOKEN)
    monkeypatch.setenv("HOME", "/root")
    allow_commands("env")
    r = step_execute(ctx_for(cmd("env", env={"REGION": "eu-1"})), timeout=5)
    seen = dict(line.split("=", 1) for line in r.stdout.splitlines())
    for leaked in ("DATABASE_URL", "SECRET_KEY", "GAIT_SECRET_BILLING_TOKEN", "HOME"):
        assert leaked not in seen
    assert "hunter2" not in r.stdout and TOKEN not in r.stdout
    assert seen["PATH"] == settings.GAIT["COMMAND_PATH"] and seen["REGION"] == "eu-1"
    assert seen["GAIT_JOB_ID"] == "job-1" and seen["GAIT_IDEMPOTENCY_KEY"] == "job-1/c"


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "GAIT_SECRET_X", "BASH_ENV", "ld_audit", "1X"]
)
def test_a_spec_cannot_set_the_loaders_the_shells_or_gaitwebs_variables(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        spec_validate({"steps": [cmd("echo", env={name: "/tmp/evil.so"})]})
    assert info.value.code == "spec_env_reserved"
    assert info.value.details["path"] == f"steps[0].with.env.{name}"


# --- http steps: no loopback, private, link-local, multicast or metadata destinations ---------


@pytest.mark.parametrize(
    ("url", "category"),
    [
        ("http://127.0.0.1:8000/admin/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://localhost:8080/", "loopback"),
        ("http://api.localhost/", "loopback"),
        ("http://169.254.169.254/latest/meta-data/iam/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://10.0.0.5/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://0.0.0.0:8000/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
    ],
)
def test_an_http_step_to_an_internal_address_is_refused_at_submit(
    agent: APIClient, url: str, category: str
) -> None:
    err = refusal(submit(agent, http(url)), 403, "http_destination_forbidden")
    assert err["details"]["path"] == "steps[0].with.url"
    assert err["details"]["category"] == category


@pytest.mark.parametrize(
    ("url", "category"),
    [
        ("http://127.0.0.1:8000/", "loopback"),
        ("http://[::1]:8000/", "loopback"),
        ("http://localhost:8000/", "loopback"),  # a name: refused after DNS resolution
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://10.1.2.3/", "private"),
    ],
)
def test_an_http_step_to_an_internal_address_is_refused_when_it_runs(
    url: str, category: str
) -> None:
    r = step_execute(ctx_for(http(url)), timeout=2)
    assert r.status == "failed" and r.error["type"] == "http_destination_forbidden"
    assert r.error["category"] == category and r.error["retryable"] is False


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("127.0.0.53", "loopback"),
        ("::1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 for 169.254.169.254
        ("100.100.100.200", "metadata"),
        ("169.254.0.7", "link_local"),
        ("fe80::1%eth0", "link_local"),
        ("172.16.0.1", "private"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "reserved"),  # carrier-grade NAT
        ("192.0.2.1", "private"),  # documentation range: not routable
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_categories(address: str, category: str | None) -> None:
    assert address_category(address) == category


def test_an_allow_listed_internal_host_is_reached(
    agent: APIClient, servers: Any, allow_http_host: Any
) -> None:
    port, seen = servers()
    url = f"http://127.0.0.1:{port}/invoices/42"
    assert submit(agent, http(url)).status_code == 403  # not yet on the list
    Job.objects.all().delete()
    allow_http_host("127.0.0.1", port)
    assert submit(agent, http(url)).status_code == 201
    r = step_execute(ctx_for(http(url)), timeout=5)
    assert r.ok and r.output["json"] == {"path": "/invoices/42", "host": f"127.0.0.1:{port}"}
    other = f"http://127.0.0.1:{port - 1}/"  # the same host on another port: not on the list
    assert step_execute(ctx_for(http(other)), timeout=2).error["type"] == (
        "http_destination_forbidden"
    )


def test_a_redirect_from_an_allow_listed_server_to_the_loopback_is_refused(
    servers: Any, allow_http_host: Any
) -> None:
    port, seen = servers()
    allow_http_host("127.0.0.1", port)
    for target in (f"http://localhost:{port}/private", f"http://[::1]:{port}/private"):
        r = step_execute(ctx_for(http(f"http://127.0.0.1:{port}/redirect?to={target}")), timeout=5)
        assert r.error["type"] == "http_destination_forbidden", r.error
        assert r.error["category"] == "loopback" and r.error["host"] in ("localhost", "::1")
    assert [s["path"] for s in seen] == [f"/redirect?to=http://localhost:{port}/private"] + [
        f"/redirect?to=http://[::1]:{port}/private"
    ]  # never /private


def test_redirects_within_the_allow_list_are_followed_and_credentials_stay_on_their_origin(
    servers: Any, allow_http_host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAIT_SECRET_BILLING_TOKEN", f"Bearer {TOKEN}")
    a, seen_a = servers()
    b, seen_b = servers()
    allow_http_host("127.0.0.1", a)
    allow_http_host("127.0.0.1", b)
    auth = {"Authorization": {"secret": "BILLING_TOKEN"}}
    r = step_execute(
        ctx_for(http(f"http://127.0.0.1:{a}/redirect?to=/landed", headers=auth)), timeout=5
    )
    assert r.ok and r.output["json"]["path"] == "/landed"
    assert [s["auth"] for s in seen_a] == [f"Bearer {TOKEN}"] * 2  # same origin: kept
    r = step_execute(
        ctx_for(http(f"http://127.0.0.1:{a}/redirect?to=http://127.0.0.1:{b}/x", headers=auth)),
        timeout=5,
    )
    assert r.ok and seen_b == [{"path": "/x", "host": f"127.0.0.1:{b}", "auth": None}]


def test_too_many_redirects_stop(servers: Any, allow_http_host: Any, settings: Any) -> None:
    settings.GAIT = {**settings.GAIT, "HTTP_MAX_REDIRECTS": 2}
    port, seen = servers()
    allow_http_host("127.0.0.1", port)
    loop = f"http://127.0.0.1:{port}/redirect?to=http://127.0.0.1:{port}/redirect?to=/"
    r = step_execute(ctx_for(http(f"http://127.0.0.1:{port}/redirect?to={loop}")), timeout=5)
    assert r.error["type"] == "http_too_many_redirects" and len(seen) == 3


def test_the_connection_goes_to_the_address_that_was_checked(
    servers: Any, allow_http_host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers one address for the check and another right after. The
    request goes to the checked address, whatever the resolver says next."""
    port, seen = servers()  # listens on 127.0.0.1 only
    allow_http_host("rebind.test", port)
    real = socket.getaddrinfo
    answers = iter(["127.0.0.2", "127.0.0.1", "127.0.0.1"])
    asked: list[str] = []

    def resolver(host: Any, *args: Any, **kwargs: Any) -> Any:  # the outside DNS service
        if host == "rebind.test":
            asked.append(host)
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    r = step_execute(ctx_for(http(f"http://rebind.test:{port}/")), timeout=2)
    assert r.error["type"] == "network_error"  # 127.0.0.2: nobody listens there
    assert seen == [] and asked == ["rebind.test"]


def test_a_response_larger_than_the_limit_is_not_read(
    servers: Any, allow_http_host: Any, settings: Any
) -> None:
    settings.GAIT = {**settings.GAIT, "HTTP_RESPONSE_MAX_BYTES": 64 * 1024}
    port, _ = servers()
    allow_http_host("127.0.0.1", port)
    r = step_execute(ctx_for(http(f"http://127.0.0.1:{port}/big")), timeout=5)
    assert r.error["type"] == "http_response_too_large" and not r.error["retryable"]


# --- secrets by reference ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "path"),
    [
        (http("https://billing.example/", headers={"Authorization": f"Bearer {TOKEN}"}),
         "steps[0].with.headers.Authorization"),
        (http("https://billing.example/", headers={"X-Api-Key": TOKEN}),
         "steps[0].with.headers.X-Api-Key"),
        (http("https://billing.example/", headers={"Cookie": f"session={TOKEN}"}),
         "steps[0].with.headers.Cookie"),
        (http("https://billing.example/", headers={"X-Auth-Token": TOKEN}),
         "steps[0].with.headers.X-Auth-Token"),
        (http(f"https://bot:{TOKEN}@billing.example/"), "steps[0].with.url"),
        (cmd("deploy", env={"GITHUB_TOKEN": TOKEN}), "steps[0].with.env.GITHUB_TOKEN"),
    ],
)  # fmt: skip
def test_a_literal_credential_in_a_spec_is_refused_with_a_hint_to_use_a_reference(
    agent: APIClient, step: dict[str, Any], path: str
) -> None:
    err = refusal(submit(agent, step), 400, "secret_literal_refused")
    assert err["details"]["path"] == path and '"secret"' in err["hint"]
    assert TOKEN not in json.dumps(err)


def test_a_spec_keeps_only_the_reference(agent: APIClient, allow_commands: Any) -> None:
    allow_commands("env")
    r = submit(
        agent,
        http("https://billing.example/", headers={"Authorization": {"secret": "BILLING_TOKEN"}}),
        cmd("env", name="c", env={"TOKEN": {"secret": "BILLING_TOKEN"}, "REGION": "eu-1"}),
    )
    assert r.status_code == 201, r.content
    job = Job.objects.get()
    assert job.spec["steps"][0]["with"]["headers"] == {"Authorization": {"secret": "BILLING_TOKEN"}}
    assert job.spec["steps"][1]["with"]["env"] == {
        "TOKEN": {"secret": "BILLING_TOKEN"},
        "REGION": "eu-1",  # a literal that is not a credential is kept, and shown
    }
    for bad in ({"secret": "lower"}, {"secret": "A", "extra": 1}, {"secret": 7}):
        with pytest.raises(InvalidInput):
            spec_validate({"steps": [cmd("env", env={"TOKEN": bad})]})


@pytest.mark.django_db(transaction=True)  # the engine commits
def test_a_secret_echoed_by_a_command_is_redacted_from_everything_stored(
    agent: APIClient, allow_commands: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process; test_workers_security.py runs the same attack through a real worker and
    also looks at the /steps API and a built pack."""

    monkeypatch.setenv("GAIT_SECRET_BILLING_TOKEN", TOKEN)
    allow_commands("sh")
    script = 'echo "token=$TOKEN"; echo "$TOKEN" >&2; exit 3'
    job = job_submit(
        actor=Actor.system("tester"),
        spec={"steps": [cmd("sh", "-c", script, env={"TOKEN": {"secret": "BILLING_TOKEN"}})]},
    )
    assert advance(job.job_id) == "failed"
    (run,) = StepRun.objects.filter(job=job)
    assert run.stdout == "token=[secret:BILLING_TOKEN]\n"
    assert run.stderr == "[secret:BILLING_TOKEN]\n"
    assert "[secret:BILLING_TOKEN]" in run.error["message"]
    stored = json.dumps(
        [
            list(StepRun.objects.filter(job=job).values()),
            list(JobEvent.objects.filter(job=job).values()),
            list(Job.objects.filter(pk=job.pk).values()),
        ],
        default=str,
    )
    assert TOKEN not in stored


def test_a_secret_cut_by_the_tail_limit_leaves_no_part_behind(
    allow_commands: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAIT_SECRET_BILLING_TOKEN", TOKEN)
    settings.GAIT = {**settings.GAIT, "LOG_TAIL_MAX_BYTES": 100}
    allow_commands("sh")
    # the tail's first bytes fall inside the secret: its last 10 characters would survive a cut
    script = 'head -c 5000 /dev/zero | tr "\\0" a; printf "%s" "$TOKEN"; head -c 90 /dev/zero | tr "\\0" b'
    r = step_execute(
        ctx_for(cmd("sh", "-c", script, env={"TOKEN": {"secret": "BILLING_TOKEN"}})), timeout=5
    )
    assert r.ok and len(r.stdout) == 100 and r.stdout.endswith("]" + "b" * 90)
    assert TOKEN[-10:] not in r.stdout and TOKEN[-10:] not in r.output["stdout"]


def test_a_secret_echoed_by_an_http_service_is_redacted_from_the_output(
    servers: Any, allow_http_host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAIT_SECRET_BILLING_TOKEN", f"Bearer {TOKEN}")
    port, seen = servers()
    allow_http_host("127.0.0.1", port)
    step = http(
        f"http://127.0.0.1:{port}/echo-auth", headers={"Authorization": {"secret": "BILLING_TOKEN"}}
    )
    r = step_execute(ctx_for(step), timeout=5)
    assert seen[0]["auth"] == f"Bearer {TOKEN}"  # the service got the real value
    assert r.ok and r.output["json"] == {"you_sent": "[secret:BILLING_TOKEN]"}
    assert TOKEN not in r.stdout and TOKEN not in json.dumps(r.output)


@pytest.mark.django_db(transaction=True)  # the engine commits
def test_a_missing_secret_fails_the_attempt_at_once_naming_the_secret(
    allow_commands: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("GAIT_SECRET_BILLING_TOKEN", raising=False)
    allow_commands("touch")
    marker = tmp_path / "ran"
    job = job_submit(
        actor=Actor.system("tester"),
        spec={
            "steps": [
                cmd(
                    "touch",
                    str(marker),
                    env={"TOKEN": {"secret": "BILLING_TOKEN"}},
                    retry={"max_attempts": 5},
                )
            ]
        },
    )
    assert advance(job.job_id) == "failed"
    job.refresh_from_db()
    assert job.status_reason_code == "secret_missing" and not marker.exists()
    (run,) = StepRun.objects.filter(job=job)
    assert run.error["secret"] == "BILLING_TOKEN" and run.error["retryable"] is False
    failed = JobEvent.objects.get(job=job, type="failed")
    assert failed.reason_code == "secret_missing"
    assert failed.payload["error"]["secret"] == "BILLING_TOKEN"


# --- every duration is bounded --------------------------------------------------------------------


def _approval(**w: Any) -> dict[str, Any]:
    return {"name": "ok", "kind": "approval", "with": w}


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"deadline": "99999999999d", "steps": []}, "deadline"),
        ({"deadline": 1e300, "steps": []}, "deadline"),
        ({"deadline": "9" * 400 + "s", "steps": []}, "deadline"),
        ({"steps": [{"name": "z", "kind": "sleep", "with": {"duration": "400d"}}]},
         "steps[0].with.duration"),
        ({"steps": [{"name": "w", "kind": "wait_event", "with": {"signal": "s", "timeout": "99999999999d"}}]},
         "steps[0].with.timeout"),
        ({"steps": [_approval(expires_in="99999999999d")]}, "steps[0].with.expires_in"),
        ({"steps": [{"name": "p", "kind": "python", "with": {"function": "noop"},
                     "retry": {"initial_interval": "99999999999d", "max_interval": "99999999999d"}}]},
         "steps[0].retry.initial_interval"),
        ({"steps": [{"name": "p", "kind": "python", "with": {"function": "noop"},
                     "retry": {"max_interval": "99999999999d"}}]},
         "steps[0].retry.max_interval"),
        ({"steps": [{"name": "p", "kind": "python", "with": {"function": "noop"},
                     "timeout": "99999999999d"}]},
         "steps[0].timeout"),
    ],
)  # fmt: skip
def test_a_huge_duration_is_a_400_with_a_reason_code_and_a_path(
    agent: APIClient, spec: dict[str, Any], path: str
) -> None:
    r = agent.post(
        "/api/v1/jobs",
        data=json.dumps({"spec": spec}),
        content_type="application/json",
    )
    err = refusal(r, 400, "spec_duration_too_long")
    assert err["details"]["path"] == path and err["details"]["max_seconds"] > 0


def test_an_integer_too_large_for_a_float_is_a_duration_too_long() -> None:
    with pytest.raises(InvalidInput) as info:  # YAML or a Python caller: JSON refuses it earlier
        duration_parse(10**400, "deadline")
    assert info.value.code == "spec_duration_too_long"


def test_the_longest_allowed_deadline_is_accepted(agent: APIClient, settings: Any) -> None:
    longest = settings.GAIT["SPEC_DURATION_MAX"]
    r = submit(agent, {"name": "z", "kind": "sleep", "with": {"duration": 1}}, deadline=longest)
    assert r.status_code == 201, r.content


# --- the allow-lists in Django admin ----------------------------------------------------------


def test_admins_manage_the_allow_lists_in_django_admin(cast: Any) -> None:
    from tests.approvals.test_admin import post, staff_client

    client = staff_client(cast.admin)
    add_exe, add_host = "/admin/jobs/allowedexecutable/add/", "/admin/jobs/allowedhttphost/add/"
    assert post(client, add_exe, {"name": "echo", "path": "", "note": ""}).status_code == 302
    row = AllowedExecutable.objects.get(name="echo")
    assert row.path == which("echo") and row.created_by == cast.admin.username
    assert post(client, add_exe, {"name": "./git", "path": ""}).status_code == 200
    r = post(client, add_exe, {"name": "git", "path": "/usr/bin/../../tmp/git"})
    assert r.status_code == 200 and list(AllowedExecutable.objects.values_list("name")) == [
        ("echo",)
    ]
    assert post(client, add_host, {"host": "[::1]", "port": "8080"}).status_code == 302
    assert AllowedHttpHost.objects.get().host == "::1"
    assert staff_client(cast.operator).get("/admin/jobs/allowedexecutable/").status_code == 403


def test_the_demo_allow_list_exists_only_in_demo_mode(demo_mode: None, settings: Any) -> None:
    assert list(AllowedExecutable.objects.values_list("name", flat=True)) == ["echo"]
    AllowedExecutable.objects.all().delete()
    settings.GAIT = {**settings.GAIT, "DEMO": False}
    demo_allowlist_ensure()
    assert not AllowedExecutable.objects.exists()


def test_os_environ_is_untouched_by_resolving_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAIT_SECRET_A_B", "value-of-a-b")
    before = dict(os.environ)
    red = Redactor()
    assert red.resolve({"secret": "A_B"}) == "value-of-a-b" and red.resolve("plain") == "plain"
    assert red.text("x value-of-a-b y") == "x [secret:A_B] y"
    with pytest.raises(SecretMissing) as info:
        red.resolve({"secret": "NOPE"})
    assert "NOPE" in str(info.value) and dict(os.environ) == before


def test_a_secret_that_is_not_a_valid_header_value_is_not_quoted_in_the_error(
    servers: Any, allow_http_host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAIT_SECRET_BILLING_TOKEN", f"{TOKEN}\nX-Injected: ü")
    port, seen = servers()
    allow_http_host("127.0.0.1", port)
    step = http(f"http://127.0.0.1:{port}/", headers={"X-Token": {"secret": "BILLING_TOKEN"}})
    r = step_execute(ctx_for(step), timeout=5)
    assert r.error["type"] == "request_invalid" and seen == []
    assert TOKEN not in json.dumps(r.error)
