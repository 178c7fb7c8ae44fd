"""uvicorn's HTTP protocol, with the server edge owned here and its answers in OpenAI's envelope.

httptools rejects a malformed request (a non-numeric Content-Length, a header with a raw CR,
…) before any ASGI app runs, and uvicorn answers it with a text/plain 400. SPEC §5 wants every
error, from any layer, in the envelope; this subclass is the only place that can give it.

It also owns what uvicorn's httptools protocol leaves open to any client (docs/reliability.md,
threat model): a deadline for each request head (a silent or trickling connection is dropped), one
byte budget covering the head and a chunked body's trailers, a cap on open connections, the
keep-alive idle timeout, and a disconnect signal per request cycle, so a pipelined request does not
take the signal away from the one still running.

It subclasses uvicorn's private `httptools_impl`; pyproject.toml pins the uvicorn range it is tested
against and tests/server/test_uvicorn_contract.py fails loudly when the parts used here change.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from oai_gateway.middleware.security_headers import SECURITY_HEADERS
from oai_gateway.observability.request_id import new_request_id
from oai_gateway.server.asgi import DISCONNECT_SIGNAL, DisconnectSignal

# Room for the framing of one chunk (size line, CRLFs), so only extensions and trailers count.
_CHUNK_FRAMING = 32
_MALFORMED = "The HTTP request is malformed and could not be parsed."
_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """What one client connection may cost the server (settings SERVER_*)."""

    head_timeout_s: float = 10.0
    max_head_bytes: int = 64 * 1024
    max_connections: int = 1000
    keepalive_s: float = 5.0


def _envelope(message: str, kind: str) -> bytes:
    error = {"message": message, "type": kind, "param": None, "code": None}
    return orjson.dumps({"error": error})


def protocol_for(limits: EdgeLimits) -> type[EnvelopeHttpToolsProtocol]:
    """The protocol class uvicorn is given (`http=`), carrying these limits."""
    return type("EdgeHttpToolsProtocol", (EnvelopeHttpToolsProtocol,), {"limits": limits})


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with the edge limits of `limits` and its errors in the JSON envelope."""

    limits: ClassVar[EdgeLimits] = EdgeLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keepalive_s  # type: ignore[assignment]
        # Bytes of the current message that are not body: head, chunk extensions and trailers.
        self._overhead = 0
        # One timer per connection, not per request: it stays armed across the heads of a
        # kept-alive connection, and when it fires compares the clock with `_head_deadline`, the
        # deadline of the head in progress (None between heads), re-arming for what is left.
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_deadline: float | None = None
        self._awaiting_head = True
        self._cycles: list[RequestResponseCycle] = []

    # -- connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._send_error(503, "The gateway has too many open connections; retry later.")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)
        # Every cycle still unanswered learns it, the running one and any pipelined after it.
        for cycle in self._cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
                signal: DisconnectSignal = cycle.scope[DISCONNECT_SIGNAL]  # type: ignore[literal-required]
                signal.connection_lost()
        self._cycles = []

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # an error answer already ended this connection
        if self._awaiting_head and self._head_deadline is None:
            self._arm_head_timer()  # the first byte of a head on a kept-alive connection
        self._overhead += len(data)
        super().data_received(data)
        if self._overhead > self.limits.max_head_bytes and not self.transport.is_closing():
            message = (
                f"The request head and trailers are larger than {self.limits.max_head_bytes} bytes."
            )
            self._refuse(431, message)

    # -- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[DISCONNECT_SIGNAL] = DisconnectSignal()  # type: ignore[literal-required]

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_deadline = None  # the timer, if it fires before the next head, just stops
        super().on_headers_complete()
        # Keep only cycles still unanswered, so a long keep-alive connection holds no more than
        # the requests in flight on it (one, unless the client pipelines).
        self._cycles = [c for c in self._cycles if not c.response_complete]
        self._cycles.append(self.cycle)

    def on_chunk_header(self) -> None:
        self._overhead -= _CHUNK_FRAMING

    def on_body(self, body: bytes) -> None:
        self._overhead -= len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._overhead = 0
        self._awaiting_head = True

    # -- answers without an app -----------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, _MALFORMED)

    def _arm_head_timer(self) -> None:
        self._head_deadline = self.loop.time() + self.limits.head_timeout_s
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.head_timeout_s, self._head_timer_fired
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timer_fired(self) -> None:
        self._head_timer = None
        if self._head_deadline is None:
            return  # no head in progress: the next one re-arms
        left = self._head_deadline - self.loop.time()
        if left > 0:
            self._head_timer = self.loop.call_later(left, self._head_timer_fired)
        else:
            self._head_timed_out()

    def _head_timed_out(self) -> None:
        message = f"The request head did not arrive within {self.limits.head_timeout_s:g} s."
        self._refuse(408, message)

    def _refuse(self, status: int, message: str) -> None:
        """Answer with an error and close; only close when the answer would not be the first."""
        running = self.cycle is not None and not self.cycle.response_complete
        if self._awaiting_head and not running:
            self._send_error(status, message)  # nothing else is on this connection
        elif status == 408:
            # A pipelined head trickles in behind an answer in flight: that answer is the last.
            self.cycle.keep_alive = False
        else:
            # Past a head already answered (a 401 sent while trailers pour in), or behind one in
            # flight: a second answer would be taken for the next request's, so only hang up.
            self.transport.close()

    def _send_error(self, status: int, message: str) -> None:
        kind = "server_error" if status == 503 else "invalid_request_error"
        body = _envelope(message, kind)
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
