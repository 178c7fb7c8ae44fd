"""A loopback aiohttp server in its own thread, with request recording and fault injection."""

from __future__ import annotations

import asyncio
import contextlib
import json as _json
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Literal, Self

from aiohttp import web
from aiohttp.typedefs import Handler

JSON = dict[str, Any]
FaultKind = Literal[
    "status",
    "reset_before_headers",
    "invalid_json",
    "delay_headers",
    "stream_break",
    "stream_stall",
    "stream_garbage",
    "stream_error_event",
]
STREAM_FAULTS: frozenset[str] = frozenset(
    {"stream_break", "stream_stall", "stream_garbage", "stream_error_event"}
)
_WAIT_S = 5.0


def dumps(obj: Any) -> bytes:
    return _json.dumps(obj, separators=(",", ":")).encode()


def json_response(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=dumps(payload), content_type="application/json")


def openai_error_body(
    message: str,
    type_: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    """An OpenAI error envelope as raw bytes, handy for ``Fault(kind="status", body=...)``."""
    return dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # includes the query string
    headers: dict[str, str]  # lower-case keys
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return _json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Fault:
    """Misbehaviour applied to every API request (health paths excluded) until cleared.

    Fields used per kind:
      status: ``status``, ``body`` (raw bytes), ``headers``.
      reset_before_headers: none.  invalid_json: ``body`` (a default non-JSON body if empty).
      delay_headers: ``delay_s``, then the normal answer.
      stream_break / stream_garbage / stream_error_event: ``after_chunks`` JSON events first.
      stream_stall: ``after_chunks``, then ``delay_s`` of silence, then the rest of the stream.
    ``path_prefix`` limits the fault to request paths starting with it.
    Stream kinds do nothing to non-streaming requests.
    """

    kind: FaultKind
    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    after_chunks: int = 0
    path_prefix: str = ""


class ReplyError(Exception):
    """Raised by request helpers to short-circuit a handler with a ready response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class UpstreamServer:
    health_paths: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        api_key: str | None = None,
        chunk_delay_s: float = 0.0,
        stream_chunks: int = 3,
    ) -> None:
        self.api_key = api_key
        self.chunk_delay_s = chunk_delay_s
        self.stream_chunks = stream_chunks
        self.fault: Fault | None = None
        self.requests: list[RecordedRequest] = []
        self.base_url = ""
        self._cond = threading.Condition()
        self._disconnects = 0
        self.in_flight = 0  # API requests being answered now, and the most at once
        self.most_in_flight = 0
        self._stopping = False
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # --- provider hooks -------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def error(
        self,
        request: web.Request,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        del request
        payload = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        return json_response(status, payload)

    def mid_stream_error(self, first_event: JSON | None) -> bytes:
        """The bytes a provider sends when generation fails after the stream started."""
        del first_event
        return b"data: " + openai_error_body("upstream generation failed", "server_error") + b"\n\n"

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._stopping = False
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
            ready.set()
            if not failure:
                loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(_WAIT_S):
            raise RuntimeError(f"{type(self).__name__} did not start within {_WAIT_S}s")
        if failure:
            self._thread.join(_WAIT_S)
            self._thread = None
            raise RuntimeError(f"{type(self).__name__} failed to start") from failure[0]

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 2**20)
        self.add_routes(app)
        # handler_cancellation makes a peer hang-up cancel the handler, which is how
        # disconnects during sleeps (delays, stalls) are observed. The short shutdown timeout
        # cuts in-flight requests on stop(), like an upstream dying, instead of draining them.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None
        )
        await runner.setup()
        # A restart reuses the first port so a gateway configured with base_url finds it again.
        await web.TCPSite(runner, "127.0.0.1", self._port).start()
        self._runner = runner
        self._port = runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{self._port}"

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        self._stopping = True
        if runner is not None:
            with contextlib.suppress(TimeoutError):  # the loop is stopped below anyway
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(_WAIT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_WAIT_S)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- observation ----------------------------------------------------------------------

    @property
    def disconnects(self) -> int:
        with self._cond:
            return self._disconnects

    def wait_for_disconnect(self, timeout: float, count: int = 1) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._disconnects >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= count, timeout)

    def clear(self) -> None:
        """Forget recorded requests, the fault and the disconnect count."""
        with self._cond:
            self.requests.clear()
            self.fault = None
            self._disconnects = 0
            self.most_in_flight = 0

    def _count_disconnect(self) -> None:
        if self._stopping:
            return  # shutdown cancels handlers too; that is not a client hanging up
        with self._cond:
            self._disconnects += 1
            self._cond.notify_all()

    # --- request pipeline -----------------------------------------------------------------

    def active_fault(self, request: web.Request) -> Fault | None:
        fault = self.fault
        if fault is None or request.path in self.health_paths:
            return None
        return fault if request.path.startswith(fault.path_prefix) else None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._cond:
            self.requests.append(RecordedRequest(request.method, request.path_qs, headers, body))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self._cond.notify_all()
        try:
            fault = self.active_fault(request)
            if fault is not None and fault.kind not in STREAM_FAULTS:
                early = await self._apply_fault(request, fault)
                if early is not None:
                    return early
            if (
                self.api_key is not None
                and request.path not in self.health_paths
                and request.headers.get("Authorization") != f"Bearer {self.api_key}"
            ):
                return self.auth_error(request)
            return await handler(request)
        except ReplyError as exc:
            return exc.response
        except web.HTTPNotFound:
            return self.error(request, 404, f"Invalid URL ({request.method} {request.path})")
        except web.HTTPMethodNotAllowed:
            return self.error(request, 405, f"Method {request.method} not allowed")
        except asyncio.CancelledError:
            self._count_disconnect()
            raise
        finally:
            with self._cond:
                self.in_flight -= 1

    def auth_error(self, request: web.Request) -> web.Response:
        return self.error(request, 401, "Incorrect API key provided.", code="invalid_api_key")

    async def _apply_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        if fault.kind == "status":
            headers = dict(fault.headers)
            if not any(k.lower() == "content-type" for k in headers):
                is_json = fault.body.lstrip().startswith(b"{")
                headers["Content-Type"] = "application/json" if is_json else "text/plain"
            return web.Response(status=fault.status, body=fault.body, headers=headers)
        if fault.kind == "reset_before_headers":
            _close_transport(request, reset=True)
            return web.Response()  # never written: aiohttp drops it on the closed transport
        if fault.kind == "invalid_json":
            body = fault.body or b'{"id": "truncated", "choices": [<html>'
            return web.Response(status=200, body=body, content_type="application/json")
        await asyncio.sleep(fault.delay_s)  # delay_headers
        return None

    async def read_json(self, request: web.Request) -> JSON:
        try:
            body = _json.loads(await request.read())
        except ValueError:
            raise ReplyError(self.error(request, 400, "Request body is not valid JSON")) from None
        if not isinstance(body, dict):
            raise ReplyError(self.error(request, 400, "Request body must be a JSON object"))
        return body

    async def sse(
        self,
        request: web.Request,
        events: Sequence[JSON],
        *,
        done: bool = True,
        named: bool = False,
    ) -> web.StreamResponse:
        """Send ``events`` as SSE, applying any stream fault and ``chunk_delay_s``.

        ``named`` frames each event as the Responses API does (``event: <type>`` first).
        """
        fault = self.active_fault(request)
        if fault is not None and fault.kind not in STREAM_FAULTS:
            fault = None
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        frames = [_named(e) if named else b"data: " + dumps(e) + b"\n\n" for e in events]
        if done:
            frames.append(b"data: [DONE]\n\n")
        try:
            for i, frame in enumerate(frames):
                if fault is not None and i == fault.after_chunks:
                    if fault.kind == "stream_break":
                        _close_transport(request)
                        return resp
                    if fault.kind == "stream_error_event":
                        failure = _failed_event(i) if named else None
                        await resp.write(
                            failure or self.mid_stream_error(events[0] if events else None)
                        )
                        await resp.write_eof()
                        return resp
                    if fault.kind == "stream_garbage":
                        await resp.write(b"data: not-json\n\n")
                    else:
                        await asyncio.sleep(fault.delay_s)
                if i and self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                await resp.write(frame)
            await resp.write_eof()
        except ConnectionResetError:
            self._count_disconnect()
        return resp


def _named(event: JSON) -> bytes:
    return b"event: " + str(event.get("type")).encode() + b"\ndata: " + dumps(event) + b"\n\n"


def _failed_event(sequence_number: int) -> bytes:
    """A Responses stream's own error event, as OpenAI sends it when generation fails."""
    return _named(
        {
            "type": "error",
            "code": "server_error",
            "message": "upstream generation failed",
            "param": None,
            "sequence_number": sequence_number,
        }
    )


def _close_transport(request: web.Request, *, reset: bool = False) -> None:
    """Close the connection; with `reset` as a reset (RST, not FIN): the upstream took the
    request and dropped it, which the gateway must not mistake for a kept-alive connection
    closed while idle."""
    if request.transport is not None:
        sock = request.transport.get_extra_info("socket")
        if reset and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        request.transport.close()
