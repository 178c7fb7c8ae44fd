"""The server edge: what one client connection may cost the gateway (docs/reliability.md).

Each test talks to a real gateway over a bare socket, so it decides byte by byte what the client
sends and when. Limits are set small where crossing them is the point; every read is bounded.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from oai_gateway.server.protocol import EdgeLimits, protocol_for
from tests.conftest import GATEWAY_KEY, config_for
from tests.support.fake_upstreams import (
    CerebrasUpstream,
    Fault,
    OllamaUpstream,
    OpenAICompatUpstream,
)
from tests.support.gateway import GatewayServer

LIMITS = EdgeLimits(head_timeout_s=0.3, max_head_bytes=4096, max_connections=3, keepalive_s=0.3)
# Far above every limit in LIMITS, far below what the same connection would get without them.
PATIENCE_S = 3.0


@pytest.fixture(scope="module")
def edge(
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> Iterator[GatewayServer]:
    config = config_for(custom_upstream, ollama_upstream, cerebras_upstream, request_timeout_s=5)
    with GatewayServer(config, protocol_for(LIMITS)) as server:
        yield server


def connect(gateway: GatewayServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=PATIENCE_S)


def read_to_end(conn: socket.socket) -> bytes:
    """Everything until the gateway closes; fails (socket timeout) if it keeps the connection."""
    received = b""
    while part := conn.recv(65536):
        received += part
    return received


def chat_request(*, key: str | None = GATEWAY_KEY, stream: bool = False) -> bytes:
    body = orjson.dumps(
        {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    )
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST /custom/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_a_silent_connection_gets_408_at_the_head_deadline(edge: GatewayServer) -> None:
    with connect(edge) as conn:
        answer = read_to_end(conn)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"type":"invalid_request_error"' in answer


def test_a_trickling_head_gets_408_at_the_head_deadline(edge: GatewayServer) -> None:
    head = chat_request()
    with connect(edge) as conn:
        sent = 0
        deadline = time.monotonic() + PATIENCE_S
        # One byte every 20 ms: each byte arrives well within any idle timeout, the head never.
        while sent < len(head) and time.monotonic() < deadline:
            try:
                conn.sendall(head[sent : sent + 1])
            except OSError:
                break  # the gateway hung up
            sent += 1
            time.sleep(0.02)
        answer = read_to_end(conn)
    assert sent < len(head)
    assert answer.startswith(b"HTTP/1.1 408 ")


def read_answer(conn: socket.socket) -> bytes:
    """One answer with a Content-Length, leaving the connection open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += conn.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(v for k, v in _header_lines(head) if k == b"content-length"))
    while len(body) < length:
        body += conn.recv(65536)
    return head


def _header_lines(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = head.split(b"\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(b":") for line in lines)]


def test_a_kept_alive_head_gets_its_own_full_deadline(edge: GatewayServer) -> None:
    """The deadline runs from the first byte of each head, not from an earlier request's."""
    with connect(edge) as conn:
        conn.sendall(chat_request())
        assert read_answer(conn).startswith(b"HTTP/1.1 200 ")
        time.sleep(LIMITS.head_timeout_s * 0.6)  # within the keep-alive timeout
        conn.sendall(b"P")
        began = time.monotonic()
        answer = read_to_end(conn)
        waited = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert LIMITS.head_timeout_s * 0.9 <= waited < PATIENCE_S


def test_a_head_past_the_budget_gets_431(edge: GatewayServer) -> None:
    with connect(edge) as conn:
        conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192)
        answer = read_to_end(conn)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_trailers_count_against_the_head_budget_even_after_an_answer(
    edge: GatewayServer,
) -> None:
    """A chunked request without a key gets its 401 at once; trailers poured in after it must
    not grow the gateway: the connection closes once head and trailers pass the budget."""
    head = (
        b"POST /custom/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
    )
    with connect(edge) as conn:
        conn.sendall(head)
        received = b""
        while b"\r\n\r\n" not in received:
            received += conn.recv(65536)
        assert received.startswith(b"HTTP/1.1 401 ")
        trailer = b"X-T: " + b"t" * 1000 + b"\r\n"
        try:
            for _ in range(64):  # 64 KiB of trailers, sixteen times the budget
                conn.sendall(trailer)
        except OSError:
            pass  # the gateway hung up mid-way
        rest = read_to_end(conn)
    assert b"HTTP/1.1" not in rest.partition(b"\r\n\r\n")[2]  # no second answer for one request


def test_connections_past_the_cap_get_503(edge: GatewayServer) -> None:
    held = [connect(edge) for _ in range(LIMITS.max_connections)]
    try:
        with connect(edge) as extra:
            answer = read_to_end(extra)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b'"type":"server_error"' in answer
    finally:
        for conn in held:
            conn.close()


def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(
    edge: GatewayServer,
) -> None:
    with connect(edge) as conn:
        conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"\r\n")
        answer = read_to_end(conn)  # uvicorn's own default (5 s) would outlast PATIENCE_S
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert answer.count(b"HTTP/1.1 ") == 1


def test_a_pipelined_request_keeps_the_cancellation_of_the_one_running(
    edge: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    """Two requests in one write, then the client leaves while the first is upstream: the
    upstream sees the gateway hang up instead of generating an answer for nobody."""
    custom_upstream.fault = Fault(kind="delay_headers", delay_s=4.0)
    with connect(edge) as conn:
        conn.sendall(chat_request() + chat_request())
        assert custom_upstream.wait_for_requests(1, PATIENCE_S)
    assert custom_upstream.wait_for_disconnect(PATIENCE_S), "the upstream request was left running"


def test_serve_flags_set_the_edge_limits() -> None:
    from oai_gateway import cli
    from oai_gateway.config.settings import Settings

    flags = "serve --head-timeout-s 2.5 --max-head-bytes 8192 --max-connections 7 --keepalive-s 1"
    args = cli._parser().parse_args(flags.split())
    values = {k: v for k, v in cli._overrides(args).items() if v is not None}
    limits = cli.edge_limits(Settings(_env_file=None, **values))  # type: ignore[arg-type]
    assert limits == EdgeLimits(
        head_timeout_s=2.5, max_head_bytes=8192, max_connections=7, keepalive_s=1.0
    )
