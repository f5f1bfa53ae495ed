"""Run a job (paste a spec) and verify a pack (upload a zip) from the dashboard."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from approvals.policies import policy_save
from gaitweb.lib.actors import Actor
from jobs.models import Job
from jobs.recurring import template_create
from packs.keys import key_init, signer_active
from packs.services import pack_build
from tests.web.conftest import Browser, agent_job

pytestmark = pytest.mark.django_db

SPEC = """\
description: two steps
steps:
  - name: fetch
    kind: python
    with: {function: echo, args: {x: 1}}
  - name: wait
    kind: sleep
    with: {duration: 5m}
"""


def test_operator_runs_a_pasted_yaml_spec_and_lands_on_the_new_job(cast):
    b = Browser(cast.operator)
    page = b.get("/jobs/new/").content.decode()
    assert 'name="spec"' in page and 'name="csrfmiddlewaretoken"' in page
    response = b.post(
        "/jobs/new/", {"spec": SPEC, "job_id": "run-1", "labels": "team=web\nticket=7"}
    )
    assert response.status_code == 302 and response["Location"] == "/jobs/run-1/"
    job = Job.objects.get(job_id="run-1")
    assert job.status == "queued" and job.step_count == 2
    assert job.labels == {"team": "web", "ticket": "7"} and job.created_by == "otto_operator"


def test_with_htmx_a_successful_submit_redirects_the_browser(cast):
    response = Browser(cast.operator).post(
        "/jobs/new/", {"spec": SPEC, "job_id": "run-2"}, htmx=True
    )
    assert response.status_code == 200 and response["HX-Redirect"] == "/jobs/run-2/"


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        (
            {"spec": "steps:\n  - name: a\n    kind: teleport\n"},
            "spec",
            "steps[0].kind: must be one of",
        ),
        ({"spec": "steps: [\n"}, "spec", "is not valid YAML or JSON"),
        ({"spec": ""}, "spec", "paste a spec or choose a template"),
        ({"spec": SPEC, "job_id": "bad id!"}, "job_id", "job ids are 1-128 characters"),
        ({"spec": SPEC, "labels": "no equals sign"}, "labels", "write labels as key=value"),
        ({"spec": SPEC, "policy": "no-such-policy"}, "policy", "choose one of the stored policies"),
    ],
)
def test_validation_errors_are_shown_next_to_their_field_and_nothing_is_created(
    cast, form, field, message
):
    b = Browser(cast.operator)
    response = b.post("/jobs/new/", form)
    assert response.status_code == 400
    html = response.content.decode()
    assert 'class="error"' in html and message in html
    # the error sits right after its own input
    field_html = html.split(f'name="{field}"', 1)[1].split('class="field"', 1)[0]
    assert message in field_html
    assert form.get("spec", "") in html or not form.get("spec")  # what was typed is kept
    assert Job.objects.count() == 0
    fragment = b.post("/jobs/new/", form, htmx=True).content.decode()
    assert fragment.lstrip().startswith('<form id="run-form"') and message in fragment


def test_a_duplicate_job_id_is_refused_next_to_the_job_id(cast):
    agent_job("dup-1")
    html = (
        Browser(cast.operator)
        .post("/jobs/new/", {"spec": SPEC, "job_id": "dup-1"})
        .content.decode()
    )
    assert "already exists" in html.split('name="job_id"', 1)[1].split('class="field"', 1)[0]


def test_a_stored_policy_can_be_bound_at_submit(cast):
    version = policy_save(
        actor=Actor.system("admin"), name="web-policy", source="default_verdict: allow\nrules: []\n"
    )
    b = Browser(cast.operator)
    assert 'value="web-policy"' in b.get("/jobs/new/").content.decode()
    b.post("/jobs/new/", {"spec": SPEC, "job_id": "pol-1", "policy": "web-policy"})
    job = Job.objects.get(job_id="pol-1")
    assert job.policy_digest == version.digest and job.policy_ref == "policy:web-policy"


@pytest.mark.parametrize("role", ["reviewer", "viewer"])
def test_roles_without_submit_cannot_run_jobs(cast, role):
    b = Browser(getattr(cast, role))
    assert "Run a job" not in b.get("/jobs/").content.decode().split("</nav>")[0]
    response = b.post("/jobs/new/", {"spec": SPEC, "job_id": "nope-1"})
    assert (
        response.status_code == 403
        and "<code>permission_denied</code>" in response.content.decode()
    )
    assert not Job.objects.filter(job_id="nope-1").exists()


# --- verify a pack --------------------------------------------------------------------------


@pytest.fixture
def signed_pack(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    settings.GAIT = {**settings.GAIT, "KEYS_DIR": tmp_path / "keys"}
    monkeypatch.delenv(settings.GAIT["SIGNING_KEY_ENV"], raising=False)
    key_init(actor=Actor.system("admin"))
    agent_job("pack-v", "completed")
    return bytes(pack_build(actor=Actor.system("admin"), job_id="pack-v").pack.data)


def _upload(b: Browser, data: bytes, *, htmx: bool = False, **fields: Any) -> Any:
    return b.post(
        "/packs/verify/",
        {"pack": SimpleUploadedFile("pack.zip", data, "application/zip"), **fields},
        htmx=htmx,
    )


GREEN = 'class="badge st-ok"'


def test_an_unsigned_pack_fails_on_the_upload_page_and_nothing_is_green(cast, signed_pack):
    from tests.packs.helpers import entries_of, reassemble

    unsigned = reassemble(entries_of(signed_pack), source_ref="pack-v")
    html = _upload(Browser(cast.viewer), unsigned).content.decode()

    assert 'id="verdict">verification failed<' in html
    assert "<code>pack_unsigned</code>" in html and "This pack fails verification." in html
    assert GREEN not in html  # not the verdict, not the signature, not the chain
    assert ">unsigned</span>" in html and "chain consistent</span>" in html


def test_a_forged_pack_fails_on_the_upload_page_and_nothing_is_green(cast, signed_pack):
    from tests.packs.helpers import entries_of, forge

    forged = forge(entries_of(signed_pack))  # every actor rewritten, chain recomputed, unsigned
    for htmx in (False, True):
        html = _upload(Browser(cast.viewer), forged, htmx=htmx).content.decode()
        assert 'id="verdict">verification failed<' in html
        assert "<code>pack_unsigned</code>" in html
        assert GREEN not in html and ">verified<" not in html


def test_an_unsigned_pack_accepted_with_allow_unsigned_is_amber_and_says_why(cast, signed_pack):
    from tests.packs.helpers import entries_of, reassemble

    unsigned = reassemble(entries_of(signed_pack), source_ref="pack-v")
    html = _upload(Browser(cast.viewer), unsigned, allow_unsigned="on").content.decode()

    assert 'id="verdict">accepted unsigned<' in html
    assert "unsigned, accepted because allow_unsigned" in html
    assert GREEN not in html


def test_a_valid_signature_next_to_a_broken_chain_says_the_pack_fails(cast, signed_pack):
    """A trusted signature over a pack whose chain does not hold (the key holder signed a
    history with its last event cut off): the signature check passes, and the page must still
    say the pack fails and paint nothing green."""
    from tests.packs.helpers import entries_of, reassemble

    files = entries_of(signed_pack)
    files["job_events.jsonl"] = b"".join(files["job_events.jsonl"].splitlines(keepends=True)[:-1])
    broken = reassemble(files, signer=signer_active(), source_ref="pack-v")
    html = _upload(Browser(cast.viewer), broken).content.decode()

    assert 'id="verdict">verification failed<' in html
    assert "signature valid</span> — but the pack fails verification" in html
    assert "chain broken" in html and GREEN not in html


def test_uploading_a_signed_pack_reports_it_verified(cast, signed_pack):
    b = Browser(cast.viewer)
    html = _upload(b, signed_pack).content.decode()
    assert 'id="verdict">verified<' in html
    assert (
        "pack-v" in html
        and ">signature verified</span> 1 of 1 valid" in html
        and "chain verified" in html
    )
    fragment = _upload(b, signed_pack, htmx=True).content.decode()
    assert fragment.lstrip().startswith('<div id="result"') and 'id="verdict">verified<' in fragment


def test_a_tampered_pack_is_reported_with_the_file_that_changed(cast, signed_pack):
    src = zipfile.ZipFile(io.BytesIO(signed_pack))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "job_state.json":
                data = data.replace(b"completed", b"cancelled")
            dst.writestr(info, data)
    html = _upload(Browser(cast.viewer), out.getvalue()).content.decode()
    assert 'id="verdict">verification failed<' in html
    assert "job_state.json: expected" in html


def test_garbage_is_refused_inline_and_a_missing_file_is_asked_for(cast):
    b = Browser(cast.viewer)
    refused = _upload(b, b"this is not a zip")
    assert refused.status_code == 400 and 'class="refusal"' in refused.content.decode()
    assert "<code>" in refused.content.decode()
    missing = b.post("/packs/verify/", {})
    assert missing.status_code == 400 and "Choose a pack zip" in missing.content.decode()


def test_an_outsider_cannot_use_the_verify_page(cast, signed_pack):
    assert _upload(Browser(cast.outsider), signed_pack).status_code == 403


def test_an_admin_runs_a_saved_template_and_a_second_run_is_refused_while_one_is_active(cast):
    template_create(
        actor=Actor.system("admin"),
        name="Nightly export",
        template_id="nightly-export",
        spec={"steps": [{"name": "export", "kind": "python", "with": {"function": "noop"}}]},
        identity="agent.export",
        labels={"team": "data"},
    )
    # the template runs as agent.export: only that identity or an admin may run it
    page = Browser(cast.operator).get("/jobs/new/").content.decode()
    assert '<option value="nightly-export"' not in page
    b = Browser(cast.admin)
    page = b.get("/jobs/new/").content.decode()
    assert '<option value="nightly-export"' in page and "Nightly export" in page
    response = b.post("/jobs/new/", {"template": "nightly-export", "job_id": "tpl-1"})
    assert response.status_code == 302 and response["Location"] == "/jobs/tpl-1/"
    job = Job.objects.get(job_id="tpl-1")
    assert job.identity == "agent.export" and job.step_count == 1
    again = b.post("/jobs/new/", {"template": "nightly-export", "job_id": "tpl-2"})
    html = again.content.decode()
    assert again.status_code == 409
    next_to_select = html.split('name="template"', 1)[1].split('class="field"', 1)[0]
    assert "(template_run_active)" in next_to_select
    assert not Job.objects.filter(job_id="tpl-2").exists()
    unknown = b.post("/jobs/new/", {"template": "no-such-template"})
    assert (
        unknown.status_code == 400
        and "choose one of the saved templates" in unknown.content.decode()
    )


def test_with_htmx_a_template_run_held_behind_the_active_one_redirects_the_browser(cast):
    template_create(
        actor=Actor.system("admin"),
        name="Queued export",
        template_id="queued-export",
        spec={"steps": [{"name": "export", "kind": "python", "with": {"function": "noop"}}]},
        overlap="queue",
    )
    b = Browser(cast.operator)
    first = b.post("/jobs/new/", {"template": "queued-export", "job_id": "held-1"}, htmx=True)
    assert first["HX-Redirect"] == "/jobs/held-1/"
    held = b.post("/jobs/new/", {"template": "queued-export", "job_id": "held-2"}, htmx=True)
    # a 302 would be followed inside the request and the jobs list swapped into the form
    assert held.status_code == 200 and held["HX-Redirect"] == "/jobs/"
    assert not Job.objects.filter(job_id="held-2").exists()
