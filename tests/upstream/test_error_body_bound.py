"""An upstream error answer is read no further than its first 64 KiB."""

from __future__ import annotations

import asyncio

from oai_gateway.upstream.client import MAX_ERROR_BODY_BYTES
from tests.upstream.test_http1 import RunLoop, ScriptedServer, Timer, run, serving

__all__ = ["run"]


def test_an_error_body_is_read_only_to_its_bound_and_the_connection_dropped(run: RunLoop) -> None:
    sent: list[int] = []
    finished = asyncio.Event()

    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        size = 64 * 1024 * 1024
        writer.write(b"HTTP/1.1 500 Oops\r\ncontent-length: %d\r\n\r\n" % size)
        block = b"e" * 65536
        try:
            for _ in range(size // len(block)):
                writer.write(block)
                await writer.drain()
                sent.append(len(block))
        except ConnectionError:
            pass  # the gateway hung up, as it should
        finally:
            finished.set()

    async def scenario() -> None:
        async with serving(handler) as (_server, client):
            response = await client.request("GET", "/x", request_id="r", timer=Timer())
            assert response.status == 500
            body = await response.read()
            assert len(body) == MAX_ERROR_BODY_BYTES
            await asyncio.wait_for(finished.wait(), 5)
            assert sum(sent) < 32 * 1024 * 1024  # far from the 64 MiB it meant to send

    run(scenario())
