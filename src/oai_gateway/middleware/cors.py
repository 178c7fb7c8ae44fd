"""CORS (SPEC §4.4): installed only when origins are configured; off means no CORS headers.

When on, every answer carries `Vary: Origin`, allowed origin or not: an answer without CORS
headers must not be served from a shared cache to an allowed origin, nor the reverse.
"""

from __future__ import annotations

from collections.abc import Iterable

from oai_gateway.server.asgi import ASGIApp, Message, Receive, Scope, Send, header

ALLOWED_HEADERS = b"Authorization, Content-Type, X-Request-ID"
ALLOWED_METHODS = b"GET, POST, OPTIONS"
_VARY = (b"vary", b"Origin")


class CORSMiddleware:
    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self.app = app
        self._origins = frozenset(o.encode() for o in origins)
        self._any = b"*" in self._origins

    def _allowed(self, origin: bytes) -> bool:
        return self._any or origin in self._origins

    def _headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        return [(b"access-control-allow-origin", b"*" if self._any else origin), _VARY]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = header(scope, b"origin")
        if origin is None or not self._allowed(origin):
            await self.app(scope, receive, _with_headers(send, [_VARY]))
            return
        preflight = scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method")
        if preflight:
            headers = [
                *self._headers(origin),
                (b"access-control-allow-methods", ALLOWED_METHODS),
                (b"access-control-allow-headers", ALLOWED_HEADERS),
                (b"access-control-max-age", b"600"),
                (b"content-length", b"0"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        extra = [*self._headers(origin), (b"access-control-expose-headers", b"x-request-id")]
        await self.app(scope, receive, _with_headers(send, extra))


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *extra]
        await send(message)

    return send_with_headers
