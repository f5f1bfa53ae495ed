"""Django admin for policies: validation on save with line and key, versions, digest, and the
"try an intent" page; revocations through the service; approval requests read-only."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from approvals.models import (
    ApprovalRequest,
    Identity,
    IdentityPolicy,
    Policy,
    PolicyVersion,
    RevokedIdentity,
)
from approvals.policies import policy_save
from approvals.policy_format import policy_parse
from approvals.services import approval_request_create
from gaitweb.lib.actors import Actor
from jobs import services as jobs
from jobs.management.commands.gait import main

pytestmark = pytest.mark.django_db

GOOD = """\
default_verdict: allow
rules:
  - name: block-delete
    priority: 10
    effect: block
    match: {tool_names: [tool.delete]}
    reason_codes: [destructive_tool_blocked]
"""


def staff_client(user: Any) -> Client:
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


class _HiddenInputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.values[a["name"]] = a.get("value") or ""


def post(client: Client, url: str, data: dict[str, Any]) -> Any:
    """Submit the page's form as a browser would: GET it, keep its hidden inputs (CSRF token,
    inline management form), fill in ``data``."""
    page = client.get(url)
    hidden = _HiddenInputs()
    if page.status_code == 200:
        hidden.feed(page.content.decode())
    hidden.values.setdefault(
        "csrfmiddlewaretoken",
        client.cookies["csrftoken"].value if "csrftoken" in client.cookies else "",
    )
    return client.post(url, {**hidden.values, **data})


def test_adding_a_policy_stores_version_one_with_its_digest(cast: Any) -> None:
    client = staff_client(cast.admin)
    response = post(
        client,
        reverse("admin:approvals_policy_add"),
        {"name": "billing", "description": "", "source": GOOD},
    )
    assert response.status_code == 302
    policy = Policy.objects.get(name="billing")
    assert (policy.current.version, policy.current.digest, policy.current.author) == (
        1,
        policy_parse(GOOD).digest,
        "ada_admin",
    )


def test_saving_an_edit_creates_a_new_version_and_keeps_the_old_digest_resolvable(
    cast: Any,
) -> None:
    client = staff_client(cast.admin)
    first = policy_save(actor=cast.actor("admin"), name="billing", source=GOOD)
    edited = GOOD.replace("effect: block", "effect: require_approval")
    url = reverse("admin:approvals_policy_change", args=[first.policy_id])
    assert post(client, url, {"description": "", "source": edited}).status_code == 302
    versions = list(
        PolicyVersion.objects.filter(policy__name="billing")
        .order_by("version")
        .values_list("version", "digest")
    )
    assert versions == [(1, first.digest), (2, policy_parse(edited).digest)]
    page = client.get(url).content.decode()
    assert (
        policy_parse(edited).digest in page and first.digest in page
    )  # current digest and the versions inline


def test_a_bad_policy_is_refused_on_save_naming_the_line_and_the_key(cast: Any) -> None:
    client = staff_client(cast.admin)
    bad = GOOD + "    rate_limit: {requests: 3}\n"
    response = post(
        client,
        reverse("admin:approvals_policy_add"),
        {"name": "billing", "description": "", "source": bad},
    )
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors["source"])
    assert "line 8" in errors and "'rate_limit'" in errors and "not supported by gaitweb" in errors
    assert not Policy.objects.exists()


def test_the_alias_bomb_is_refused_on_save_in_admin_quickly(cast: Any) -> None:
    from tests.hostile import REFUSAL_PEAK_BYTES, cheaply, policy_alias_bomb

    client = staff_client(cast.admin)
    response, _, peak = cheaply(
        lambda: post(
            client,
            reverse("admin:approvals_policy_add"),
            {"name": "bomb", "description": "", "source": policy_alias_bomb()},
        )
    )
    assert response.status_code == 200 and peak < REFUSAL_PEAK_BYTES
    errors = " ".join(response.context["adminform"].form.errors["source"])
    assert "line 4" in errors and "may not use YAML anchors or aliases" in errors
    assert not Policy.objects.exists()


def test_try_an_intent_shows_the_verdict_reasons_and_rules(cast: Any) -> None:
    client = staff_client(cast.admin)
    version = policy_save(actor=cast.actor("admin"), name="billing", source=GOOD)
    url = reverse("admin:approvals_policy_try", args=[version.policy_id])
    response = post(
        client,
        url,
        {
            "intent": json.dumps(
                {"tool_name": "tool.delete", "targets": [{"kind": "path", "value": "/x"}]}
            )
        },
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert '<span id="verdict">block</span>' in page
    assert "destructive_tool_blocked" in page and "block-delete" in page


def test_try_an_intent_explains_a_malformed_intent(cast: Any) -> None:
    client = staff_client(cast.admin)
    version = policy_save(actor=cast.actor("admin"), name="billing", source=GOOD)
    response = post(
        client,
        reverse("admin:approvals_policy_try", args=[version.policy_id]),
        {"intent": '{"args": {}}'},
    )
    assert response.status_code == 200
    assert "tool_name: is required" in response.content.decode()
    assert 'id="verdict"' not in response.content.decode()


def test_staff_without_the_admin_role_cannot_edit_policies(cast: Any) -> None:
    client = staff_client(cast.operator)
    response = post(
        client,
        reverse("admin:approvals_policy_add"),
        {"name": "x", "description": "", "source": GOOD},
    )
    assert response.status_code == 403
    assert not Policy.objects.exists()


def test_revoking_an_identity_in_admin_records_who_revoked_it(cast: Any) -> None:
    client = staff_client(cast.admin)
    response = post(
        client,
        reverse("admin:approvals_revokedidentity_add"),
        {"identity": "agent.billing", "reason": "key leaked"},
    )
    assert response.status_code == 302
    revoked = RevokedIdentity.objects.get(identity="agent.billing")
    assert (revoked.reason, revoked.revoked_by) == ("key leaked", "ada_admin")


def test_approval_requests_are_read_only_in_admin(cast: Any) -> None:
    client = staff_client(cast.admin)
    jobs.job_submit(actor=Actor.system("agent"), job_id="job_adm")
    req = approval_request_create(actor=Actor.system("engine"), job="job_adm", summary="ok?")
    url = reverse("admin:approvals_approvalrequest_change", args=[req.pk])
    assert client.get(url).status_code == 200
    response = post(client, url, {"status": "approved"})
    assert response.status_code == 403
    assert ApprovalRequest.objects.get(pk=req.pk).status == "pending"


def test_the_identity_list_marks_the_revoked_identities(cast: Any) -> None:
    Identity.objects.create(name="agent.billing")
    Identity.objects.create(name="agent.search")
    RevokedIdentity.objects.create(identity="agent.billing", reason="key leaked")
    page = staff_client(cast.admin).get(reverse("admin:approvals_identity_changelist"))
    assert page.status_code == 200
    rows = {
        row.split('<th class="field-name">', 1)[1].split("</a>", 1)[0].rsplit(">", 1)[1]: row
        for row in page.content.decode().split("<tr")
        if 'class="field-name"' in row
    }
    assert sorted(rows) == ["agent.billing", "agent.search"]
    assert 'alt="True"' in rows["agent.billing"] and 'alt="False"' in rows["agent.search"]


def test_an_admin_binds_a_policy_to_an_identity_and_an_operator_cannot(cast: Any) -> None:
    strict = policy_save(actor=Actor.system("t"), name="strict", source=GOOD).policy
    stricter = policy_save(
        actor=Actor.system("t"), name="stricter", source="default_verdict: block\n"
    ).policy
    url = reverse("admin:approvals_identitypolicy_add")
    operator = staff_client(cast.operator)
    assert operator.get(url).status_code == 403
    client = staff_client(cast.admin)
    listing = client.get(reverse("admin:approvals_identitypolicy_changelist")).content.decode()
    assert "UNGATED" in listing  # the changelist says when nothing is assigned
    # the assigned policy listed as requestable too is dropped: it is assigned already
    response = post(
        client,
        url,
        {"identity": "agent.billing", "policy": strict.pk, "may_request": [stricter.pk, strict.pk]},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    row = IdentityPolicy.objects.get()
    assert (row.identity, row.policy, row.assigned_by) == ("agent.billing", strict, "ada_admin")
    assert list(row.may_request.all()) == [stricter]
    job = jobs.job_submit(actor=Actor.system("agent", identity="agent.billing"))
    assert job.policy_ref == "policy:strict"
    delete = reverse("admin:approvals_identitypolicy_delete", args=[row.pk])
    assert post(client, delete, {"post": "yes"}).status_code == 302
    assert not IdentityPolicy.objects.exists()


def test_policy_files_stored_by_the_cli_are_hidden_from_the_picker_and_grouped_in_admin(
    cast: Any, tmp_path: Any, capsys: Any
) -> None:
    """`gait job submit --policy allow.yaml` stores the file as `file:allow.yaml@<digest>`:
    the dashboard's picker offers authored policies only, the admin list shows them apart."""

    policy_save(actor=cast.actor("admin"), name="billing", source=GOOD)
    for n in range(3):  # three edits of the same file: three stored copies
        path = tmp_path / "allow.yaml"
        path.write_text(GOOD.replace("priority: 10", f"priority: {10 + n}"))
        assert main(["job", "submit", "--id", f"job_{n}", "--policy", str(path), "--json"]) == 0
    capsys.readouterr()
    copies = list(Policy.objects.filter(name__startswith="file:allow.yaml@"))
    assert len(copies) == 3

    client = Client()
    client.force_login(cast.operator)
    picker = client.get(reverse("jobs-new")).content.decode()
    assert 'value="billing"' in picker
    assert "file:allow.yaml" not in picker

    admin_client = staff_client(cast.admin)
    listing = admin_client.get(reverse("admin:approvals_policy_changelist")).content.decode()
    assert "billing" in listing and "file:allow.yaml" not in listing
    files = admin_client.get(
        reverse("admin:approvals_policy_changelist") + "?origin=files"
    ).content.decode()
    assert all(c.name in files for c in copies) and ">billing<" not in files
    assert "file (CLI)" in files
