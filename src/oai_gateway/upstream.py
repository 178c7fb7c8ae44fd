"""The one module that talks HTTP to upstreams: a pooled, long-lived aiohttp client per provider.

aiohttp was chosen over httpx by measurement (see docs/performance.md); nothing outside this
module imports either library, so the choice can be revisited in one place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp

from oai_gateway.errors import GatewayError, UpstreamError, UpstreamTimeoutError

CONNECT_RETRIES = 2
_RETRY_BACKOFF_S = (0.05, 0.2)
MAX_BODY_BYTES = 128 * 1024 * 1024
_CHUNK = 64 * 1024
# Optional instrumentation: oai_gateway.tracing appends its aiohttp TraceConfig here when
# tracing is configured, before any client starts; empty (and so free) otherwise.
TRACE_CONFIGS: list[aiohttp.TraceConfig] = []


class Timer(Protocol):
    """Where the time spent waiting on the upstream is added up (Server-Timing, access log)."""

    upstream_s: float


class UpstreamResponse:
    """An upstream answer whose headers have arrived; the body is read on demand."""

    __slots__ = ("_client", "_response", "_timer", "headers", "status")

    def __init__(
        self, client: UpstreamClient, response: aiohttp.ClientResponse, timer: Timer
    ) -> None:
        self._client = client
        self._response = response
        self._timer = timer
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    @property
    def content_type(self) -> str:
        return self._response.content_type

    async def read(self) -> bytes:
        """The whole body, at most MAX_BODY_BYTES (an oversized body is an upstream error)."""
        started = time.perf_counter()
        try:
            length = self._response.content_length
            if length is not None and length <= MAX_BODY_BYTES:
                return await self._response.read()
            parts: list[bytes] = []
            size = 0
            async for part in self._response.content.iter_chunked(_CHUNK):
                size += len(part)
                if size > MAX_BODY_BYTES:
                    raise UpstreamError(
                        f"{self._client.label} sent a response larger than {MAX_BODY_BYTES} bytes."
                    )
                parts.append(part)
            return b"".join(parts)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise self._client.transport_error(exc) from None
        finally:
            self._timer.upstream_s += time.perf_counter() - started
            self.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; waits between chunks are bounded by the provider timeout."""
        try:
            async for part in self._response.content.iter_any():
                yield part
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise self._client.transport_error(exc) from None

    def close(self) -> None:
        """Release the connection; an unfinished body closes it so the upstream stops work."""
        if self._response.content.is_eof():
            self._response.release()
        else:
            self._response.close()


class UpstreamClient:
    """A keep-alive connection pool to one upstream, with the provider's headers pre-built."""

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
        self.base_url = base_url
        self.label = label
        self._unreachable_hint = unreachable_hint
        self._headers = dict(headers)
        self._pool_size = pool_size
        connect_s = min(timeout_s, 10.0)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_s)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_s, sock_read=timeout_s
        )
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size,
            limit_per_host=self._pool_size,
            # Shorter than the 5 s idle limit of common servers, so a pooled connection is
            # dropped here before the upstream closes it under a request we cannot retry.
            keepalive_timeout=4.0,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            read_bufsize=256 * 1024,
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
            trace_configs=TRACE_CONFIGS or None,  # tracing hook, see TRACE_CONFIGS
        )
        # aiohttp silently resends a GET once when the connection drops after sending it; SPEC
        # §4.2a allows no retry once the upstream may have the request, and it has no public
        # switch for this, so the flag is turned off where the library keeps it.
        if hasattr(self._session, "_retry_connection"):
            self._session._retry_connection = False

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        session = self._session
        if session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        headers = {"x-request-id": request_id}
        if body is not None:
            headers["content-type"] = "application/json"
        timeout = self._stream_timeout if stream else self._timeout
        if deadline is not None and not stream:
            # One client request may take several upstream calls; together they get one budget.
            remaining = max(deadline - time.monotonic(), 0.001)
            if remaining < self.timeout_s:
                timeout = aiohttp.ClientTimeout(total=remaining, sock_connect=remaining)
        url = self.base_url + path
        for attempt in range(CONNECT_RETRIES + 1):
            started = time.perf_counter()
            try:
                response = await session.request(
                    method, url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                if attempt == CONNECT_RETRIES:
                    raise self.transport_error(exc) from None
                await asyncio.sleep(_RETRY_BACKOFF_S[attempt])
                continue
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                raise self.transport_error(exc) from None
            finally:
                timer.upstream_s += time.perf_counter() - started
            return UpstreamResponse(self, response, timer)
        raise AssertionError("unreachable")  # pragma: no cover

    def transport_error(self, exc: BaseException) -> GatewayError:
        """Translate a client-library failure into the gateway's error tree."""
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return UpstreamTimeoutError(
                f"{self.label} did not accept a connection in time: {self._unreachable_hint}."
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamError(f"{self.label} is not reachable: {self._unreachable_hint}.")
        if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
            return UpstreamTimeoutError(
                f"{self.label} did not answer within {self.timeout_s:g} s; retry later, or raise "
                "the provider's timeout if the model is slow."
            )
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            return UpstreamError(f"{self.label} closed the connection before the answer was done.")
        if isinstance(exc, aiohttp.ClientOSError):
            return UpstreamError(f"{self.label} reset the connection.")
        return UpstreamError(f"{self.label} sent an invalid HTTP response.")


def json_headers(api_key: str | None, extra: Mapping[str, str]) -> dict[str, Any]:
    """The headers sent on every upstream call of a provider; the client's own never are."""
    headers: dict[str, Any] = {"accept": "application/json", "user-agent": "oai-gateway"}
    headers.update(extra)
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers
