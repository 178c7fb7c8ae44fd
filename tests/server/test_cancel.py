"""A client that goes away leaves nothing behind (SPEC §4.2a, §7).

The gateway runs in this process (tests/support/gateway.py), so its event loop's tasks and this
process's open file descriptors show whether a cancelled request left a task, a socket or an
upstream connection behind. Chat and legacy completions hang up at each stage of an answer;
embeddings while waiting for theirs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from oai_gateway.api.cancel import guarded
from oai_gateway.api.exchange import Exchange
from oai_gateway.errors import ClientDisconnectedError
from oai_gateway.server.asgi import DISCONNECT_SIGNAL, DisconnectSignal
from oai_gateway.server.protocol import EnvelopeHttpToolsProtocol
from tests.conftest import CHAT_MODEL, config_for
from tests.support.fake_upstreams import (
    CerebrasUpstream,
    Fault,
    OllamaUpstream,
    OpenAICompatUpstream,
)
from tests.support.gateway import GatewayServer
from tests.support.sockets import open_raw, read_until
from tests.support.values import CHAT_PATH, chat_body

EMBED_MODEL = {"custom": "org/model-a", "ollama": "nomic-embed-text:latest"}
SETTLE_S = 3.0
UPSTREAM_WAIT_S = 20.0
HANG_UP_WAIT_S = 10.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def gateway_tasks(gateway: GatewayServer) -> int:
    loop = gateway.loop
    assert loop is not None

    async def count() -> int:
        return len(asyncio.all_tasks())

    return asyncio.run_coroutine_threadsafe(count(), loop).result(2)


def settles(probe: Callable[[], int], limit: int) -> tuple[bool, int]:
    """Whether `probe()` comes back to at most `limit` within SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    value = probe()
    while value > limit and time.monotonic() < deadline:
        time.sleep(0.02)
        value = probe()
    return value <= limit, value


def steady(probe: Callable[[], int]) -> int:
    """The value once two samples 50 ms apart agree (at most one second of sampling)."""
    last = probe()
    for _ in range(20):
        time.sleep(0.05)
        value = probe()
        if value == last:
            return value
        last = value
    return last


