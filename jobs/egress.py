"""Where ``http`` steps may connect (docs/security.md, "Steps that touch the machine are opt-in").

A destination is checked after DNS resolution, and the connection goes to the address that was
checked: the request is sent to ``https://<checked address>/…`` with the original ``Host``
header and, for TLS, the original name as SNI and for certificate verification (httpcore's
``sni_hostname``). A resolver that answers with a public address for the check and with
``127.0.0.1`` for the connection (DNS rebinding) therefore has nothing to rebind. Redirects are
followed here, hop by hop, and every hop is checked the same way.

Refused unless the host is on the admin's allow-list: loopback, private (RFC 1918, ULA),
link-local, multicast, unspecified, reserved / not globally routable (CGNAT, benchmarking,
documentation ranges) and the cloud metadata addresses — also when they hide in an IPv4-mapped
or NAT64 IPv6 address. A host name that resolves to several addresses is refused if any of them
is. This module is a leaf: the allow-list comes in as a callable.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from gaitweb.lib import reasons

# reason codes (docs/security.md)
DESTINATION_UNRESOLVABLE = "http_destination_unresolvable"  # DNS gave no address
TOO_MANY_REDIRECTS = "http_too_many_redirects"
REDIRECT_INVALID = "http_redirect_invalid"  # a Location that is not an http(s) URL
RESPONSE_TOO_LARGE = "http_response_too_large"

# Cloud instance metadata services (AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba, ECS task
# metadata): refused by name, before the ranges they sit in.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)

HostAllowed = Callable[[str, int], bool]


class EgressRefused(Exception):
    """An http step may not go there (or the way there broke a rule): ``code`` is the reason."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


def host_normalize(host: str) -> str:
    """The form hosts are compared in: lower case, no trailing dot, IP literals without brackets
    and in their canonical text (``[::1]`` and ``0:0::1`` are both ``::1``). ``""`` when ``host``
    is neither a host name nor an IP address."""
    host = (host or "").strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host if HOSTNAME_RE.match(host) else ""


def address_category(address: str) -> str | None:
    """Why ``address`` is refused (``metadata``, ``loopback``, ``link_local``, ``private``,
    ``multicast``, ``unspecified``, ``reserved``), or None for a public address."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0]
    )
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in METADATA_ADDRESSES:
        return "metadata"
    for category, flag in (
        ("loopback", ip.is_loopback),
        ("link_local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("private", ip.is_private),
    ):
        if flag:
            return category
    return None if ip.is_global else "reserved"


def host_literal_category(host: str) -> str | None:
    """The refusal category of a URL host that needs no DNS to judge: an IP literal, or
    ``localhost`` / ``*.localhost`` (RFC 6761 keeps them on the loopback)."""
    host = host_normalize(host)
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return address_category(host)


def _default_port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def destination_resolve(url: httpx.URL, allowed: HostAllowed) -> list[str]:
    """The addresses to connect to for ``url``, in the resolver's order, every one checked; or
    ``EgressRefused``."""
    host, port = host_normalize(url.host), _default_port(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise EgressRefused(
            DESTINATION_UNRESOLVABLE, f"cannot resolve {host!r}: {exc}", host=host
        ) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise EgressRefused(DESTINATION_UNRESOLVABLE, f"{host!r} has no address", host=host)
    if not allowed(host, port):
        for address in addresses:
            category = address_category(address)
            if category is not None:
                raise EgressRefused(
                    reasons.HTTP_DESTINATION_FORBIDDEN,
                    f"{host} resolves to {address} ({category.replace('_', '-')}): http steps "
                    "may not reach it unless an admin allow-lists the host",
                    host=host,
                    port=port,
                    address=address,
                    category=category,
                )
    return addresses


@dataclass
class Fetched:
    status_code: int
    headers: httpx.Headers
    content: bytes
    url: str  # the URL of the last hop, as the spec's host names it

    def response(self) -> httpx.Response:
        return httpx.Response(self.status_code, headers=self.headers, content=self.content)


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return (url.scheme, host_normalize(url.host), _default_port(url))


def request_checked(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    credential_headers: frozenset[str],
    body: bytes | None,
    timeout: float,
    allowed: HostAllowed,
    max_redirects: int,
    max_bytes: int,
) -> Fetched:
    """Send one request (and follow its redirects), connecting only to checked addresses.

    ``credential_headers`` (lower-case names) are dropped when a redirect leaves the origin, as
    browsers drop ``Authorization``. 303, and 301/302 after a POST, continue as a GET without
    the body; 307/308 repeat the method and the body. Raises ``EgressRefused``, or httpx's
    errors for the network."""
    deadline = time.monotonic() + timeout
    current = httpx.URL(url)
    sent = dict(headers)
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        for hop in range(max_redirects + 1):
            addresses = destination_resolve(current, allowed)
            extensions: dict[str, Any] = {}
            if current.scheme == "https":
                extensions["sni_hostname"] = host_normalize(current.host)
            for n, address in enumerate(addresses):  # as a resolver's client would: in order
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise httpx.ConnectTimeout(f"the step's {timeout:g}s timeout passed")
                request = client.build_request(
                    method,
                    current.copy_with(host=address, username=None, password=None),
                    headers={**sent, "Host": current.netloc.decode("ascii")},
                    content=body,
                    timeout=remaining,
                    extensions=extensions,
                )
                try:
                    response = client.send(request, stream=True)
                    break
                except httpx.ConnectError:
                    if n == len(addresses) - 1:
                        raise
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_CODES and location:
                    if hop == max_redirects:
                        raise EgressRefused(
                            TOO_MANY_REDIRECTS,
                            f"{method} {url} redirected more than {max_redirects} times",
                            max_redirects=max_redirects,
                        )
                    try:
                        nxt = current.join(location)
                    except httpx.InvalidURL:
                        nxt = None
                    if nxt is None or nxt.scheme not in ("http", "https") or not nxt.host:
                        raise EgressRefused(
                            REDIRECT_INVALID,
                            f"{method} {current} redirected to {location[:200]!r}",
                        )
                    code = response.status_code
                    if (code == 303 and method != "HEAD") or (
                        code in (301, 302) and method == "POST"
                    ):
                        method, body = "GET", None
                        sent = {k: v for k, v in sent.items() if k.lower() != "content-type"}
                    if _origin(nxt) != _origin(current):
                        sent = {
                            k: v for k, v in sent.items() if k.lower() not in credential_headers
                        }
                    current = nxt
                    continue
                return Fetched(
                    response.status_code, response.headers, _read(response, max_bytes), str(current)
                )
            finally:
                response.close()
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _read(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise EgressRefused(
            RESPONSE_TOO_LARGE,
            f"the response is {declared} bytes (limit {max_bytes})",
            max_bytes=max_bytes,
        )
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > max_bytes:
            raise EgressRefused(
                RESPONSE_TOO_LARGE,
                f"the response is larger than {max_bytes} bytes",
                max_bytes=max_bytes,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def json_body(value: Any) -> bytes:
    """The bytes of a ``json`` request body (the same on every retry and 307/308 hop)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
