"""Very fast OpenAI-compatible loopback upstream for benchmarks.

Usage::

    python bench/upstream.py --port 8001 [--chunks 20] [--chunk-delay-ms 0] [--delay-ms 0]

It speaks just enough HTTP/1.1 (keep-alive, chunked SSE) for a gateway or an
HTTP client library to be measured against it.  It is written on a raw asyncio
``Protocol`` with httptools parsing (and uvloop when installed) rather than on
an ASGI framework, because every microsecond spent here is charged to whatever
is being benchmarked: responses are rendered once at start-up and written with
a single ``transport.write`` whenever no artificial delay is configured.

With ``--port 0`` the kernel picks a free port; the first line on stdout is
always ``listening http://HOST:PORT`` so a parent process can wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson

_CREATED = 1_700_000_000
_MODEL = "bench-model"
_EMBED_MODEL = "bench-embedding"
# A cheap byte search instead of a JSON parse keeps chat/completions at the
# speed of a static file server; the benchmark bodies are written by us.
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
# Bounds the per-input-count cache so a client sending many distinct batch
# sizes cannot grow the upstream's memory without limit.
_EMBED_CACHE_MAX = 256
# Past this many queued requests on one connection (only possible with
# pipelining under --delay-ms) stop reading until the backlog drains.
_MAX_PIPELINE = 64


@dataclass(frozen=True, slots=True)
class Reply:
    """One pre-rendered HTTP response.

    ``parts`` is the head followed by the body pieces that are written with
    ``--chunk-delay-ms`` between them; ``whole`` is their concatenation so the
    common no-delay case costs a single write.
    """

    parts: tuple[bytes, ...]
    whole: bytes
    keep_alive: bool


def _head(status: str, content_type: bytes, extra: bytes, keep_alive: bool) -> bytes:
    connection = b"" if keep_alive else b"connection: close\r\n"
    return (
        b"HTTP/1.1 "
        + status.encode("ascii")
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\n"
        + extra
        + connection
        + b"\r\n"
    )


def render_json(body: bytes, keep_alive: bool, status: str = "200 OK") -> Reply:
    head = _head(status, b"application/json", b"content-length: %d\r\n" % len(body), keep_alive)
    return Reply(parts=(head, body), whole=head + body, keep_alive=keep_alive)


def render_sse(events: Sequence[bytes], keep_alive: bool, prefix: bytes = b"data: ") -> Reply:
    head = _head(
        "200 OK",
        b"text/event-stream",
        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n",
        keep_alive,
    )
    chunks: list[bytes] = []
    for event in events:
        frame = prefix + event + b"\n\n"
        chunks.append(b"%x\r\n" % len(frame) + frame + b"\r\n")
    # The zero-length terminator rides with the last event so that a client
    # never waits an extra --chunk-delay-ms for the end of the body.
    chunks[-1] += b"0\r\n\r\n"
    return Reply(parts=(head, *chunks), whole=head + b"".join(chunks), keep_alive=keep_alive)


def _words(count: int) -> list[str]:
    return [f"tok{i} " for i in range(count)]


def chat_body(chunks: int) -> bytes:
    content = "".join(_words(chunks))
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": _CREATED,
            "model": _MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 32,
                "completion_tokens": chunks,
                "total_tokens": 32 + chunks,
            },
        }
    )


def chat_events(chunks: int) -> list[bytes]:
    events: list[bytes] = []
    for i, word in enumerate(_words(chunks)):
        delta: dict[str, Any] = {"content": word}
        if i == 0:
            delta["role"] = "assistant"
        last = i == chunks - 1
        events.append(
            orjson.dumps(
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion.chunk",
                    "created": _CREATED,
                    "model": _MODEL,
                    "choices": [
                        {"index": 0, "delta": delta, "finish_reason": "stop" if last else None}
                    ],
                }
            )
        )
    events.append(b"[DONE]")
    return events


def _responses_stream(chunks: int) -> tuple[list[Any], dict[str, Any]]:
    """The Responses events of the chat stream above, in OpenAI's exact shape, and the final
    Response: what a native upstream (OpenAI, Ollama, vLLM) sends for the same answer."""
    from oai_gateway.wire.responses.events import ChatStreamTranslator
    from oai_gateway.wire.responses.objects import echoed_fields

    translator = ChatStreamTranslator(model=_MODEL, echoed=echoed_fields({}))
    events = translator.start()
    for event in chat_events(chunks)[:-1]:  # all but [DONE]
        events.extend(translator.chunk(orjson.loads(event)))
    usage = {"prompt_tokens": 32, "completion_tokens": chunks, "total_tokens": 32 + chunks}
    events.extend(translator.chunk({"choices": [], "usage": usage}))
    events.extend(translator.finish())
    return events, events[-1]["response"]


def responses_events(chunks: int) -> list[bytes]:
    events, _ = _responses_stream(chunks)
    return [b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) for e in events]


def responses_body(chunks: int) -> bytes:
    return orjson.dumps(_responses_stream(chunks)[1])


def completion_body(chunks: int) -> bytes:
    return orjson.dumps(
        {
            "id": "cmpl-bench",
            "object": "text_completion",
            "created": _CREATED,
            "model": _MODEL,
            "choices": [
                {
                    "index": 0,
                    "text": "".join(_words(chunks)),
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 8, "completion_tokens": chunks, "total_tokens": 8 + chunks},
        }
    )


def completion_events(chunks: int) -> list[bytes]:
    events = [
        orjson.dumps(
            {
                "id": "cmpl-bench",
                "object": "text_completion",
                "created": _CREATED,
                "model": _MODEL,
                "choices": [
                    {
                        "index": 0,
                        "text": word,
                        "logprobs": None,
                        "finish_reason": "stop" if i == chunks - 1 else None,
                    }
                ],
            }
        )
        for i, word in enumerate(_words(chunks))
    ]
    events.append(b"[DONE]")
    return events


def models_body() -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": _MODEL, "object": "model", "created": _CREATED, "owned_by": "bench"},
                {"id": _EMBED_MODEL, "object": "model", "created": _CREATED, "owned_by": "bench"},
            ],
        }
    )


def embedding_input_count(body: bytes) -> int | None:
    """How many embeddings the request asks for, or None if it is malformed."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    value = payload.get("input")
    if isinstance(value, str):
        return 1
    if isinstance(value, list) and value:
        # A flat list of ints is one pre-tokenised input, not many inputs.
        if all(isinstance(item, int) for item in value):
            return 1
        return len(value)
    return None


