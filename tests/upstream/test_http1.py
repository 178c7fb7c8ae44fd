"""The upstream HTTP/1.1 client against raw loopback servers that misbehave on purpose.

Each test runs one event loop holding both the client and a scripted asyncio server, so the
server can answer in ways no well-behaved framework would (no length, garbage, stalls).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from oai_gateway.errors import GatewayError, UpstreamError, UpstreamTimeoutError
from oai_gateway.upstream import http1
from oai_gateway.upstream.client import UpstreamClient, json_headers

Handler = Callable[["ScriptedServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"


class Timer:
    upstream_s = 0.0


class ScriptedServer:
    """A loopback server running `handler` per connection, counting connections."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self._handler = handler
        self._tls = tls
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self._handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


RunLoop = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> RunLoop:
    """Runs a scenario on each event loop the gateway may serve on (uvloop's transports are
    not asyncio's classes, so each gets its own pass)."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run_on_loop(coroutine: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(asyncio.wait_for(coroutine, 10))

    return run_on_loop


@contextlib.asynccontextmanager
async def serving(
    handler: Handler, **options: Any
) -> AsyncIterator[tuple[ScriptedServer, UpstreamClient]]:
    """A scripted upstream and a started client for it, both closed afterwards."""
    async with ScriptedServer(handler) as server:
        client = client_for(server.port, **options)
        await client.start()
        try:
            yield server, client
        finally:
            await client.aclose()


def client_for(port: int, *, timeout_s: float = 5.0, pool_size: int = 512) -> UpstreamClient:
    return UpstreamClient(
        base_url=f"http://127.0.0.1:{port}/v1",
        headers={"authorization": "Bearer upstream-key", "x-extra": "1"},
        timeout_s=timeout_s,
        label="test upstream",
        unreachable_hint="start it",
        pool_size=pool_size,
    )


async def call(client: UpstreamClient, *, stream: bool = False) -> bytes:
    response = await client.request(
        "POST", "/chat/completions", body=b"{}", request_id="req_1", timer=Timer(), stream=stream
    )
    return await response.read()


def keep_alive(body: bytes) -> Handler:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await server.read_request(reader)
            writer.write(OK_HEAD + b"content-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    return handler


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Returns once `condition` holds, letting the loop run meanwhile; fails after `timeout_s`."""
    for _ in range(int(timeout_s / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"still false after {timeout_s} s")


def replies(data: bytes, *, then_close: bool = False) -> Handler:
    """A handler that reads one request, writes `data`, then hangs up or waits for the end."""

    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(data)
        await writer.drain()
        if not then_close:
            await reader.read()

    return handler


def test_request_head_carries_the_path_prefix_fixed_headers_id_and_length(run: RunLoop) -> None:
    async def scenario() -> None:
        async with serving(keep_alive(b'{"ok":true}')) as (server, client):
            assert await call(client) == b'{"ok":true}'
        head = server.requests[0].decode()
        assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
        for line in (
            f"host: 127.0.0.1:{server.port}",
            "authorization: Bearer upstream-key",
            "x-extra: 1",
            "x-request-id: req_1",
            "content-type: application/json",
            "content-length: 2",
        ):
            assert f"\r\n{line}\r\n" in head, (line, head)
        assert head.endswith("\r\n\r\n{}")

    run(scenario())


def test_one_connection_serves_sequential_requests(run: RunLoop) -> None:
    async def scenario() -> None:
        async with serving(keep_alive(b"{}")) as (server, client):
            for _ in range(5):
                assert await call(client) == b"{}"
        assert server.connections == 1
        assert len(server.requests) == 5

    run(scenario())


def test_connection_close_answers_are_not_reused(run: RunLoop) -> None:
    handler = replies(
        OK_HEAD + b"connection: close\r\ncontent-length: 2\r\n\r\n{}", then_close=True
    )

    async def scenario() -> None:
        async with serving(handler) as (server, client):
            for _ in range(3):
                assert await call(client) == b"{}"
        assert server.connections == 3

    run(scenario())


def test_body_without_length_ends_with_the_connection(run: RunLoop) -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(OK_HEAD + b"\r\n" + b'{"part":')
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b'"two"}')
        await writer.drain()

    async def scenario() -> None:
        async with serving(handler) as (server, client):
            assert await call(client) == b'{"part":"two"}'
            assert await call(client) == b'{"part":"two"}'  # a new connection, not the dead one
        assert server.connections == 2

    run(scenario())


