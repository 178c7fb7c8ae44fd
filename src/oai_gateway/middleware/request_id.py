"""Request ids (SPEC §4.2): keep a valid client id or make one; return it on every response."""

from __future__ import annotations

import re
import uuid

from oai_gateway.asgi import ASGIApp, Message, Receive, Scope, Send, header
from oai_gateway.context import SCOPE_KEY, RequestContext

_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


class RequestIdMiddleware:
    """Outermost layer: creates the request's context, so every later layer can rely on it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = header(scope, b"x-request-id")
        if supplied is not None and _VALID.fullmatch(supplied):
            request_id = supplied.decode("ascii")
        else:
            request_id = new_request_id()
        context = RequestContext(request_id)
        scope[SCOPE_KEY] = context
        id_header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                context.status = message["status"]
                context.response_started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        await self.app(scope, receive, send_with_id)
