"""A small HTTP/1.1 client: keep-alive connections to one origin, responses parsed by httptools.

The gateway's upstream traffic is one shape only (a request head rendered ahead of time, a JSON
body, an answer read whole or relayed as it arrives), so a general-purpose client spends most of
its time on things never used here. This module does that one shape on plain asyncio protocols;
`client.py` puts the gateway's policy (timeouts, retries, limits, errors) on top.

A connection is an explicit state machine (`State`), and one rule, `Connection.reusable()`, decides
whether it may carry another request: only a finished exchange with no byte past its message, on
a kept-alive connection whose reading is not paused. Anything else is closed, so no byte an
upstream sent during one request can ever be read as the answer to the next.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from collections import deque
from typing import Final, cast

import httptools

# A relayed stream is consumed as it arrives; a body read whole is drained in a loop. Reading
# pauses only when a consumer falls this far behind, so a slow client cannot make the gateway
# buffer an upstream's answer without bound; the next read takes it all and resumes.
_PAUSE_AT: Final = 1024 * 1024
_JOIN_BELOW: Final = 64 * 1024
# One budget for an answer's heads (interim ones included), chunk extensions and trailers, and a
# cap on its header fields: a hostile upstream cannot make the gateway buffer or re-join headers.
MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEADER_FIELDS: Final = 128
# Room for the framing of one chunk (size line, CRLFs), so only extensions and trailers count.
_CHUNK_FRAMING: Final = 32


class State(enum.Enum):
    IDLE = "idle"  # new or pooled: no exchange
    SENT = "request sent"  # the request is written; the answer's head is not complete
    HEAD = "head"  # the head is complete, no body byte yet
    BODY = "body"
    DONE = "done"  # the answer's message is complete
    CLOSED = "closed"


# The states of an exchange in progress (an answer is awaited or being read).
_EXCHANGING: Final = frozenset({State.SENT, State.HEAD, State.BODY})


class ConnectError(Exception):
    """The connection could not be opened: the upstream never saw the request."""

    retryable = True  # another try may succeed (refused, unreachable, timed out)

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectTimeoutError(ConnectError):
    """Opening the connection took longer than allowed."""


class TLSError(ConnectError):
    """The TLS handshake failed (a certificate not verified, a protocol mismatch): not retried,
    since the same certificate fails the same way."""

    retryable = False


class ProtocolError(Exception):
    """The upstream's bytes are not a valid HTTP/1.1 response, or exceed what is accepted."""


class DisconnectedError(Exception):
    """The upstream closed the connection before its answer was complete."""

    def __init__(self, *, stale: bool = False) -> None:
        super().__init__("stale keep-alive connection" if stale else "connection closed")
        # A pooled connection closed before any byte of its answer: the upstream dropped it
        # while idle and never read the request, so sending again on a new one is safe.
        self.stale = stale


class BodyTooLargeError(Exception):
    """The answer is larger than the caller accepts."""


class ReadTimeoutError(TimeoutError):
    """The answer (or, when streaming, the next part of it) did not come in time, or the
    gateway's consumer of it did not read it in time."""


class WriteTimeoutError(ReadTimeoutError):
    """The upstream did not read the request in time."""


class _StopParsingError(Exception):
    """Raised inside a parser callback to stop parsing; the reason is in `Connection._error`."""