def test_chunked_stream_is_relayed_part_by_part_as_it_arrives(run: RunLoop) -> None:
    parts = [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]

    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\n"
        )
        for part in parts:
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await keep_alive(b"{}")(server, reader, writer)

    async def scenario() -> None:
        async with serving(handler) as (server, client):
            response = await client.request(
                "POST", "/chat/completions", body=b"{}", request_id="r", timer=Timer(), stream=True
            )
            assert response.content_type == "text/event-stream"
            assert response.headers["set-cookie"] == "a=1, b=2"
            received = [part async for part in response.chunks()]
            response.close()
            assert received == parts
            await call(client)  # the connection went back to the pool after the last chunk
        assert server.connections == 1

    run(scenario())


def test_a_consumer_falling_behind_pauses_reading_and_loses_nothing(run: RunLoop) -> None:
    body = bytes(range(256)) * (12 * 1024)  # 3 MiB

    handler = replies(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)

    async def scenario() -> None:
        async with serving(handler) as (_server, client):
            response = await client.request(
                "GET", "/big", request_id="r", timer=Timer(), stream=True
            )
            connection = response._connection
            assert connection is not None
            # Nothing is read yet: the client must stop reading once over 1 MiB waits unread.
            await eventually(lambda: connection._paused)
            assert await response.read() == body
            assert not connection._paused

    run(scenario())


@pytest.mark.parametrize(
    "answer",
    [b"SMTP ready\r\n\r\n", OK_HEAD + b"transfer-encoding: chunked\r\n\r\nzz\r\n"],
    ids=["not-http", "bad-chunk-after-the-head"],
)
def test_garbage_is_an_invalid_response(answer: bytes, run: RunLoop) -> None:
    async def scenario() -> None:
        async with serving(replies(answer)) as (_server, client):
            with pytest.raises(UpstreamError, match="invalid HTTP response"):
                await call(client)

    run(scenario())


@pytest.mark.parametrize("cut", [b"", OK_HEAD, OK_HEAD + b"content-length: 100\r\n\r\n{"])
def test_a_connection_closed_mid_answer_is_reported(cut: bytes, run: RunLoop) -> None:
    async def scenario() -> None:
        async with serving(replies(cut, then_close=True)) as (_server, client):
            with pytest.raises(UpstreamError, match="closed the connection before"):
                await call(client)

    run(scenario())