@pytest.fixture(scope="module", params=["disconnect-signal", "watcher-task"])
def gateway(
    request: pytest.FixtureRequest,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> Iterator[GatewayServer]:
    """Both ways a disconnect reaches the work: the gateway's own server protocol signals it;
    under any other ASGI server the router watches `receive()` in a task of its own."""
    # Upstream waits (20 s) and the gateway's own timeout (30 s) are far longer than the wait for
    # a hang-up (10 s): an upstream that sees one can only have seen the client's, passed on.
    config = config_for(custom_upstream, ollama_upstream, cerebras_upstream, request_timeout_s=30)
    http = EnvelopeHttpToolsProtocol if request.param == "disconnect-signal" else HttpToolsProtocol
    with GatewayServer(config, http) as server:
        yield server


@pytest.fixture
def baseline(gateway: GatewayServer, upstream: OpenAICompatUpstream) -> Iterator[tuple[int, int]]:
    """Tasks and fds once the gateway is idle, after a warm-up that fills the upstream pool."""
    yield steady(lambda: gateway_tasks(gateway)), steady(open_fds)
    upstream.chunk_delay_s, upstream.stream_chunks = 0.0, 3


def completions(provider: str, stream: bool) -> tuple[str, dict[str, Any]]:
    body = {"model": CHAT_MODEL[provider], "prompt": "count slowly", "stream": stream}
    return f"/{provider}/v1/completions", body


def chat(provider: str, stream: bool) -> tuple[str, dict[str, Any]]:
    return CHAT_PATH.format(provider), chat_body(provider, stream=stream)


Generation = Callable[[str, bool], tuple[str, dict[str, Any]]]


@pytest.fixture(params=[chat, completions], ids=["chat", "completions"])
def generation(request: pytest.FixtureRequest) -> Generation:
    """The request of one generating endpoint: (path, body) for a provider and a stream flag."""
    make: Generation = request.param
    return make


def check_nothing_left(
    gateway: GatewayServer, upstream: OpenAICompatUpstream, baseline: tuple[int, int]
) -> None:
    assert upstream.wait_for_disconnect(HANG_UP_WAIT_S), "the upstream request was left running"
    tasks, fds = baseline
    ok, now = settles(lambda: gateway_tasks(gateway), tasks)
    assert ok, f"{now - tasks} gateway task(s) left behind"
    ok, now = settles(open_fds, fds)
    assert ok, f"{now - fds} file descriptor(s) left open"


def test_disconnect_mid_stream(
    gateway: GatewayServer,
    provider: str,
    upstream: OpenAICompatUpstream,
    baseline: tuple[int, int],
    generation: Generation,
) -> None:
    upstream.chunk_delay_s, upstream.stream_chunks = 0.2, 100  # 20 s
    conn = open_raw(gateway.port, *generation(provider, True))
    try:
        assert read_until(conn, b"data: {").startswith(b"HTTP/1.1 200")
    finally:
        conn.close()
    check_nothing_left(gateway, upstream, baseline)


def test_disconnect_before_the_first_token(
    gateway: GatewayServer,
    provider: str,
    upstream: OpenAICompatUpstream,
    baseline: tuple[int, int],
    generation: Generation,
) -> None:
    upstream.fault = Fault(kind="stream_stall", after_chunks=0, delay_s=UPSTREAM_WAIT_S)
    conn = open_raw(gateway.port, *generation(provider, True))
    try:
        assert upstream.wait_for_requests(1, 2.0)
        head = read_until(conn, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"data:" not in head
    finally:
        conn.close()
    check_nothing_left(gateway, upstream, baseline)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_disconnect_while_waiting_for_the_answer(
    gateway: GatewayServer,
    provider: str,
    upstream: OpenAICompatUpstream,
    baseline: tuple[int, int],
    generation: Generation,
    *,
    stream: bool,
) -> None:
    upstream.fault = Fault(kind="delay_headers", delay_s=UPSTREAM_WAIT_S)
    conn = open_raw(gateway.port, *generation(provider, stream))
    try:
        assert upstream.wait_for_requests(1, 2.0)
    finally:
        conn.close()
    check_nothing_left(gateway, upstream, baseline)


@pytest.mark.parametrize("provider", ["custom", "ollama"], indirect=True)
def test_disconnect_during_embeddings(
    gateway: GatewayServer,
    provider: str,
    upstream: OpenAICompatUpstream,
    baseline: tuple[int, int],
) -> None:
    upstream.fault = Fault(kind="delay_headers", delay_s=UPSTREAM_WAIT_S)
    body = {"model": EMBED_MODEL[provider], "input": ["one", "two"]}
    conn = open_raw(gateway.port, f"/{provider}/v1/embeddings", body)
    try:
        assert upstream.wait_for_requests(1, 2.0)
    finally:
        conn.close()
    check_nothing_left(gateway, upstream, baseline)


@pytest.mark.parametrize("provider", ["custom"], indirect=True)
def test_a_request_in_flight_costs_one_task_with_the_signal_two_without(
    request: pytest.FixtureRequest,
    gateway: GatewayServer,
    provider: str,
    upstream: OpenAICompatUpstream,
    baseline: tuple[int, int],
) -> None:
    upstream.fault = Fault(kind="delay_headers", delay_s=UPSTREAM_WAIT_S)
    conn = open_raw(gateway.port, *completions(provider, False))
    try:
        assert upstream.wait_for_requests(1, 2.0)
        in_flight = steady(lambda: gateway_tasks(gateway)) - baseline[0]
    finally:
        conn.close()
    check_nothing_left(gateway, upstream, baseline)
    with_signal = "disconnect-signal" in request.node.callspec.id
    assert in_flight == (1 if with_signal else 2), in_flight


def test_a_client_gone_before_the_work_leaves_no_coroutine_behind() -> None:
    """The work is made only once the disconnect signal points at it: a client that left
    during admission gets no coroutine created (one never awaited warns, and leaks its frame)."""
    signal = DisconnectSignal()
    signal.connection_lost()
    exchange = cast(Exchange, SimpleNamespace(scope={DISCONNECT_SIGNAL: signal}))
    made: list[bool] = []

    def work() -> Awaitable[None]:
        made.append(True)
        return asyncio.sleep(0)

    with pytest.raises(ClientDisconnectedError):
        asyncio.run(guarded(exchange, work))
    assert made == []