class Upstream:
    """Routing and the pre-rendered responses, shared by every connection."""

    def __init__(self, chunks: int, dims: int, delay_s: float, chunk_delay_s: float) -> None:
        if chunks < 1:
            raise ValueError("--chunks must be at least 1")
        if dims < 1:
            raise ValueError("--dims must be at least 1")
        self.delay_s = delay_s
        self.chunk_delay_s = chunk_delay_s
        self.delayed = delay_s > 0 or chunk_delay_s > 0
        self._dims = dims
        self._static: dict[tuple[bytes, bytes, bool], Reply] = {}
        for keep_alive in (True, False):
            self._static[(b"GET", b"/v1/models", keep_alive)] = render_json(
                models_body(), keep_alive
            )
        self._chat = {ka: render_json(chat_body(chunks), ka) for ka in (True, False)}
        self._chat_sse = {ka: render_sse(chat_events(chunks), ka) for ka in (True, False)}
        self._cmpl = {ka: render_json(completion_body(chunks), ka) for ka in (True, False)}
        self._cmpl_sse = {ka: render_sse(completion_events(chunks), ka) for ka in (True, False)}
        self._resp = {ka: render_json(responses_body(chunks), ka) for ka in (True, False)}
        self._resp_sse = {
            ka: render_sse(responses_events(chunks), ka, prefix=b"") for ka in (True, False)
        }
        self._not_found = {
            ka: render_json(
                b'{"error":{"message":"not found","type":"invalid_request_error"}}',
                ka,
                "404 Not Found",
            )
            for ka in (True, False)
        }
        self._bad_request = {
            ka: render_json(
                b'{"error":{"message":"invalid input","type":"invalid_request_error"}}',
                ka,
                "400 Bad Request",
            )
            for ka in (True, False)
        }
        # Deterministic, non-trivial floats so the body has a realistic size
        # (orjson renders roughly 10-20 bytes per value).
        vector = [((i * 7919) % 1000 - 500) / 1000.0 + 0.000123 for i in range(dims)]
        self._vector_json = orjson.dumps(vector)
        self._embeddings: dict[tuple[int, bool], Reply] = {}

    def _embeddings_reply(self, count: int, keep_alive: bool) -> Reply:
        key = (count, keep_alive)
        cached = self._embeddings.get(key)
        if cached is not None:
            return cached
        items = b",".join(
            b'{"object":"embedding","index":%d,"embedding":%s}' % (i, self._vector_json)
            for i in range(count)
        )
        body = (
            b'{"object":"list","data":['
            + items
            + b'],"model":"'
            + _EMBED_MODEL.encode()
            + b'","usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (count * 4, count * 4)
        )
        reply = render_json(body, keep_alive)
        if len(self._embeddings) >= _EMBED_CACHE_MAX:
            self._embeddings.clear()
        self._embeddings[key] = reply
        return reply

    def route(self, method: bytes, url: bytes, body: bytes, keep_alive: bool) -> Reply:
        path = url.partition(b"?")[0]
        static = self._static.get((method, path, keep_alive))
        if static is not None:
            return static
        if method == b"POST":
            if path == b"/v1/chat/completions":
                table = self._chat_sse if _STREAM_TRUE.search(body) else self._chat
                return table[keep_alive]
            if path == b"/v1/responses":
                table = self._resp_sse if _STREAM_TRUE.search(body) else self._resp
                return table[keep_alive]
            if path == b"/v1/completions":
                table = self._cmpl_sse if _STREAM_TRUE.search(body) else self._cmpl
                return table[keep_alive]
            if path == b"/v1/embeddings":
                count = embedding_input_count(body)
                if count is None:
                    return self._bad_request[keep_alive]
                return self._embeddings_reply(count, keep_alive)
        return self._not_found[keep_alive]


