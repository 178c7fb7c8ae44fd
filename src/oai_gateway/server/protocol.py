"""uvicorn's HTTP protocol, with its app-less answers in OpenAI's error envelope.

httptools rejects a malformed request (a non-numeric Content-Length, a header with a raw CR,
…) before any ASGI app runs, and uvicorn answers it with a text/plain 400. SPEC §5 wants every
error, from any layer, in the envelope; this subclass is the only place that can give it. It
also bounds the request head, which uvicorn's httptools protocol does not: without a limit a
client can make the gateway buffer an endless header.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from oai_gateway.middleware.security_headers import SECURITY_HEADERS
from oai_gateway.observability.request_id import new_request_id
from oai_gateway.server.asgi import DISCONNECT_SIGNAL, DisconnectSignal

MAX_HEAD_BYTES = 64 * 1024
_MALFORMED = "The HTTP request is malformed and could not be parsed."
_HEAD_TOO_LARGE = f"The request line and headers are larger than {MAX_HEAD_BYTES} bytes."
_REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}


def _envelope(message: str) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return orjson.dumps({"error": error})


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a bounded request head and its errors in the JSON envelope.

    It also gives each request a DisconnectSignal, so a lost connection cancels the request's
    work directly instead of through a watcher task per request.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._signals: list[DisconnectSignal] = []

    def on_message_begin(self) -> None:
        super().on_message_begin()
        signal = DisconnectSignal()
        self.scope[DISCONNECT_SIGNAL] = signal  # type: ignore[literal-required]
        # Keep only signals whose work is running, so a long keep-alive connection holds no more
        # than the requests in flight on it (one, unless the client pipelines).
        self._signals = [s for s in self._signals if s.task is not None]
        self._signals.append(signal)

    def connection_lost(self, exc: Exception | None) -> None:
        unanswered = self.cycle is not None and not self.cycle.response_complete
        super().connection_lost(exc)
        if unanswered:
            for signal in self._signals:
                signal.connection_lost()
        self._signals = []

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # an error answer already ended this connection
        if self._in_head:
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > MAX_HEAD_BYTES:
                self._send_error(431, _HEAD_TOO_LARGE)
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    def send_400_response(self, msg: str) -> None:
        self._send_error(400, _MALFORMED)

    def _send_error(self, status: int, message: str) -> None:
        body = _envelope(message)
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            lines.extend([name, b": ", value, b"\r\n"])
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-request-id", new_request_id().encode()),
            *SECURITY_HEADERS,
        ]
        for name, value in headers:
            lines.extend([name, b": ", value, b"\r\n"])
        lines.extend([b"\r\n", body])
        self.transport.write(b"".join(lines))
        self.transport.close()
