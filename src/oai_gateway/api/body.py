"""Reading a request body once, within MAX_REQUEST_BYTES (SPEC §3.1, §5)."""

from __future__ import annotations

from oai_gateway.errors import ClientDisconnectedError, InvalidRequestError, PayloadTooLargeError
from oai_gateway.server.asgi import Receive, Scope, header


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body is larger than the gateway's limit of {limit} bytes."
    )


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body; a declared or actual size over `limit` stops reading at once."""
    declared = header(scope, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequestError("The Content-Length header is not a number.")
        if int(declared) > limit:
            raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)
