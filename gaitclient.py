"""A small Python client for the gaitweb REST API (docs/api.md), with the CLI's verbs.

    from gaitclient import GaitClient, GaitApiError

    gw = GaitClient("http://127.0.0.1:8000", api_key="gw_…")
    job = gw.submit(job_id="refund-42", policy="payments")
    gw.checkpoint_add("refund-42", "plan", "look up the invoice, then refund")
    verdict = gw.gate_dispatch("refund-42", {"tool_name": "payments.refund", "args": {"amount": 420}})
    if not verdict["allowed"]:
        ...

    with gw.run("refund-42") as run:            # durable calls: a restarted process replays
        inv = run.step("fetch-invoice", fetch_invoice, "42")
        receipt = run.tool("payments.refund", {"amount": inv["total"]}, run=do_refund)

Its own module, outside the server's packages: it needs httpx and the standard library only
(no Django; an import-linter contract in pyproject.toml holds it to that), so an agent can copy
this one file into its project, or get it with ``pip install gaitweb``. Every error is a
``GaitApiError`` carrying the API's envelope: ``code`` (the same reason codes as the CLI),
``message``, ``details``, ``status``. ``submit`` sends an ``Idempotency-Key`` and retries
network errors, 429 and 5xx with the same key, so a retried submit never creates a second job.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx

TERMINAL = frozenset({"completed", "cancelled", "failed"})


class GaitApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.hint = hint

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


class GaitClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "gaitweb-client/1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.retries = retries
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1",
            headers=headers,
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GaitClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- transport ---------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, retry: bool = False, **kwargs: Any
    ) -> httpx.Response:
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt + 1 >= attempts:
                    raise
                time.sleep(min(2**attempt * 0.2, 5))
                continue
            if response.status_code < 400:
                return response
            error = self._error(response)
            if retry and error.retryable and attempt + 1 < attempts:
                wait = float(response.headers.get("Retry-After") or 2**attempt * 0.2)
                time.sleep(min(wait, 30))
                continue
            raise error
        raise AssertionError("unreachable")

    @staticmethod
    def _error(response: httpx.Response) -> GaitApiError:
        try:
            err = response.json()["error"]
            return GaitApiError(
                response.status_code,
                err["code"],
                err["message"],
                err.get("details"),
                err.get("hint", ""),
            )
        except (ValueError, KeyError, TypeError):
            return GaitApiError(response.status_code, "http_error", response.text[:200])

    def _get(self, path: str, **params: Any) -> Any:
        params = {k: v for k, v in params.items() if v is not None}
        return self._request("GET", path, params=params, retry=True).json()

    def _post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self._request("POST", path, json=body if body is not None else {}, **kwargs).json()

    def _pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self._get(path, cursor=cursor, **params)
            yield from page["results"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # --- jobs --------------------------------------------------------------------------------

    def submit(
        self,
        *,
        job_id: str | None = None,
        identity: str | None = None,
        policy: str | None = None,
        spec: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        parent_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "job_id": job_id,
            "identity": identity,
            "policy": policy,
            "spec": spec,
            "labels": labels,
            "parent_id": parent_id,
        }
        body = {k: v for k, v in body.items() if v is not None}
        key = idempotency_key or str(uuid.uuid4())
        return self._request(
            "POST", "/jobs", json=body, headers={"Idempotency-Key": key}, retry=True
        ).json()

    def status(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/jobs/{job_id}")

    def jobs(
        self,
        *,
        status: str | None = None,
        identity: str | None = None,
        label: list[str] | None = None,
        q: str | None = None,
        template_id: str | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """All matching jobs the key may see, newest first, fetched page by page (the filters
        of jobs.selectors.job_filter)."""
        return self._pages(
            "/jobs",
            status=status,
            identity=identity,
            label=label,
            q=q,
            template_id=template_id,
            created_after=created_after,
            created_before=created_before,
            page_size=page_size,
        )

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        return self._pages(f"/jobs/{job_id}/events")

    def steps(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._pages(f"/jobs/{job_id}/steps"))

    def checkpoint_add(
        self,
        job_id: str,
        type: str,
        summary: str,
        *,
        required_action: str = "",
        reason_code: str = "",
    ) -> dict[str, Any]:
        body = {
            "type": type,
            "summary": summary,
            "required_action": required_action,
            "reason_code": reason_code,
        }
        return self._post(f"/jobs/{job_id}/checkpoints", body)

    def checkpoint_list(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._pages(f"/jobs/{job_id}/checkpoints"))

    def checkpoint_show(self, job_id: str, checkpoint_id: str) -> dict[str, Any]:
        return self._get(f"/jobs/{job_id}/checkpoints/{checkpoint_id}")

    def signal(self, job_id: str, name: str, payload: Any = None) -> dict[str, Any]:
        return self._post(f"/jobs/{job_id}/signals/{name}", {"payload": payload})

    def pause(self, job_id: str, reason: str = "") -> dict[str, Any]:
        return self._post(f"/jobs/{job_id}/pause", {"reason": reason})

    def stop(self, job_id: str, reason: str = "") -> dict[str, Any]:
        return self._post(f"/jobs/{job_id}/stop", {"reason": reason})

    def approve(self, job_id: str, reason: str = "") -> dict[str, Any]:
        return self._post(f"/jobs/{job_id}/approve", {"reason": reason})

    def reject(self, job_id: str, reason: str) -> dict[str, Any]:
        return self._post(f"/jobs/{job_id}/reject", {"reason": reason})

    def resume(
        self,
        job_id: str,
        reason: str = "",
        *,
        policy: str | None = None,
        allow_env_mismatch: bool = False,
        environment_fingerprint: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason, "allow_env_mismatch": allow_env_mismatch}
        if policy:
            body["policy"] = policy
        if environment_fingerprint:
            body["environment_fingerprint"] = environment_fingerprint
        return self._post(f"/jobs/{job_id}/resume", body)

    def cancel(self, job_id: str, reason: str = "") -> dict[str, Any]:
        return self._post(f"/jobs/{job_id}/cancel", {"reason": reason})

    def retry(self, job_id: str, reason: str = "") -> dict[str, Any]:
        return self._post(f"/jobs/{job_id}/retry", {"reason": reason})

    def inspect(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/jobs/{job_id}/inspect")

    def verify_chain(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/jobs/{job_id}/verify-chain")

    def wait(
        self,
        job_id: str,
        *,
        until: set[str] | frozenset[str] = TERMINAL,
        timeout: float = 300,
        poll: float = 1.0,
    ) -> dict[str, Any]:
        """Poll until the job's status is in ``until``; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.status(job_id)
            if job["status"] in until:
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
            time.sleep(poll)

    # --- gate, approvals, policies -----------------------------------------------------------

    def gate_evaluate(
        self, intent: dict[str, Any], *, policy: str | None = None, policy_source: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"intent": intent}
        if policy:
            body["policy"] = policy
        if policy_source:
            body["policy_source"] = policy_source
        return self._post("/gate/evaluate", body)

    def gate_dispatch(
        self, job_id: str, intent: dict[str, Any], *, path: str = "api"
    ) -> dict[str, Any]:
        return self._post(f"/jobs/{job_id}/gate/dispatch", {"intent": intent, "path": path})

    def approvals_pending(self, job_id: str | None = None) -> list[dict[str, Any]]:
        return self._get("/approvals", job_id=job_id)["results"]

    def approval_decide(self, request_id: str, decision: str, reason: str = "") -> dict[str, Any]:
        return self._post(
            f"/approvals/{request_id}/decide", {"decision": decision, "reason": reason}
        )

    def policies(self) -> list[dict[str, Any]]:
        return self._get("/policies")["results"]

    def policy_show(self, ref: str) -> dict[str, Any]:
        return self._get(f"/policies/{ref}")

    def policy_save(self, name: str, source: str, description: str | None = None) -> dict[str, Any]:
        body = {"name": name, "source": source}
        if description is not None:
            body["description"] = description
        return self._post("/policies", body)

    def policy_digest(self, source: str) -> dict[str, Any]:
        return self._post("/policies/digest", {"source": source})

    def identity_revoke(self, identity: str, reason: str = "") -> dict[str, Any]:
        return self._post("/identities/revocations", {"identity": identity, "reason": reason})

    def identity_policies(self) -> dict[str, Any]:
        """Every identity policy, the default and the gate mode (admin)."""
        return self._get("/identities/policies")

    def identity_policy(self, identity: str) -> dict[str, Any]:
        """The policy ``identity``'s jobs are bound to, and where it comes from (admin)."""
        return self._get(f"/identities/policies/{quote(identity, safe='')}")

    def identity_policy_set(
        self, identity: str, policy: str, *, may_request: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Bind stored ``policy`` to ``identity``'s jobs; ``may_request``: stricter policies it
        may ask for instead (admin)."""
        body = {"identity": identity, "policy": policy, "may_request": list(may_request)}
        return self._post("/identities/policies", body)

    def identity_policy_clear(self, identity: str) -> None:
        self._request("DELETE", f"/identities/policies/{quote(identity, safe='')}")

    # --- packs, stats, health ------------------------------------------------------------------

    def pack_build(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/jobs/{job_id}/packs").json()

    def packs(self, job_id: str) -> list[dict[str, Any]]:
        return self._get(f"/jobs/{job_id}/packs")["results"]

    def pack_download(self, pack_id: str) -> bytes:
        return self._request(
            "GET", f"/packs/{pack_id}/download", retry=True, headers={"Accept": "application/zip"}
        ).content

    def pack_verify(
        self, data: bytes, *, allow_unsigned: bool = False, public_keys: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The server's report: ``ok`` only when a trusted key's signature verifies, unless
        ``allow_unsigned`` (then ``accepted_unsigned`` and ``notes`` say so). ``public_keys``:
        more keys to trust (hex or base64 of the raw 32 bytes)."""
        params: list[tuple[str, str]] = [("public_key", k) for k in public_keys]
        if allow_unsigned:
            params.append(("allow_unsigned", "true"))
        return self._request(
            "POST",
            "/packs/verify",
            content=data,
            params=params,
            headers={"Content-Type": "application/zip"},
        ).json()

    def pack_diff(self, left: bytes, right: bytes) -> dict[str, Any]:
        files = {
            "left": ("left.zip", left, "application/zip"),
            "right": ("right.zip", right, "application/zip"),
        }
        return self._request("POST", "/packs/diff", files=files).json()

    def stats(self) -> dict[str, Any]:
        return self._get("/stats")

    # --- durable calls of an agent-driven job -----------------------------------------------

    def run(self, job_id: str, *, wait_timeout: float = 3600.0) -> AgentRun:
        """Durable calls for an agent that runs in this process (``with gw.run(job_id) as
        run``): the server records each call and decides, with the rules gaitweb's workers
        use, whether it replays, raises again, waits (an approval, a question) or runs."""
        return AgentRun(self, job_id, wait_timeout=wait_timeout)

    def health(self) -> dict[str, Any]:
        response = self._http.get("/health")
        return response.json()


# --- durable calls ---------------------------------------------------------------------------


class CallFailed(Exception):
    """A call that gave up (recorded: the same exception on every replay)."""

    def __init__(self, name: str, error: dict[str, Any]) -> None:
        self.name = name
        self.error = dict(error or {})
        self.type = str(self.error.get("type", "error"))
        super().__init__(f"call {name} failed: {self.type}: {self.error.get('message', '')}")


class ToolBlocked(CallFailed):
    """The policy gate blocked the tool call (``error["gate"]`` has its reason codes)."""

    @property
    def reasons(self) -> list[str]:
        return list((self.error.get("gate") or {}).get("reason_codes") or [])


class ToolRejected(CallFailed):
    """A reviewer rejected the approval the tool call needed (``reason``, ``by``)."""

    @property
    def reason(self) -> str:
        return str(self.error.get("message", ""))


class Stopped(CallFailed):
    """The job was emergency-stopped: no further call is dispatched."""


_RAISED = {"ToolBlocked": ToolBlocked, "ToolRejected": ToolRejected, "Stopped": Stopped}


class AgentRun:
    """One process's run of an agent-driven job's durable calls (``GaitClient.run``).

    Calls are numbered in the order the code makes them; a restarted process with the same job
    id makes them again and gets the recorded results. ``step`` is idempotent by default (a
    crash before its result is recorded runs it again); ``tool`` is gated by the job's policy
    and not idempotent by default (a crash mid-call becomes a question for a person). While the
    job waits for an approval or a decision, ``tool`` waits with backoff."""

    def __init__(self, client: GaitClient, job_id: str, *, wait_timeout: float = 3600.0) -> None:
        self.client = client
        self.job_id = job_id
        self.position = 0
        self.wait_timeout = wait_timeout
        self.idempotency_key = ""

    def __enter__(self) -> AgentRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def _path(self, suffix: str = "") -> str:
        return f"/jobs/{quote(self.job_id, safe='')}/calls{suffix}"

    def _call(
        self,
        kind: str,
        name: str,
        fn: Any,
        *,
        args: dict[str, Any] | None = None,
        targets: Sequence[dict[str, str]] = (),
        idempotent: bool,
        retries: int = 0,
        backoff: float = 1.0,
    ) -> Any:
        self.position += 1
        body = {
            "position": self.position,
            "name": name,
            "kind": kind,
            "args": args or {},
            "targets": list(targets),
            "idempotent": idempotent,
        }
        deadline = time.monotonic() + self.wait_timeout
        delay = 0.25
        failures = 0
        while True:
            answer = self.client._request("POST", self._path(), json=body, retry=True).json()
            action = answer["action"]
            if action == "replay":
                return answer["output"]
            if action == "raise":
                error = answer["error"] or {}
                raise _RAISED.get(str(error.get("raised")), CallFailed)(name, error)
            if action == "wait":
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"job {self.job_id} still {answer.get('status')} at call {name}"
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 10.0)
                continue
            attempt = int(answer["attempt"])
            self.idempotency_key = answer.get("idempotency_key", "")
            try:
                output = fn()
            except Exception as exc:
                failures += 1
                final = failures > retries
                error = {"type": type(exc).__name__, "message": str(exc)[:2000], "final": final}
                self._finish(attempt, "failed", error=error)
                if final:
                    raise CallFailed(name, error) from exc
                time.sleep(backoff * 2 ** (failures - 1))
                continue
            self._finish(attempt, "succeeded", output=output)
            return output

    def _finish(self, attempt: int, status: str, **body: Any) -> None:
        self.client._request(
            "POST",
            self._path(f"/{self.position}"),
            json={"attempt": attempt, "status": status, **body},
            retry=True,
        )

    def step(
        self,
        name: str,
        fn: Any,
        *args: Any,
        idempotent: bool = True,
        retries: int = 0,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` once and record its JSON result."""
        return self._call(
            "step", name, lambda: fn(*args, **kwargs), idempotent=idempotent, retries=retries
        )

    def tool(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        run: Any,
        targets: Sequence[dict[str, str]] = (),
        idempotent: bool = False,
        retries: int = 0,
    ) -> Any:
        """Ask the job's policy gate about ``name`` with ``args``; run ``run(**args)`` once it
        is allowed (or approved) and record its JSON result."""
        call_args = dict(args or {})
        return self._call(
            "tool",
            name,
            lambda: run(**call_args),
            args=call_args,
            targets=targets,
            idempotent=idempotent,
            retries=retries,
        )