class Connection(asyncio.Protocol):
    """One client connection; httptools calls the ``on_*`` methods."""

    def __init__(self, app: Upstream) -> None:
        self._app = app
        self._parser: Any = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._pending: deque[Reply] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so an
        # isinstance check would reject them although they are compatible.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._writer is not None:
            self._writer.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail()
        except httptools.HttpParserError:
            self._fail()

    def _fail(self) -> None:
        if self._transport is not None:
            self._transport.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self._transport.close()

    # httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._body.clear()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None:
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        reply = self._app.route(
            self._parser.get_method(), self._url, body, self._parser.should_keep_alive()
        )
        if not self._app.delayed and not self._pending:
            transport.write(reply.whole)
            if not reply.keep_alive:
                transport.close()
            return
        self._pending.append(reply)
        if len(self._pending) > _MAX_PIPELINE and not self._paused:
            self._paused = True
            transport.pause_reading()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Writes queued replies in order, honouring the configured delays."""
        app = self._app
        while self._pending and self._transport is not None:
            reply = self._pending.popleft()
            if app.delay_s > 0:
                await asyncio.sleep(app.delay_s)
            if app.chunk_delay_s > 0:
                for i, part in enumerate(reply.parts):
                    # The head goes out together with the first body part so
                    # time-to-first-byte is governed by --delay-ms alone.
                    if i > 1:
                        await asyncio.sleep(app.chunk_delay_s)
                    if self._transport is None:
                        return
                    self._transport.write(part)
            else:
                self._transport.write(reply.whole)
            if not reply.keep_alive:
                self._transport.close()
                return
            if self._paused and len(self._pending) <= _MAX_PIPELINE // 2:
                self._paused = False
                self._transport.resume_reading()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--chunks", type=int, default=20, help="SSE events per stream")
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="pause between SSE events"
    )
    parser.add_argument("--delay-ms", type=float, default=0.0, help="pause before each response")
    parser.add_argument("--dims", type=int, default=1536, help="embedding vector size")
    parser.add_argument("--backlog", type=int, default=2048)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    app = Upstream(
        chunks=args.chunks,
        dims=args.dims,
        delay_s=args.delay_ms / 1000.0,
        chunk_delay_s=args.chunk_delay_ms / 1000.0,
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(app),
        host=args.host,
        port=args.port,
        backlog=args.backlog,
        reuse_address=True,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
