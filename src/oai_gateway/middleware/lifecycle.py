"""The one cross-cutting ASGI layer: request context, response headers, access log, metrics.

Each concern lives in its own module (`observability.request_id`, `security_headers`,
`observability.access_log`, `observability.metrics`); they share this single layer because
every ASGI layer costs an extra coroutine frame per request and per streamed chunk, and
together they were a measurable share of the gateway's overhead (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from oai_gateway.middleware.security_headers import SECURITY_HEADERS
from oai_gateway.observability.access_log import log_access
from oai_gateway.observability.context import SCOPE_KEY, RequestContext
from oai_gateway.observability.metrics import GatewayMetrics
from oai_gateway.observability.request_id import request_id
from oai_gateway.observability.series import counter_inc
from oai_gateway.server.asgi import ASGIApp, Headers, Message, Receive, Scope, Send

CLIENT_CLOSED = 499  # nginx's convention for "the client went away first"


class RequestLifecycleMiddleware:
    """Outermost layer: creates the request's context, so every later layer can rely on it."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: GatewayMetrics,
        *,
        security_headers: bool,
        on_done: Callable[[RequestContext, int], None] | None = None,
    ) -> None:
        self.app = app
        self._metrics = metrics
        # +1 as a request begins, -1 at its end.
        self._add_in_flight = counter_inc(metrics.in_flight)
        self._on_done = on_done  # the usage ledger's recorder, when a store keeps usage
        self._extra_headers: Headers = list(SECURITY_HEADERS) if security_headers else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext(request_id(scope))
        scope[SCOPE_KEY] = context
        extra = [(b"x-request-id", context.request_id.encode("ascii")), *self._extra_headers]

        # A plain function handing back the server's awaitable, not a coroutine of its own: it
        # runs for every streamed chunk, where a coroutine frame per chunk costs more than this.
        def send_with_headers(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                context.status = message["status"]
                context.response_started = True
                message["headers"] = [*message.get("headers", ()), *extra]
            return send(message)

        add_in_flight = self._add_in_flight
        add_in_flight(1.0)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            add_in_flight(-1.0)
            status = CLIENT_CLOSED if context.client_disconnected else context.status
            self._metrics.observe(context, status)
            log_access(scope, context, status)
            if self._on_done is not None:
                self._on_done(context, status)
