"""The keep-alive race: an upstream whose idle timeout is shorter than the pool's closes
connections just as requests go out on them. Every request must still get its answer: a
connection seen closing is never used, and one that closes under a request before a byte came
back is given up for a new one, once.

The upstream closes as servers with a lingering close do (nginx): FIN first, then it reads and
drops what still arrives. A reset instead (a server closing with unread bytes) is not retried,
since a reset is also how an upstream drops a request it has read (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import contextlib
import random

from tests.upstream.test_http1 import OK_HEAD, RunLoop, ScriptedServer, call, run, serving

__all__ = ["run"]
IDLE_S = 0.02


async def short_idle(
    server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while True:
        try:
            await asyncio.wait_for(server.read_request(reader), IDLE_S)
        except TimeoutError:
            writer.write_eof()  # idle too long: FIN, then drop whatever still comes
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(reader.read(), 1.0)
            return
        writer.write(OK_HEAD + b"content-length: 2\r\n\r\n{}")
        await writer.drain()


def test_requests_spaced_around_the_upstream_idle_timeout_all_succeed(run: RunLoop) -> None:
    chance = random.Random(7)

    async def scenario() -> None:
        async with serving(short_idle) as (server, client):
            for _ in range(40):
                assert await call(client) == b"{}"
                await asyncio.sleep(chance.uniform(IDLE_S * 0.7, IDLE_S * 1.3))
        assert len(server.requests) >= 40  # a retried request reached a second connection

    run(scenario())
