"""The gateway's upstream policy: one keep-alive pool per provider, timeouts, retries, limits.

The HTTP/1.1 itself is `http1.py`, a client built for exactly this traffic after aiohttp (itself
chosen over httpx) was measured spending most of the gateway's per-request CPU; see
docs/performance.md. Nothing outside these two modules touches an upstream socket.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from oai_gateway.errors import GatewayError, UpstreamError, UpstreamTimeoutError
from oai_gateway.upstream import http1

CONNECT_RETRIES = 2
_RETRY_BACKOFF_S = (0.05, 0.2)
MAX_BODY_BYTES = 128 * 1024 * 1024
# An error answer is only ever shown in part (a message, a code): more than this is never read.
MAX_ERROR_BODY_BYTES = 64 * 1024
# Shorter than the 5 s idle limit of common servers, so a pooled connection is dropped here
# before the upstream closes it under a request that could then not be retried.
_KEEPALIVE_S = 4.0
_MAX_CONNECT_S = 10.0


class Timer(Protocol):
    """Where the time spent waiting on the upstream is added up (Server-Timing, access log)."""

    upstream_s: float


class RequestHook(Protocol):
    """Sees every upstream attempt (tracing); may add headers to the request it is shown."""

    def started(
        self, client: UpstreamClient, method: str, path: str, headers: dict[str, str]
    ) -> object: ...

    def finished(self, token: object, status: int | None, error: BaseException | None) -> None: ...


# Optional instrumentation: observability/tracing.py registers its hook here when tracing is
# configured, before any client starts; empty (and so free) otherwise.
REQUEST_HOOKS: list[RequestHook] = []


class UpstreamResponse:
    """An upstream answer whose headers have arrived; the body is read on demand."""

    __slots__ = ("_client", "_connection", "_timer", "headers", "status")

    def __init__(self, client: UpstreamClient, connection: http1.Connection, timer: Timer) -> None:
        self._client = client
        self._connection: http1.Connection | None = connection
        self._timer = timer
        self.status = connection.status
        self.headers: Mapping[str, str] = connection.headers

    @property
    def content_type(self) -> str:
        value = self.headers.get("content-type", "application/octet-stream")
        return value.partition(";")[0].strip().lower()

    async def read(self) -> bytes:
        """The whole body, at most MAX_BODY_BYTES (an oversized body is an upstream error);
        of an error answer (status >= 400) at most its first MAX_ERROR_BODY_BYTES."""
        connection = self._connection
        if connection is None:
            return b""
        started = time.perf_counter()
        try:
            if self.status >= 400:
                return await self._prefix(connection, MAX_ERROR_BODY_BYTES)
            if int(self.headers.get("content-length", 0)) > MAX_BODY_BYTES:
                raise http1.BodyTooLargeError
            return await connection.read_body(MAX_BODY_BYTES)
        except http1.BodyTooLargeError:
            raise UpstreamError(
                f"{self._client.label} sent a response larger than {MAX_BODY_BYTES} bytes."
            ) from None
        except (TimeoutError, http1.DisconnectedError, http1.ProtocolError) as exc:
            raise self._client.transport_error(exc) from None
        finally:
            self._timer.upstream_s += time.perf_counter() - started
            self.close()

    @staticmethod
    async def _prefix(connection: http1.Connection, limit: int) -> bytes:
        """At most `limit` bytes of the body; the rest is never read (the connection closes)."""
        parts: list[bytes] = []
        size = 0
        while size < limit and (part := await connection.read_chunk()):
            parts.append(part)
            size += len(part)
        return b"".join(parts)[:limit]

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; waits between them are bounded by the provider timeout."""
        connection = self._connection
        if connection is None:
            return
        try:
            while part := await connection.read_chunk():
                yield part
        except (TimeoutError, http1.DisconnectedError, http1.ProtocolError) as exc:
            # A stream cut before its first event had no answer yet either (SPEC §11); once
            # the client has a byte, nothing is retried whatever the error is named.
            raise _unanswered(self._client.transport_error(exc), exc) from None

    def close(self) -> None:
        """Release the connection; an unfinished body closes it so the upstream stops work."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.release()


class UpstreamClient:
    """A keep-alive connection pool to one upstream, with the request head pre-rendered."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        timeout_s: float,
        label: str,
        unreachable_hint: str,
        pool_size: int = 512,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("not an http(s) URL")
        if url.username is not None or url.password is not None or url.query:
            # Refused in configuration already (settings.http_url); never sent nor shown.
            raise ValueError("a base URL must not carry user:password@ or a query")
        self.base_url = base_url
        self.label = label
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self._tls = url.scheme == "https"
        self._prefix = url.path.rstrip("/")
        self._unreachable_hint = unreachable_hint
        self._pool_size = pool_size
        self.timeout_s = timeout_s
        self._connect_s = min(timeout_s, _MAX_CONNECT_S)
        self._fixed_head = _header_lines({"host": url.netloc, **headers})
        self._pool: http1.Pool | None = None
        # SPEC §4.2a; a member of a provider with several upstreams moves on instead (§11).
        self.connect_retries = CONNECT_RETRIES

    async def start(self) -> None:
        self._pool = http1.Pool(
            self.host,
            self.port,
            tls=ssl.create_default_context() if self._tls else None,
            size=self._pool_size,
            idle_s=_KEEPALIVE_S,
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        request_id: str,
        timer: Timer,
        stream: bool = False,
        deadline: float | None = None,
    ) -> UpstreamResponse:
        """Send one request; retry only when it never reached the upstream (SPEC §4.2a)."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        until = self._until(pool, stream, deadline)
        attempt, stale_retried = 0, False
        while True:
            try:
                return await self._attempt(
                    pool, method, path, body=body, request_id=request_id, timer=timer, until=until
                )
            except _TRANSPORT_FAILURES as exc:
                attempt, stale_retried = await self._again(exc, attempt, stale_retried)

    async def _again(self, exc: Exception, attempt: int, stale_retried: bool) -> tuple[int, bool]:
        """After a failed try: the counters for one more, or the error when there is none."""
        if isinstance(exc, http1.ConnectError):
            if not exc.retryable or attempt >= self.connect_retries:
                raise _unanswered(self.transport_error(exc), exc) from None
            await asyncio.sleep(_RETRY_BACKOFF_S[min(attempt, len(_RETRY_BACKOFF_S) - 1)])
            return attempt + 1, stale_retried
        # A pooled connection the upstream had closed while idle: it never read this request,
        # so it goes once more on a new connection.
        if isinstance(exc, http1.DisconnectedError) and exc.stale and not stale_retried:
            return attempt, True
        raise _unanswered(self.transport_error(exc), exc) from None

    def _until(self, pool: http1.Pool, stream: bool, deadline: float | None) -> float | None:
        # A non-streaming answer has one budget, shared by all upstream calls of one client
        # request; a stream has none in total, only a bound on each silence.
        if stream:
            return None
        until = pool.loop.time() + self.timeout_s
        if deadline is not None:
            until = min(until, pool.loop.time() + max(deadline - time.monotonic(), 0.001))
        return until

    async def _attempt(
        self,
        pool: http1.Pool,
        method: str,
        path: str,
        *,
        body: bytes | None,
        request_id: str,
        timer: Timer,
        until: float | None,
    ) -> UpstreamResponse:
        """One try, seen by the request hooks: a connection, the request, the answer's head."""
        traced: dict[str, str] = {}
        tokens = [hook.started(self, method, path, traced) for hook in REQUEST_HOOKS]
        head = self._head(method, path, body, request_id, traced)
        started = time.perf_counter()
        try:
            connection = await self._exchange(pool, head, body, until)
        except BaseException as exc:
            self._finished(tokens, None, exc)
            raise
        finally:
            timer.upstream_s += time.perf_counter() - started
        self._finished(tokens, connection.status, None)
        return UpstreamResponse(self, connection, timer)

    async def _exchange(
        self, pool: http1.Pool, head: bytes, body: bytes | None, until: float | None
    ) -> http1.Connection:
        """One attempt: a connection, the request written, the head of the answer read."""
        connect_s = self._connect_s
        if until is not None:
            connect_s = max(min(connect_s, until - pool.loop.time()), 0.001)
        connection = await pool.acquire(connect_s)
        connection.send(head, body, deadline=until, idle_limit=self.timeout_s)
        try:
            await connection.read_head()
        except BaseException:
            connection.release()  # unfinished: the connection is closed, not reused
            raise
        return connection

    def _head(
        self,
        method: str,
        path: str,
        body: bytes | None,
        request_id: str,
        traced: dict[str, str],
    ) -> bytes:
        # The request id was validated on the way in (request_id.py); hook headers are not ours.
        lines = [
            f"{method} {self._prefix}{path} HTTP/1.1\r\n",
            self._fixed_head,
            f"x-request-id: {request_id}\r\n",
        ]
        if traced:
            lines.append(_header_lines(traced))
        if body is not None:
            lines.append(f"content-type: application/json\r\ncontent-length: {len(body)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    @staticmethod
    def _finished(tokens: list[object], status: int | None, error: BaseException | None) -> None:
        for hook, token in zip(REQUEST_HOOKS, tokens, strict=False):
            hook.finished(token, status, error)

    def transport_error(self, exc: BaseException) -> GatewayError:
        """Translate a transport failure into the gateway's error tree."""
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, http1.ConnectTimeoutError):
            return UpstreamTimeoutError(
                f"{self.label} did not accept a connection in time: {self._unreachable_hint}."
            )
        if isinstance(exc, http1.TLSError):
            return UpstreamError(f"{self.label} refused a secure connection: {exc.reason}.")
        if isinstance(exc, http1.ConnectError):
            return UpstreamError(
                f"{self.label} is not reachable ({exc.reason}): {self._unreachable_hint}."
            )
        if isinstance(exc, TimeoutError):
            return UpstreamTimeoutError(
                f"{self.label} did not answer within {self.timeout_s:g} s; retry later, or raise "
                "the provider's timeout if the model is slow."
            )
        if isinstance(exc, http1.DisconnectedError):
            return UpstreamError(f"{self.label} closed the connection before the answer was done.")
        return UpstreamError(f"{self.label} sent an invalid HTTP response.")