def test_silence_past_the_timeout_is_a_timeout(run: RunLoop) -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        await asyncio.sleep(2.0)  # ten times the timeout: an answer now is one waited too long for
        writer.write(OK_HEAD + b"content-length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with serving(handler, timeout_s=0.2) as (_server, client):
            started = time.monotonic()
            with pytest.raises(UpstreamTimeoutError, match=r"did not answer within 0\.2 s"):
                await call(client)
            assert time.monotonic() - started > 0.15  # not before the timeout

    run(scenario())


def test_a_stream_times_out_on_silence_only(run: RunLoop) -> None:
    """Parts 0.05 s apart outlive a 0.5 s timeout (14 of them take longer than it); the silence
    after them then ends the stream. Gaps a tenth of the timeout leave room for a busy machine."""

    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(14):
            writer.write(b"2\r\nok\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
        await reader.read()

    async def scenario() -> None:
        async with serving(handler, timeout_s=0.5) as (_server, client):
            response = await client.request(
                "POST", "/x", body=b"{}", request_id="r", timer=Timer(), stream=True
            )
            received: list[bytes] = []

            async def drain() -> None:
                async for part in response.chunks():
                    received.append(part)

            with pytest.raises(UpstreamTimeoutError):
                await drain()
            response.close()
            assert b"".join(received) == b"ok" * 14

    run(scenario())


def test_a_slow_reader_is_not_the_upstreams_silence(run: RunLoop) -> None:
    """Data waiting unread for longer than the timeout is no reason to fail the stream."""

    handler = replies(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")

    async def scenario() -> None:
        async with serving(handler, timeout_s=0.1) as (_server, client):
            response = await client.request(
                "POST", "/x", body=b"{}", request_id="r", timer=Timer(), stream=True
            )
            await asyncio.sleep(0.3)
            assert [part async for part in response.chunks()] == [b"slow"]

    run(scenario())


def test_the_pool_never_opens_more_than_its_size(run: RunLoop) -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await server.read_request(reader)
            await asyncio.sleep(0.02)
            writer.write(OK_HEAD + b"content-length: 2\r\n\r\n{}")
            await writer.drain()

    async def scenario() -> None:
        async with serving(handler, pool_size=2) as (server, client):
            answers = await asyncio.gather(*(call(client) for _ in range(8)))
            assert answers == [b"{}"] * 8
        assert server.most_open <= 2
        assert len(server.requests) == 8

    run(scenario())


def test_a_full_pool_waits_no_longer_than_the_connect_timeout(run: RunLoop) -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(20):  # a stream that holds the only connection for 2 s
            writer.write(b"1\r\n.\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        await reader.read()

    async def scenario() -> None:
        async with serving(handler, timeout_s=0.3, pool_size=1) as (server, client):
            stream = await client.request(
                "POST", "/x", body=b"{}", request_id="r", timer=Timer(), stream=True
            )

            async def consume() -> None:  # read as it comes: the connection stays in use
                async for _ in stream.chunks():
                    pass

            reader = asyncio.create_task(consume())
            # The stream holds the connection for 2 s: failing at all means failing before it
            # came free, so the wait was bounded by the connect timeout, not by the stream.
            with pytest.raises(UpstreamTimeoutError, match="did not accept a connection in time"):
                await call(client)
            reader.cancel()
            stream.close()
        assert server.connections == 1

    run(scenario())


async def exchange(pool: http1.Pool) -> None:
    """One GET on a pooled connection, answered `{}` and released."""
    connection = await pool.acquire(1.0)
    connection.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", None, deadline=None, idle_limit=1.0)
    await connection.read_head()
    assert await connection.read_chunk() == b"{}"
    assert await connection.read_chunk() == b""
    connection.release()


def test_an_idle_connection_is_reused_until_it_expires(run: RunLoop) -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while not reader.at_eof():
            await server.read_request(reader)
            writer.write(OK_HEAD + b"content-length: 2\r\n\r\n{}")
            await writer.drain()

    async def scenario() -> None:
        async with ScriptedServer(handler) as server:
            pool = http1.Pool("127.0.0.1", server.port, tls=None, size=4, idle_s=0.05)
            await exchange(pool)
            await exchange(pool)  # released just now: reused
            assert server.connections == 1
            await asyncio.sleep(0.2)  # idle for longer than idle_s
            await exchange(pool)
            pool.close()
        assert server.connections == 2

    run(scenario())


def test_bytes_nobody_asked_for_drop_an_idle_connection(run: RunLoop) -> None:
    """idle_s is long here, so only the unasked bytes can explain a new connection."""
    released, dropped = asyncio.Event(), asyncio.Event()

    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        first = server.connections == 1
        await server.read_request(reader)
        writer.write(OK_HEAD + b"content-length: 2\r\n\r\n{}")
        await writer.drain()
        if first:
            await released.wait()  # the answer is complete and the connection back in the pool
            writer.write(b"HTTP/1.1 200 OK\r\n")  # nobody asked
            await writer.drain()
        await reader.read()  # returns when the client closes the connection
        if first:
            dropped.set()

    async def scenario() -> None:
        async with ScriptedServer(handler) as server:
            pool = http1.Pool("127.0.0.1", server.port, tls=None, size=4, idle_s=60)
            await exchange(pool)
            released.set()
            await asyncio.wait_for(dropped.wait(), 5)  # the client hung up on its own
            await exchange(pool)
            pool.close()
        assert server.connections == 2

    run(scenario())


def test_release_of_an_unfinished_answer_closes_the_connection(run: RunLoop) -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(OK_HEAD + b"content-length: 10\r\n\r\n{")
        await writer.drain()
        assert await reader.read() == b""  # the gateway hung up
        hung_up.set()

    hung_up = asyncio.Event()

    async def scenario() -> None:
        async with serving(handler) as (_server, client):
            response = await client.request("GET", "/x", request_id="r", timer=Timer())
            response.close()
            response.close()  # idempotent
            await asyncio.wait_for(hung_up.wait(), 2)

    run(scenario())


def test_header_values_cannot_smuggle_lines() -> None:
    with pytest.raises(ValueError, match="line break"):
        UpstreamClient(
            base_url="http://127.0.0.1:1/v1",
            headers={"x-evil": "a\r\nhost: elsewhere"},
            timeout_s=1,
            label="l",
            unreachable_hint="h",
        )
    with pytest.raises(ValueError, match="not an http"):
        UpstreamClient(
            base_url="ftp://x/", headers={}, timeout_s=1, label="l", unreachable_hint="h"
        )


def test_request_before_start_is_a_programming_error(run: RunLoop) -> None:
    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="start"):
            await call(client_for(1))

    run(scenario())


def test_transport_errors_map_into_the_gateway_tree() -> None:
    client = client_for(1)
    gateway_error = UpstreamError("already translated")
    assert client.transport_error(gateway_error) is gateway_error
    timeout = client.transport_error(http1.ConnectTimeoutError("no connection in time"))
    assert isinstance(timeout, UpstreamTimeoutError)
    refused = client.transport_error(http1.ConnectError("connection refused"))
    assert "not reachable (connection refused)" in str(refused)
    tls = client.transport_error(http1.TLSError("certificate verification failed: expired"))
    assert "refused a secure connection: certificate verification failed" in str(tls)
    unknown = client.transport_error(RuntimeError("?"))
    assert isinstance(unknown, GatewayError)
    assert "invalid HTTP response" in str(unknown)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_upstream_with_a_verified_certificate(
    certificate: tuple[Path, Path], run: RunLoop
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))

    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK_HEAD + b"content-length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with ScriptedServer(handler, server_tls) as server:
            await use(server.port)

    async def use(port: int) -> None:
        pool = http1.Pool("localhost", port, tls=client_tls, size=1, idle_s=1.0)
        connection = await pool.acquire(5.0)
        connection.send(
            b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n", None, deadline=None, idle_limit=5
        )
        await connection.read_head()
        assert connection.status == 200
        assert await connection.read_chunk() == b"{}"
        connection.release()
        pool.close()
        # A certificate the client does not trust never gets a request.
        untrusting = http1.Pool(
            "localhost", port, tls=ssl.create_default_context(), size=1, idle_s=1
        )
        with pytest.raises(http1.ConnectError):
            await untrusting.acquire(5.0)

    run(scenario())


def test_a_body_read_whole_stops_at_the_limit(run: RunLoop) -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(64):
            writer.write(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")  # 1 MiB in all, never finished
            await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with ScriptedServer(handler) as server:
            pool = http1.Pool("127.0.0.1", server.port, tls=None, size=1, idle_s=1.0)
            connection = await pool.acquire(1.0)
            connection.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", None, deadline=None, idle_limit=5)
            await connection.read_head()
            with pytest.raises(http1.BodyTooLargeError):
                await connection.read_body(100_000)
            connection.release()
            assert connection.closed
            pool.close()

    run(scenario())


def test_interim_answers_are_skipped_for_the_real_one(run: RunLoop) -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(OK_HEAD + b"content-length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with serving(handler) as (_server, client):
            response = await client.request("GET", "/x", request_id="r", timer=Timer())
            assert response.status == 200
            assert "link" not in response.headers
            assert await response.read() == b"{}"

    run(scenario())


def test_provider_headers_ask_for_uncompressed_json_and_carry_the_key() -> None:
    headers = json_headers("upstream-key", {"x-extra": "1"})
    assert headers["accept-encoding"] == "identity"
    assert headers["accept"] == "application/json"
    assert headers["authorization"] == "Bearer upstream-key"
    assert headers["x-extra"] == "1"
    assert "authorization" not in json_headers(None, {})
