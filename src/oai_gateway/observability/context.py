"""Per-request state shared by the middleware, the routes and the providers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from oai_gateway.server.asgi import Scope

SCOPE_KEY = "oai_gateway.request"


@dataclass(slots=True)
class RequestContext:
    """What is known about one request; the access log and Server-Timing read it."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    route: str = ""
    provider: str | None = None
    model: str | None = None
    stream: bool = False
    status: int = 0
    upstream_s: float = 0.0
    usage: dict[str, Any] | None = None
    first_chunk_s: float | None = None
    upstream_error: str | None = None  # the kind, for the upstream error metric
    upstream: str | None = None  # "provider/index" of a routed provider's serving upstream
    attempts: int = 0  # upstream attempts of a routed provider (SPEC §11); 0 when not routed
    response_started: bool = False
    response_complete: bool = False
    client_disconnected: bool = False
    # The key the request came with (virtual id or `static-<n>`), what its admission reserved,
    # and the admission itself until it settles (SPEC §10).
    key_id: str | None = None
    reserved_tokens: int = 0
    admission: Any = None

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def server_timing(self) -> bytes:
        total = self.elapsed_s()
        upstream_ms = self.upstream_s * 1000.0
        gateway_ms = max(total - self.upstream_s, 0.0) * 1000.0
        return f"upstream;dur={upstream_ms:.3f}, gateway;dur={gateway_ms:.3f}".encode()


def request_context(scope: Scope) -> RequestContext:
    context: RequestContext = scope[SCOPE_KEY]
    return context
