"""A small HTTP/1.1 client: keep-alive connections to one origin, responses parsed by httptools.

The gateway's upstream traffic is one shape only (a request head rendered ahead of time, a JSON
body, an answer read whole or relayed as it arrives), so a general-purpose client spends most of
its time on things never used here. This module does that one shape on plain asyncio protocols;
`upstream.py` puts the gateway's policy (timeouts, retries, limits, errors) on top.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Final, cast

import httptools

# A relayed stream is consumed as it arrives; a body read whole is drained in a loop. Reading
# pauses only when a consumer falls this far behind, so a slow client cannot make the gateway
# buffer an upstream's answer without bound; the next read takes it all and resumes.
_PAUSE_AT: Final = 1024 * 1024
_JOIN_BELOW: Final = 64 * 1024


class ConnectError(Exception):
    """The connection could not be opened: the upstream never saw the request."""


class ConnectTimeoutError(ConnectError):
    """Opening the connection took longer than allowed."""


class ProtocolError(Exception):
    """The upstream's bytes are not a valid HTTP/1.1 response."""


class DisconnectedError(Exception):
    """The upstream closed the connection before its answer was complete."""


class BodyTooLargeError(Exception):
    """The answer is larger than the caller accepts."""


class ReadTimeoutError(TimeoutError):
    """The answer (or, when streaming, the next part of it) did not come in time."""


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle_limit = 0.0
        self._last_data = 0.0
        self._paused = False
        self._busy = False
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._headers_done = False
        self._interim = False
        self._keep_alive = False
        self._complete = False
        self._error: BaseException | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._body_limit: int | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            self.close()  # bytes nobody asked for: the connection can no longer be trusted
            return
        self._last_data = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        if self._busy and not self._complete and self._error is None:
            if self._headers_done and self._until_close():
                self._complete = True
            else:
                self._error = DisconnectedError()
        self._wake()

    # -- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An interim answer (103 Early Hints, a stray 100 Continue): the real one follows.
            self.headers = {}
            self._interim = True
            return
        self.status = status
        self._keep_alive = self._parser.should_keep_alive()
        self._headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._body_limit is not None:  # read whole: nobody to wake until it is complete
            if self._buffered > self._body_limit:
                self._fail(BodyTooLargeError())
            return
        if self._buffered > _PAUSE_AT and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._wake()

    # -- one exchange ---------------------------------------------------------------------

    def send(
        self, head: bytes, body: bytes | None, *, deadline: float | None, idle_limit: float
    ) -> None:
        """Write a whole request; `deadline` bounds the answer, `idle_limit` each wait for it."""
        assert self._transport is not None
        self._reset()
        self._busy = True
        self._idle_limit = idle_limit
        self._last_data = self._loop.time()
        when = deadline if deadline is not None else self._last_data + idle_limit
        self._timer = self._loop.call_at(when, self._on_timer, deadline is not None)
        if body is None:
            self._transport.write(head)
        elif len(body) < _JOIN_BELOW:
            self._transport.write(head + body)  # one segment for the usual small JSON body
        else:
            self._transport.writelines((head, body))

    async def read_head(self) -> None:
        while not self._headers_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read_chunk(self) -> bytes:
        """The next part of the body as it arrived, or b"" once the body is complete."""
        while True:
            if self._chunks:
                # Everything that has arrived leaves together: a relay then forwards the events
                # of one upstream read in one write instead of one per chunk of the framing.
                chunks, self._chunks = self._chunks, []
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._buffered = 0
                if self._paused:
                    self._paused = False
                    assert self._transport is not None
                    self._transport.resume_reading()
                return data
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read_body(self, limit: int) -> bytes:
        """The whole body once complete, joined once (BodyTooLargeError past `limit` bytes)."""
        self._body_limit = limit
        if self._buffered > limit:
            raise BodyTooLargeError
        if self._paused:
            self._paused = False
            assert self._transport is not None
            self._transport.resume_reading()
        while not self._complete:
            if self._error is not None:
                raise self._error
            await self._wait()
        chunks, self._chunks = self._chunks, []
        self._buffered = 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def release(self) -> None:
        """End the exchange: a finished, reusable connection goes back to the pool."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        reusable = self._complete and self._keep_alive and not self._chunks
        self._busy = False
        if reusable and not self.closed:
            self.idle_since = self._loop.time()
            self._pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        """Drop the connection at once; an upstream mid-answer sees it and can stop working."""
        if self._transport is not None and not self.closed:
            self._transport.abort()
        self.closed = True

    # -- internals ------------------------------------------------------------------------

    def _until_close(self) -> bool:
        """A body without a length or chunked framing ends when the connection does."""
        return "content-length" not in self.headers and "transfer-encoding" not in self.headers

    def _on_timer(self, absolute: bool) -> None:
        self._timer = None
        if not self._busy or self._complete:
            return
        now = self._loop.time()
        quiet_until = self._last_data + self._idle_limit
        if not absolute and (self._paused or self._waiter is None or now < quiet_until):
            # Not the upstream's silence: data came recently, or nobody is waiting for it.
            self._timer = self._loop.call_at(max(quiet_until, now + 0.05), self._on_timer, False)
            return
        self._fail(ReadTimeoutError())

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self.close()
        self._wake()

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Pool:
    """At most `size` open connections to one origin; idle ones are reused newest first."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        size: int,
        idle_s: float,
    ) -> None:
        self.host = host
        self.port = port
        self._tls = tls
        self._size = size
        self._idle_s = idle_s
        self._idle: list[Connection] = []
        self._open: set[Connection] = set()
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self.loop = asyncio.get_running_loop()

    async def acquire(self, connect_timeout: float) -> Connection:
        """An idle connection if one is still fresh, else a new one (ConnectError if refused)."""
        oldest = self.loop.time() - self._idle_s
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and connection.idle_since > oldest:
                return connection
            connection.close()
            self.forget(connection)
        try:
            async with asyncio.timeout(connect_timeout):
                while len(self._open) >= self._size:
                    handed = await self._wait_for_turn()
                    if handed is not None and not handed.closed:
                        return handed
                return await self._connect()
        except TimeoutError:
            raise ConnectTimeoutError(f"no connection to {self.host}:{self.port} in time") from None

    async def _connect(self) -> Connection:
        # Counted before the await, so concurrent connects cannot overshoot the limit.
        placeholder = Connection(self)
        self._open.add(placeholder)
        try:
            _, connection = await self.loop.create_connection(
                lambda: Connection(self),
                self.host,
                self.port,
                ssl=self._tls,
                server_hostname=self.host if self._tls is not None else None,
            )
        except BaseException as exc:
            self.forget(placeholder)  # its slot goes to whoever waits
            if isinstance(exc, OSError):
                raise ConnectError(str(exc) or type(exc).__name__) from None
            raise
        # The slot passes straight to the new connection; nobody waiting is woken for it.
        self._open.discard(placeholder)
        self._open.add(connection)
        return connection

    async def _wait_for_turn(self) -> Connection | None:
        """Wait until a connection is released (returned) or closed (None: a free slot)."""
        waiter: asyncio.Future[Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if not waiter.cancelled():  # handed over just as the wait was cut: pass it on
                handed = waiter.result()
                if handed is None:
                    self._hand_over(None)
                else:
                    self.put_back(handed)
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def put_back(self, connection: Connection) -> None:
        if not self._hand_over(connection):
            self._idle.append(connection)

    def forget(self, connection: Connection) -> None:
        """A connection is gone: its slot is free for someone waiting."""
        if connection in self._open:
            self._open.discard(connection)
            self._hand_over(None)

    def _hand_over(self, connection: Connection | None) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return True
        return False

    def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
