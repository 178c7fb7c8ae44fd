"""ASGI type aliases and the few helpers every layer uses to send a response."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_CONTENT_TYPE = (b"content-type", b"application/json")
# Scope key under which a server that can (server/protocol.py) hands the app a DisconnectSignal.
DISCONNECT_SIGNAL = "oai_gateway.disconnect_signal"


class DisconnectSignal:
    """Lets the server cancel a request's work the moment its client's connection is lost.

    Without it the app must watch `receive()` for `http.disconnect` in a task of its own, which
    costs a task per request; servers that cannot provide it get exactly that fallback.
    """

    __slots__ = ("disconnected", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None  # set by the app while cancellable work runs
        self.disconnected = False

    def connection_lost(self) -> None:
        self.disconnected = True
        if self.task is not None:
            self.task.cancel()


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (`name` lower-case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def send_bytes(send: Send, status: int, body: bytes, headers: Headers) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
