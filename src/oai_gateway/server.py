"""uvicorn's HTTP protocol, with its one app-less answer in OpenAI's error envelope.

httptools rejects a malformed request (a non-numeric Content-Length, a header with a raw CR,
…) before any ASGI app runs, and uvicorn answers it with a text/plain 400. SPEC §5 wants every
error, from any layer, in the envelope; this subclass is the only place that can give it.
"""

from __future__ import annotations

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from oai_gateway.middleware.request_id import new_request_id
from oai_gateway.middleware.security_headers import SECURITY_HEADERS

_BODY = orjson.dumps(
    {
        "error": {
            "message": "The HTTP request is malformed and could not be parsed.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
)


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose parser-level 400 is a JSON error envelope."""

    def send_400_response(self, msg: str) -> None:
        lines = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            lines.extend([name, b": ", value, b"\r\n"])
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_BODY)).encode()),
            (b"connection", b"close"),
            (b"x-request-id", new_request_id().encode()),
            *SECURITY_HEADERS,
        ]
        for name, value in headers:
            lines.extend([name, b": ", value, b"\r\n"])
        lines.extend([b"\r\n", _BODY])
        self.transport.write(b"".join(lines))
        self.transport.close()