class _Answer:
    """The answer being read on a connection: what httptools' callbacks make of its bytes."""

    state: State
    _loop: asyncio.AbstractEventLoop
    _parser: httptools.HttpResponseParser
    _transport: asyncio.Transport | None
    _paused: bool

    def _wake(self) -> None:
        raise NotImplementedError

    def _reset(self) -> None:
        """Forget the previous answer: a new exchange starts."""
        self.status = 0
        self.headers: dict[str, str] = {}
        self._fields = 0
        self._interim = False
        self._keep_alive = False
        self._complete = False
        self._past_message = False  # bytes arrived after the message: never reusable
        self._error: BaseException | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._overhead = 0  # bytes of this answer that are not body
        self._received = 0
        self._body_limit: int | None = None
        self._last_data = self._last_read = self._loop.time()

    def on_message_begin(self) -> None:
        if self.state is State.DONE:
            self._past_message = True  # a second message nobody asked for has begun
            raise _StopParsingError

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state is State.SENT:
            self._fields += 1
            if self._fields > MAX_HEADER_FIELDS:
                self._error = ProtocolError(f"more than {MAX_HEADER_FIELDS} header fields")
                raise _StopParsingError
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            previous = self.headers.get(key)
            # Re-joining a repeated field is bounded by the field cap and the byte budget.
            self.headers[key] = text if previous is None else f"{previous}, {text}"
        # A trailer field: counted in the byte budget, never merged into the headers.

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101:
            self._error = ProtocolError("the upstream switched protocols, which nobody asked for")
            raise _StopParsingError
        if 100 <= status < 200:
            # An interim answer (103 Early Hints, a stray 100 Continue): the real one follows.
            self.headers = {}
            self._fields = 0
            self._interim = True
            return
        self.status = status
        self._keep_alive = self._parser.should_keep_alive()
        self.state = State.HEAD
        self._wake()

    def on_chunk_header(self) -> None:
        self._overhead -= _CHUNK_FRAMING

    def on_body(self, body: bytes) -> None:
        # Called for every chunk of a stream: what can wait for the end of the read (the byte
        # budget, the state, pausing, waking the reader) is done once per read, after it.
        self._chunks.append(body)
        self._buffered += len(body)
        if self._body_limit is not None and self._buffered > self._body_limit:
            self._error = BodyTooLargeError()
            raise _StopParsingError

    def _bodied(self) -> None:
        """After a read that brought bytes of the body, on a connection still open."""
        if self.state is State.HEAD:
            self.state = State.BODY
        if self._body_limit is not None:  # read whole: nobody to wake until it is complete
            return
        if self._buffered > _PAUSE_AT and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.state = State.DONE
        self._complete = True
        self._wake()

    def _take(self) -> bytes:
        chunks, self._chunks = self._chunks, []
        self._buffered = 0
        self._resume()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _resume(self) -> None:
        if self._paused and self._transport is not None and self.state is not State.CLOSED:
            self._paused = False
            self._transport.resume_reading()

    def _until_close(self) -> bool:
        """A body without a length or chunked framing ends when the connection does."""
        coding = self.headers.get("transfer-encoding", "").rpartition(",")[2].strip().lower()
        return coding != "chunked" and "content-length" not in self.headers


