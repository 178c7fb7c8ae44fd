"""The HTTP/1.1 client's connection state machine against upstreams that misbehave on purpose.

Each case is a finding of the transport review: bytes past a message, oversized heads, trailers,
a consumer that stops reading, an upstream that stops reading, stale keep-alive connections,
an unasked-for protocol switch and close-delimited bodies.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from oai_gateway.errors import UpstreamError, UpstreamTimeoutError
from oai_gateway.upstream import http1
from oai_gateway.upstream.client import UpstreamClient
from tests.upstream.test_http1 import (
    OK_HEAD,
    RunLoop,
    ScriptedServer,
    Timer,
    call,
    client_for,
    replies,
    run,
    serving,
)

__all__ = ["run"]  # the fixture, re-used


def answer(body: bytes) -> bytes:
    return OK_HEAD + b"content-length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize(
    "extra",
    [
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 5\r\n\r\nwrong",
        b"HTTP/1.1 50",
        b"\r\n\r\nnot http at all",
    ],
    ids=["whole-message", "partial-head", "garbage"],
)
def test_bytes_past_a_message_never_decide_the_next_answer(extra: bytes, run: RunLoop) -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        first = server.connections == 1
        while True:
            await server.read_request(reader)
            # The extra bytes go in the same write as A's answer, so they land in the same read.
            writer.write(answer(b'"a"') + extra if first else answer(b'"b"'))
            await writer.drain()
            first = False

    async def scenario() -> None:
        async with serving(handler) as (server, client):
            assert await call(client) == b'"a"'
            assert await call(client) == b'"b"'
        assert server.connections == 2  # the first connection was not trusted again

    run(scenario())


@pytest.mark.parametrize(
    "headers",
    [
        b"x-big: " + b"h" * (1300 * 1024) + b"\r\n",
        b"".join(b"x-many-%d: v\r\n" % i for i in range(200)),
        b"".join(b"set-cookie: %d\r\n" % i for i in range(20000)),
    ],
    ids=["1.3-MiB-field", "200-fields", "20000-repeated"],
)
def test_an_oversized_response_head_is_an_invalid_response(headers: bytes, run: RunLoop) -> None:
    async def scenario() -> None:
        head = OK_HEAD + headers + b"content-length: 2\r\n\r\n{}"
        async with serving(replies(head)) as (_server, client):
            with pytest.raises(UpstreamError, match="invalid HTTP response"):
                await call(client)

    run(scenario())


def test_a_head_with_many_repeats_below_the_budget_is_joined_once(run: RunLoop) -> None:
    async def scenario() -> None:
        cookies = b"".join(b"set-cookie: c%d\r\n" % i for i in range(100))
        async with serving(replies(OK_HEAD + cookies + b"content-length: 2\r\n\r\n{}")) as (
            _server,
            client,
        ):
            response = await client.request("GET", "/x", request_id="r", timer=Timer())
            assert response.headers["set-cookie"] == ", ".join(f"c{i}" for i in range(100))
            assert await response.read() == b"{}"

    run(scenario())


def test_trailers_are_not_merged_into_the_headers_and_count_against_the_budget(
    run: RunLoop,
) -> None:
    small = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nx-trailer: 1\r\n\r\n"
    )
    huge = small.replace(b"x-trailer: 1", b"x-trailer: " + b"t" * (200 * 1024))

    async def scenario() -> None:
        async with serving(replies(small)) as (_server, client):
            response = await client.request("GET", "/x", request_id="r", timer=Timer())
            assert await response.read() == b"{}"
            assert "x-trailer" not in response.headers
        async with serving(replies(huge)) as (_server, client):
            response = await client.request("GET", "/x", request_id="r", timer=Timer())
            with pytest.raises(UpstreamError, match="invalid HTTP response"):
                await response.read()

    run(scenario())


def test_an_answer_nobody_reads_gives_its_pool_slot_back(run: RunLoop) -> None:
    """A slow-reading client stops the relay; after the provider timeout the upstream
    connection is dropped, so the pool slot it held serves someone else."""

    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(40):  # 2.5 MiB: more than the client buffers before it pauses
            writer.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with serving(handler, timeout_s=0.3, pool_size=1) as (_server, client):
            stream = await client.request(
                "POST", "/x", body=b"{}", request_id="r", timer=Timer(), stream=True
            )
            await asyncio.sleep(0.6)  # the consumer is away for longer than the timeout
            second = await client.request(
                "POST", "/x", body=b"{}", request_id="r2", timer=Timer(), stream=True
            )
            second.close()
            with pytest.raises(UpstreamTimeoutError):
                async for _ in stream.chunks():
                    pass
            stream.close()

    run(scenario())


def test_an_upstream_that_never_reads_the_request_is_a_write_timeout(run: RunLoop) -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await asyncio.sleep(5)  # accepts, never reads

    async def scenario() -> None:
        async with ScriptedServer(handler) as server:
            pool = http1.Pool("127.0.0.1", server.port, tls=None, size=1, idle_s=1.0)
            connection = await pool.acquire(1.0)
            body = b"x" * (16 * 1024 * 1024)  # far more than the socket buffers hold
            head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
            connection.send(head, body, deadline=None, idle_limit=0.3)
            with pytest.raises(http1.WriteTimeoutError):
                await connection.read_head()
            connection.release()
            pool.close()

    run(scenario())


def test_a_stale_kept_alive_connection_is_retried_once_on_a_new_one(run: RunLoop) -> None:
    """The upstream's idle timeout closes a pooled connection just as a request goes out on it:
    not one byte came back, so the request goes again, on a new connection."""

    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        if server.connections == 1:
            await reader.readuntil(b"\r\n\r\n")  # the next request arrives; a clean close
            return
        while True:
            await server.read_request(reader)
            writer.write(answer(b"{}"))
            await writer.drain()

    async def scenario() -> None:
        async with serving(handler) as (server, client):
            assert await call(client) == b"{}"
            assert await call(client) == b"{}"
        assert server.connections == 2

    run(scenario())


def test_a_reset_or_a_new_connection_closing_is_not_retried(run: RunLoop) -> None:
    async def scenario() -> None:
        async with serving(replies(b"", then_close=True)) as (server, client):
            with pytest.raises(UpstreamError, match="closed the connection before"):
                await call(client)
        assert server.connections == 1

    run(scenario())


def test_an_unasked_protocol_switch_is_an_invalid_response(
    run: RunLoop, caplog: pytest.LogCaptureFixture
) -> None:
    switch = (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    )

    async def scenario() -> None:
        async with serving(replies(switch + b"\x81\x00")) as (_server, client):
            with pytest.raises(UpstreamError, match="invalid HTTP response"):
                await call(client)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run(scenario())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n",
        b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
    ],
    ids=["http/1.1", "http/1.0", "non-chunked-coding"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "relayed"])
def test_a_close_delimited_body_is_complete_not_cut(
    head: bytes, stream: bool, run: RunLoop
) -> None:
    async def scenario() -> None:
        async with serving(replies(head + b'{"ok":1}', then_close=True)) as (server, client):
            assert await call(client, stream=stream) == b'{"ok":1}'
            assert await call(client, stream=stream) == b'{"ok":1}'  # never reused
        assert server.connections == 2

    run(scenario())


def test_a_refused_connection_keeps_its_reason(run: RunLoop) -> None:
    async def scenario() -> None:
        async with ScriptedServer(replies(b"")) as server:
            port = server.port
        client: UpstreamClient = client_for(port)
        client.connect_retries = 0
        await client.start()
        try:
            with pytest.raises(UpstreamError, match=r"not reachable \(connection refused\)"):
                await call(client)
        finally:
            await client.aclose()

    run(scenario())
