"""Records each finished request in the Prometheus metrics; wraps nothing per message."""

from __future__ import annotations

from oai_gateway.asgi import ASGIApp, Receive, Scope, Send
from oai_gateway.context import request_context
from oai_gateway.metrics import GatewayMetrics
from oai_gateway.middleware.access_log import CLIENT_CLOSED


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = request_context(scope)
        in_flight = self._metrics.in_flight
        in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            in_flight.dec()
            status = CLIENT_CLOSED if context.client_disconnected else context.status
            self._metrics.observe(context, status)