class Connection(_Answer, asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle_limit = 0.0
        self._paused = False
        self._exchanges = 0
        self.state = State.IDLE
        self.idle_since = 0.0
        self._reset()

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def reusable(self) -> bool:
        """The one rule for the pool: done, nothing past the message, keep-alive, not paused."""
        return (
            self.state is State.DONE
            and not self._past_message
            and self._keep_alive
            and not self._paused
        )

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if self.state is State.DONE:
            self._past_message = True
            return
        if self.state not in _EXCHANGING:
            self.close()  # bytes nobody asked for: the connection can no longer be trusted
            return
        self._last_data = self._loop.time()
        self._received += len(data)
        self._overhead += len(data)
        buffered = self._buffered
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the upstream switched protocols, which nobody asked for"))
        except httptools.HttpParserError as exc:
            if self._complete:
                self._past_message = True  # garbage after a complete answer: that answer stands
            else:
                self._fail(self._error or ProtocolError(str(exc)))
        if self._buffered > buffered:
            self._overhead -= self._buffered - buffered
            if self.state is not State.CLOSED:
                self._bodied()
        if not self._complete and self._overhead > MAX_HEAD_BYTES:
            self._fail(ProtocolError(f"head or trailers larger than {MAX_HEAD_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        was, self.state = self.state, State.CLOSED
        self._pool.forget(self)
        if was in _EXCHANGING and self._error is None:
            if was is not State.SENT and self._until_close():
                self._complete = True
            else:
                # A clean close (no reset) of a reused connection before any byte of the answer.
                stale = exc is None and self._exchanges > 1 and self._received == 0
                self._error = DisconnectedError(stale=stale)
        self._wake()

    # -- one exchange ---------------------------------------------------------------------

    def send(
        self, head: bytes, body: bytes | None, *, deadline: float | None, idle_limit: float
    ) -> None:
        """Write a whole request; `deadline` bounds the answer, `idle_limit` each wait for it
        and each pause of its consumer."""
        if self.state is not State.IDLE or self._transport is None:
            raise RuntimeError(f"a request sent on a connection in state {self.state.value}")
        self._reset()
        self.state = State.SENT
        self._exchanges += 1
        self._idle_limit = idle_limit
        when = deadline if deadline is not None else self._last_data + idle_limit
        self._timer = self._loop.call_at(when, self._on_timer, deadline is not None)
        if body is None:
            self._transport.write(head)
        elif len(body) < _JOIN_BELOW:
            self._transport.write(head + body)  # one segment for the usual small JSON body
        else:
            self._transport.writelines((head, body))

    async def read_head(self) -> None:
        while self.status == 0:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read_chunk(self) -> bytes:
        """The next part of the body as it arrived, or b"" once the body is complete."""
        while True:
            self._last_read = self._loop.time()
            if self._chunks:
                # Everything that has arrived leaves together: a relay then forwards the events
                # of one upstream read in one write instead of one per chunk of the framing.
                return self._take()
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
        self._resume()
        while not self._complete:
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._take()

    def release(self) -> None:
        """End the exchange: a reusable connection goes back to the pool, any other closes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.reusable():
            self.state = State.IDLE
            self._chunks, self._buffered = [], 0
            self.idle_since = self._loop.time()
            self._pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        """Drop the connection at once; an upstream mid-answer sees it and can stop working."""
        if self._transport is not None and self.state is not State.CLOSED:
            self._transport.abort()
        self.state = State.CLOSED

    # -- internals ------------------------------------------------------------------------

    def _on_timer(self, absolute: bool) -> None:
        self._timer = None
        if self.state not in _EXCHANGING and self.state is not State.DONE:
            return
        now = self._loop.time()
        if absolute and self.state is not State.DONE:
            self._fail(self._timeout_error())
            return
        if self._waiter is None:
            # Nobody is reading: the gateway's consumer (a slow client) is behind, not the
            # upstream. It gets as long as the upstream does, then the slot is given back.
            until = self._last_read + self._idle_limit
            if now < until:
                self._timer = self._loop.call_at(until, self._on_timer, False)
            elif self.state is State.DONE:
                self.close()  # the answer stays readable; the pool slot is free
            else:
                self._fail(ReadTimeoutError("the answer was not read in time"))
            return
        quiet_until = self._last_data + self._idle_limit
        if now < quiet_until:
            self._timer = self._loop.call_at(quiet_until, self._on_timer, False)
            return
        self._fail(self._timeout_error())

    def _timeout_error(self) -> ReadTimeoutError:
        unsent = self._transport is not None and self._transport.get_write_buffer_size() > 0
        if self.state is State.SENT and unsent:
            return WriteTimeoutError("the upstream did not read the request in time")
        return ReadTimeoutError("the upstream did not answer in time")

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
            if connection.state is State.IDLE and connection.idle_since > oldest:
                return connection
            connection.close()
            self.forget(connection)
        try:
            async with asyncio.timeout(connect_timeout):
                while len(self._open) >= self._size:
                    handed = await self._wait_for_turn()
                    if handed is not None and handed.state is State.IDLE:
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
                raise _connect_error(exc) from None
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


def _connect_error(exc: OSError) -> ConnectError:
    """The reason a connection failed, kept: a TLS failure is not an unreachable upstream."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TLSError(f"certificate verification failed: {exc.verify_message or exc.reason}")
    if isinstance(exc, ssl.SSLError):
        return TLSError(f"TLS handshake failed: {exc.reason or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError("connection refused")
    return ConnectError(exc.strerror or str(exc) or type(exc).__name__)
