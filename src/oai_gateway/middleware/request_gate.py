"""The request gate: what a browser could send on a page's behalf is refused before routing.

Two checks, both answered in OpenAI's error envelope:

- A POST with a body must say it is JSON (`application/json`, or any `…/…+json`), else 415. The
  SDKs always do; a cross-site "simple" request from a browser (no preflight) can only carry
  `text/plain`, `application/x-www-form-urlencoded` or `multipart/form-data`, so this is what
  stops a foreign page from spending the upstream key through a gateway that has no keys.
- Without gateway keys, the `Host` must be loopback (`localhost`, `127.0.0.1`, `[::1]`), an IP
  literal, or listed in ALLOWED_HOSTS, else 403 host_not_allowed. A DNS-rebinding page reaches
  the gateway under its own host name; no rebinding can make a browser send an IP literal.

An ASGI layer that passes `send` through untouched: one coroutine frame per request, nothing per
streamed chunk, and a scan of the request headers the router would make anyway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Iterable

from oai_gateway.errors import GatewayError, HostNotAllowedError, UnsupportedMediaTypeError
from oai_gateway.server.asgi import JSON_CONTENT_TYPE, ASGIApp, Receive, Scope, Send, send_bytes

_LOOPBACK_NAMES = frozenset({b"localhost"})
_NOT_JSON = "POST bodies must be JSON: send 'Content-Type: application/json' (got {!r})."
_FOREIGN_HOST = (
    "The Host {!r} is not served: this gateway has no API keys, so it answers only to loopback "
    "host names and IP addresses. Set ALLOWED_API_KEYS, or add the name to ALLOWED_HOSTS."
)


def is_json(content_type: bytes) -> bool:
    media = content_type.partition(b";")[0].strip().lower()
    kind, _, subtype = media.partition(b"/")
    return bool(kind) and (subtype == b"json" or subtype.endswith(b"+json"))


def _host_name(host: bytes) -> bytes:
    """`host` without its port: `[::1]:8000` → `::1`, `localhost:8000` → `localhost`."""
    if host.startswith(b"["):
        return host[1:].partition(b"]")[0]
    return host.rpartition(b":")[0] if host.count(b":") == 1 else host


def _is_ip(name: bytes) -> bool:
    try:
        ipaddress.ip_address(name.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


class RequestGate:
    def __init__(self, app: ASGIApp, *, check_host: bool, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self._check_host = check_host
        self._any_host = "*" in allowed_hosts
        self._hosts = _LOOPBACK_NAMES | {h.lower().encode() for h in allowed_hosts}

    def _host_allowed(self, host: bytes) -> bool:
        name = _host_name(host.strip().lower()).rstrip(b".")
        return self._any_host or name in self._hosts or _is_ip(name)

    def _problem(self, scope: Scope) -> GatewayError | None:
        content_type = host = length = chunked = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"host":
                host = value
            elif key == b"content-length":
                length = value
            elif key == b"transfer-encoding":
                chunked = value
        if self._check_host and host is not None and not self._host_allowed(host):
            return HostNotAllowedError(_FOREIGN_HOST.format(host.decode("latin-1")[:100]))
        has_body = chunked is not None or (length is not None and length.strip() != b"0")
        # What every SDK sends is recognised without parsing the media type.
        json = content_type == b"application/json" or is_json(content_type or b"")
        if scope["method"] == "POST" and has_body and not json:
            shown = (content_type or b"no Content-Type").decode("latin-1")[:100]
            return UnsupportedMediaTypeError(_NOT_JSON.format(shown))
        return None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Hands back the awaitable of the answer or of the next layer instead of awaiting it in
        # a coroutine of its own: one frame fewer per request, and the same for the caller.
        if scope["type"] == "http":
            problem = self._problem(scope)
            if problem is not None:
                return send_bytes(send, problem.http_status, problem.body(), [JSON_CONTENT_TYPE])
        return self.app(scope, receive, send)
