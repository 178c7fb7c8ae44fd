"""One access line per request (SPEC §4.5), written after the response is done."""

from __future__ import annotations

import logging

from oai_gateway.asgi import ASGIApp, Receive, Scope, Send
from oai_gateway.context import request_context
from oai_gateway.log import ACCESS_LOGGER

_log = logging.getLogger(ACCESS_LOGGER)
CLIENT_CLOSED = 499  # nginx's convention for "the client went away first"


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = request_context(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            if _log.isEnabledFor(logging.INFO):
                usage = context.usage or {}
                _log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "route": context.route or scope["path"][:200],
                        "provider": context.provider,
                        "model": context.model,
                        "status": CLIENT_CLOSED if context.client_disconnected else context.status,
                        "duration_ms": round(context.elapsed_s() * 1000.0, 3),
                        "upstream_ms": round(context.upstream_s * 1000.0, 3),
                        "request_id": context.request_id,
                        "stream": context.stream,
                        "prompt_tokens": usage.get("prompt_tokens"),
                        "completion_tokens": usage.get("completion_tokens"),
                        "total_tokens": usage.get("total_tokens"),
                    },
                )
