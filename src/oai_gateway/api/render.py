"""`Responder`: the one place a response is sent from, and so the one place that sets the
response flags the rest of the gateway reads (`response_complete`, `client_disconnected`)."""

from __future__ import annotations

from collections.abc import Iterable

from oai_gateway.errors import GatewayError
from oai_gateway.observability.context import RequestContext
from oai_gateway.server.asgi import JSON_CONTENT_TYPE, Headers, Send, send_bytes
from oai_gateway.wire.sse import frame

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"x-accel-buffering", b"no"),
]


class Responder:
    __slots__ = ("_context", "_extra", "_send")

    def __init__(self, send: Send, context: RequestContext) -> None:
        self._send = send
        self._context = context
        self._extra: Headers = []

    def add_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Headers for whatever response this request gets (rate-limit state, say)."""
        self._extra.extend(headers)

    async def raw(self, status: int, body: bytes, headers: Headers) -> None:
        """A complete response with these headers (plus its length)."""
        if self._extra:
            headers.extend(self._extra)
        self._context.response_complete = True
        await send_bytes(self._send, status, body, headers)

    async def json(self, status: int, body: bytes) -> None:
        """A complete JSON response, with the request's Server-Timing."""
        await self.raw(status, body, [JSON_CONTENT_TYPE, self._timing(), *self._routing()])

    async def error(self, exc: GatewayError) -> None:
        """The error as a JSON response, or, once a stream's headers are gone, as its last event."""
        context = self._context
        if context.response_started:
            # Headers are gone: all that is left is to say so in the stream and stop.
            if not context.response_complete:
                context.response_complete = True
                message = {"type": "http.response.body", "body": frame(exc.envelope())}
                await self._send({**message, "more_body": False})
            return
        headers = [JSON_CONTENT_TYPE, self._timing()]
        headers.extend((k.encode(), v.encode()) for k, v in exc.headers.items())
        await self.raw(exc.http_status, exc.body(), headers)

    async def start_stream(self) -> None:
        headers = [*SSE_HEADERS, self._timing(), *self._routing(), *self._extra]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    async def stream_piece(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end_stream(self) -> None:
        self._context.response_complete = True
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    def client_left(self) -> None:
        """The client is gone: nothing more is sent, and the request is logged as such."""
        self._context.client_disconnected = True

    def _routing(self) -> Headers:
        """Which upstream of a routed provider served the answer, after how many attempts
        (SPEC §11); errors carry these in their own headers."""
        context = self._context
        if not context.attempts or context.upstream is None:
            return []
        return [
            (b"x-gateway-upstream", context.upstream.encode()),
            (b"x-gateway-attempts", str(context.attempts).encode()),
        ]

    def _timing(self) -> tuple[bytes, bytes]:
        return (b"server-timing", self._context.server_timing())