_TRANSPORT_FAILURES = (
    http1.ConnectError,
    http1.DisconnectedError,
    TimeoutError,
    http1.ProtocolError,
)


def _unanswered(error: GatewayError, cause: BaseException) -> GatewayError:
    """Name a failure that happened before any answer head, which another upstream may retry."""
    if isinstance(cause, http1.ConnectTimeoutError):
        error.failure = "connect_timeout"
    elif isinstance(cause, http1.TLSError):
        error.failure = "tls"
    elif isinstance(cause, http1.ConnectError):
        error.failure = "refused"
    elif isinstance(cause, http1.DisconnectedError):
        error.failure = "reset"
    return error


# Set by the gateway on every request, or hop-by-hop: a provider's configured headers cannot.
RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "expect",
        "host",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-request-id",
    }
)


def header_problem(name: str, value: str) -> str | None:
    """Why a configured header cannot be sent upstream, or None (names compared lower-case)."""
    if not name or any(c in name for c in " \t\r\n\0:"):
        return f"header name {name!r} is not a valid field name"
    if name.lower() in RESERVED_HEADERS:
        return f"header {name!r} is set by the gateway and cannot be configured"
    if any(c in value for c in "\r\n\0"):
        return f"header {name!r} has a line break or NUL in its value"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return f"header {name!r} has a value that is not latin-1 (HTTP/1.1 sends bytes)"
    return None


def _header_lines(headers: Mapping[str, str]) -> str:
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"header {name!r} has a line break or colon where none may be")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"header {name!r} has a value that is not latin-1") from None
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


def json_headers(api_key: str | None, extra: Mapping[str, str]) -> dict[str, Any]:
    """The headers sent on every upstream call of a provider; the client's own never are.

    Names are lower-cased, so a configured `Accept` replaces the default instead of being
    sent beside it."""
    headers: dict[str, Any] = {
        "accept": "application/json",
        # Said outright: the client decodes no compression, and none is worth it on the hot path.
        "accept-encoding": "identity",
        "user-agent": "oai-gateway",
    }
    headers.update((name.lower(), value) for name, value in extra.items())
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers
