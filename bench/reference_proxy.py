"""The bare raw-ASGI proxy: the Python limit the gateway is measured against.

No auth, no request ids, no logging, no metrics, no normalisation: read the body, POST it to
the upstream with one pooled aiohttp session, return the bytes (or relay the stream). Run with
`python bench/reference_proxy.py --port P --upstream http://127.0.0.1:U/v1`.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ReferenceProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    connector = aiohttp.TCPConnector(limit=512)
                    self.session = aiohttp.ClientSession(connector=connector)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    assert self.session is not None
                    await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        assert self.session is not None
        path = scope["path"].split("/v1", 1)[1]
        headers = {"content-type": "application/json"}
        async with self.session.post(self.upstream + path, data=body, headers=headers) as reply:
            content_type = reply.headers.get("content-type", "application/json").encode()
            start_headers = [(b"content-type", content_type)]
            await send(
                {"type": "http.response.start", "status": reply.status, "headers": start_headers}
            )
            if content_type.startswith(b"text/event-stream"):
                async for part in reply.content.iter_any():
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "http.response.body", "body": await reply.read()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        ReferenceProxy(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="none",
        access_log=False,
        log_level="warning",
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
