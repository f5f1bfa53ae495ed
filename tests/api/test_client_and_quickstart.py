"""The Python client and examples/agent_quickstart.py against a real server (live_server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gaitweb.apikeys import apikey_create
from gaitweb.lib.actors import Actor
from jobs.models import Job, JobEvent
from packs.services import pack_render
from packs.spec import Signer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def keys(transactional_db: Any) -> dict[str, str]:
    def key(identity: str, scopes: str) -> str:
        return apikey_create(actor=Actor.system("test"), identity=identity, scopes=scopes).key

    return {
        "agent": key("refund-agent", "submit,read,control"),
        "reviewer": key("rita", "approve,read,cross_identity"),
        "admin": key("root", "admin"),
    }


def test_the_quickstart_drives_a_job_through_a_gated_approval_to_completion(
    live_server: Any, keys: dict[str, str]
) -> None:
    from tests.conftest import subprocess_env

    env = subprocess_env(
        GAIT_URL=live_server.url,
        GAIT_API_KEY=keys["agent"],
        GAIT_REVIEWER_KEY=keys["reviewer"],
        GAIT_ADMIN_KEY=keys["admin"],
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "agent_quickstart.py"), "--job-id", "qs-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = [json.loads(line) for line in proc.stdout.splitlines()]
    gates = {s["tool"]: s["verdict"] for s in steps if s["step"] == "gate"}
    assert gates == {"invoices.read": "allow", "payments.refund": "require_approval"}
    assert [s["step"] for s in steps][-3:] == ["approved", "resumed", "completed"]

    job = Job.objects.get(job_id="qs-1")
    # bound by the admin's assignment: the agent's submit named no policy
    assert job.policy_ref == "policy:quickstart-payments"
    assert job.status == "completed" and job.identity == "refund-agent"
    types = list(
        JobEvent.objects.filter(job=job).order_by("revision").values_list("type", flat=True)
    )
    assert (
        types.count("dispatch_blocked") == 1 and types.count("approved") == 1 and "resumed" in types
    )


def test_the_client_raises_the_envelope_and_replays_an_idempotent_submit(
    live_server: Any, keys: dict[str, str]
) -> None:
    from gaitclient import GaitApiError, GaitClient

    with GaitClient(live_server.url, keys["agent"]) as gw:
        first = gw.submit(job_id="cl-1", idempotency_key="k1")
        assert gw.submit(job_id="cl-1", idempotency_key="k1")["job_id"] == first["job_id"]
        with pytest.raises(GaitApiError) as err:
            gw.submit(job_id="cl-1", labels={"other": "body"}, idempotency_key="k1")
        assert (err.value.status, err.value.code) == (409, "idempotency_key_reused")
        with pytest.raises(GaitApiError) as err:
            gw.approve("cl-1")
        assert (err.value.status, err.value.code) == (403, "permission_denied")
        for i in range(3):
            gw.checkpoint_add("cl-1", "progress", f"p{i}")
        assert [e["revision"] for e in gw.events("cl-1")] == [1, 2, 3, 4]
        assert [j["job_id"] for j in gw.jobs(page_size=1)] == ["cl-1"]
        assert gw.health()["database"]["ok"] is True
    with (
        GaitClient(live_server.url, "gw_000000000000_wrong") as bad,
        pytest.raises(GaitApiError) as err,
    ):
        bad.status("cl-1")
    assert err.value.status == 401


def test_the_client_builds_verifies_and_diffs_packs(live_server: Any, keys: dict[str, str]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from gaitclient import GaitClient

    with GaitClient(live_server.url, keys["agent"]) as gw:
        gw.submit(job_id="cl-pk")
        first = gw.pack_download(gw.pack_build("cl-pk")["pack"]["pack_id"])
        gw.checkpoint_add("cl-pk", "progress", "more")
        second = gw.pack_download(gw.pack_build("cl-pk")["pack"]["pack_id"])
        # no signing key here: the packs are unsigned, and unsigned is not verified
        unsigned = gw.pack_verify(first)
        assert unsigned["ok"] is False and unsigned["signature_status"] == "missing"
        assert [e["code"] for e in unsigned["errors"]] == ["pack_unsigned"]
        accepted = gw.pack_verify(first, allow_unsigned=True)
        assert accepted["ok"] is True and accepted["accepted_unsigned"] is True
        assert accepted["notes"] == ["unsigned, accepted because allow_unsigned"]
        assert gw.pack_diff(first, first)["identical"] is True
        diff = gw.pack_diff(first, second)
        assert diff["changed"] is True and diff["events"]["added_count"] == 2

        outside = Ed25519PrivateKey.generate()
        signed = pack_render(job_id="cl-pk", signer=Signer.of(outside)).data
        public = outside.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        assert gw.pack_verify(signed)["ok"] is False
        trusted = gw.pack_verify(signed, public_keys=[public])
        assert trusted["ok"] is True and trusted["signature_status"] == "verified"


def test_the_client_assigns_policies_and_the_agent_cannot_escape_them(
    live_server: Any, keys: dict[str, str]
) -> None:
    from gaitclient import GaitApiError, GaitClient

    trust = "default_verdict: block\nrules:\n  - {name: t, effect: allow, match: {identities: [trusted-bot]}}\n"
    with GaitClient(live_server.url, keys["admin"]) as admin:
        admin.policy_save("trust", trust)
        admin.policy_save("lenient", "default_verdict: allow\n")
        assert admin.identity_policy("refund-agent")["source"] == "none"
        bound = admin.identity_policy_set("refund-agent", "trust")
        assert (bound["policy"], bound["may_request"]) == ("trust", [])
        assert admin.identity_policies()["gate"]["mode"] == "partially_gated"
    with GaitClient(live_server.url, keys["agent"]) as gw:
        with pytest.raises(GaitApiError) as err:
            gw.submit(job_id="cl-weak", policy="lenient")
        assert (err.value.status, err.value.code) == (422, "policy_not_allowed")
        job = gw.submit(job_id="cl-bound")
        assert job["policy_ref"] == "policy:trust"
        claim = {"tool_name": "db.drop", "context": {"identity": "trusted-bot"}}
        for verdict in (gw.gate_evaluate(claim), gw.gate_dispatch("cl-bound", claim)):
            assert (verdict["verdict"], verdict["reason_codes"]) == (
                "block",
                ["intent_identity_mismatch"],
            )
        with pytest.raises(GaitApiError) as err:
            gw.identity_policy_clear("refund-agent")
        assert err.value.code == "permission_denied"
    with GaitClient(live_server.url, keys["admin"]) as admin:
        admin.identity_policy_clear("refund-agent")
        assert admin.identity_policy("refund-agent")["policy"] is None


@pytest.mark.slow
def test_the_readme_quickstart_works_on_sqlite_against_a_live_manage_py_up(tmp_path: Path) -> None:
    """What a fresh clone does: `make run` (manage.py up, SQLite, a new data dir), API keys
    from the CLI, then examples/agent_quickstart.py end to end against that server."""
    from tests.web.test_up import Up

    server = Up(tmp_path / "var", sqlite=True)
    try:
        assert "database: sqlite3" in server.output
        assert (tmp_path / "var" / "gaitweb.sqlite3").exists()

        def key(identity: str, scopes: str) -> str:
            proc = subprocess.run(
                [sys.executable, "manage.py", "gait", "apikey", "create", "--identity", identity,
                 "--scopes", scopes, "--json"],
                env=server.env, capture_output=True, text=True, timeout=60, cwd=ROOT,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stdout + proc.stderr
            return str(json.loads(proc.stdout.strip().splitlines()[-1])["key"])

        env = {
            **server.env,
            "GAIT_URL": f"http://127.0.0.1:{server.port}",
            "GAIT_API_KEY": key("refund-agent", "submit,read,control"),
            "GAIT_REVIEWER_KEY": key("rita", "approve,read,cross_identity"),
            "GAIT_ADMIN_KEY": key("root", "admin"),
        }
        proc = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "agent_quickstart.py"), "--job-id", "qs-up"],
            env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr + server.output
        steps = [json.loads(line) for line in proc.stdout.splitlines()]
        gates = {s["tool"]: s["verdict"] for s in steps if s["step"] == "gate"}
        assert gates == {"invoices.read": "allow", "payments.refund": "require_approval"}
        assert [s["step"] for s in steps][-3:] == ["approved", "resumed", "completed"]
        assert " 500 " not in server.output  # gunicorn's access log: no server error on the way
    finally:
        server.stop()


def test_the_client_imports_nothing_but_httpx_and_the_standard_library() -> None:
    """gaitclient.py is the one file an agent copies: importing it in a fresh interpreter loads
    neither Django nor any of the server's packages."""
    root = Path(__file__).resolve().parents[2]
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import gaitclient; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(root)], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out.replace("'", '"')))
    assert "httpx" in loaded
    assert not loaded & {"django", "rest_framework", "gaitweb", "jobs", "approvals", "packs"}
