"""The upstream-fault matrix: every endpoint (chat and legacy completions plain and streamed,
embeddings, models), every provider, every transport and answer fault (SPEC §5, §4.2a), plus an
exact count of upstream attempts for the retry rule. After every fault a normal request on the
same endpoint succeeds, so no broken pooled connection outlives its fault. What is particular to
chat (error pass-through, keys, stream error events, the SDK) is in test_faults_chat.py.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from oai_gateway.upstream import client as upstream_module
from oai_gateway.upstream.client import UpstreamClient
from tests.conftest import CEREBRAS_KEY, CHAT_MODEL, CUSTOM_KEY, GATEWAY_KEY, short_timeout_client
from tests.support.errors import check_error, provider_error_body
from tests.support.fake_upstreams import (
    CerebrasUpstream,
    Fault,
    OllamaUpstream,
    OpenAICompatUpstream,
)
from tests.support.gateway import gateway_client, make_config
from tests.support.sockets import closed_port
from tests.support.values import CHAT_PATH, chat_body

Json = dict[str, Any]
EMBED_MODEL = {"custom": "org/model-a", "ollama": "nomic-embed-text:latest"}
MODEL_ID = {"custom": "gpt-test", "ollama": "llama3.2:1b", "cerebras": "gpt-oss-120b"}


@dataclass(frozen=True)
class Call:
    """One gateway request shape: endpoint and streaming or not."""

    name: str
    stream: bool = False

    def request(self, http: httpx.Client, provider: str) -> httpx.Response:
        if self.name == "chat":
            body = chat_body(provider, stream=self.stream)
            return send(http, "POST", CHAT_PATH.format(provider), body)
        if self.name == "embeddings":
            body = {"model": EMBED_MODEL[provider], "input": "a fault-tolerant embedding"}
            return send(http, "POST", f"/{provider}/v1/embeddings", body)
        if self.name == "completions":
            body = {"model": CHAT_MODEL[provider], "prompt": "say hi", "stream": self.stream}
            return send(http, "POST", f"/{provider}/v1/completions", body)
        if self.name == "models":
            return send(http, "GET", f"/{provider}/v1/models", None)
        return send(http, "GET", f"/{provider}/v1/models/{MODEL_ID[provider]}", None)

    def check_ok(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        if self.stream:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.text.endswith("data: [DONE]\n\n"), response.text[-200:]
            return
        body = response.json()
        expected = {
            "chat": "chat.completion",
            "embeddings": "list",
            "completions": "text_completion",
            "models": "list",
            "model": "model",
        }
        assert body["object"] == expected[self.name], body


def send(http: httpx.Client, method: str, path: str, body: Json | None) -> httpx.Response:
    with http.stream(method, path, json=body) as response:
        response.read()
    return response


CALLS = [
    *[(p, Call("chat", s)) for p in ("custom", "ollama", "cerebras") for s in (False, True)],
    ("custom", Call("embeddings")),
    ("ollama", Call("embeddings")),
    *[(p, Call("completions", s)) for p in ("custom", "ollama", "cerebras") for s in (False, True)],
    *[(p, Call(n)) for p in ("custom", "ollama", "cerebras") for n in ("models", "model")],
]
CALL_IDS = [f"{p}-{c.name}{'-stream' if c.stream else ''}" for p, c in CALLS]
PLAIN_CALLS = [(p, c) for p, c in CALLS if not c.stream]
PLAIN_IDS = [i for i, (_, c) in zip(CALL_IDS, CALLS, strict=True) if not c.stream]


@pytest.fixture(params=CALLS, ids=CALL_IDS)
def case(
    request: pytest.FixtureRequest,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> tuple[str, Call, OpenAICompatUpstream]:
    provider, call = request.param
    server = {"custom": custom_upstream, "ollama": ollama_upstream, "cerebras": cerebras_upstream}
    return provider, call, server[provider]


def recovers(http: httpx.Client, provider: str, call: Call, server: OpenAICompatUpstream) -> None:
    server.fault = None
    call.check_ok(call.request(http, provider))


def test_normal_request_succeeds(
    client: httpx.Client, case: tuple[str, Call, OpenAICompatUpstream]
) -> None:
    provider, call, server = case
    call.check_ok(call.request(client, provider))
    assert server.requests, "the upstream was never called"


def test_reset_before_headers(
    client: httpx.Client, case: tuple[str, Call, OpenAICompatUpstream]
) -> None:
    provider, call, server = case
    server.fault = Fault(kind="reset_before_headers")
    check_error(call.request(client, provider), 502, "upstream_error", type_="api_error")
    # The request reached the upstream, which may have started on it: never retried.
    assert len(server.requests) == 1, [r.path for r in server.requests]
    recovers(client, provider, call, server)


def test_invalid_json(client: httpx.Client, case: tuple[str, Call, OpenAICompatUpstream]) -> None:
    provider, call, server = case
    server.fault = Fault(kind="invalid_json")
    check_error(call.request(client, provider), 502, "upstream_error", type_="api_error")
    recovers(client, provider, call, server)


def test_html_answer_with_status_200(
    client: httpx.Client, case: tuple[str, Call, OpenAICompatUpstream]
) -> None:
    # A captive portal or misrouted proxy: 200 with the wrong content-type, stream or not.
    provider, call, server = case
    server.fault = Fault(
        kind="status",
        status=200,
        body=b"<html><body>login required</body></html>",
        headers={"Content-Type": "text/html"},
    )
    check_error(call.request(client, provider), 502, "upstream_error", type_="api_error")
    recovers(client, provider, call, server)


@pytest.mark.parametrize("shaped", [True, False], ids=["openai-body", "text-body"])
def test_upstream_5xx(
    client: httpx.Client, case: tuple[str, Call, OpenAICompatUpstream], shaped: bool
) -> None:
    provider, call, server = case
    body = (
        provider_error_body(provider, "engine overloaded", "server_error", param=None, code=None)
        if shaped
        else b"Bad Gateway from the load balancer"
    )
    server.fault = Fault(kind="status", status=503, body=body)
    error = check_error(call.request(client, provider), 502, "upstream_error", type_="api_error")
    assert "503" in error["message"], error
    assert len(server.requests) == 1, "a 5xx must not be retried by the gateway"
    recovers(client, provider, call, server)


@pytest.mark.parametrize("shaped", [True, False], ids=["openai-body", "text-body"])
def test_upstream_400(
    client: httpx.Client, case: tuple[str, Call, OpenAICompatUpstream], shaped: bool
) -> None:
    provider, call, server = case
    body = (
        provider_error_body(
            provider, "bad thing", "invalid_request_error", param="input", code="bad"
        )
        if shaped
        else b"bad request"
    )
    server.fault = Fault(kind="status", status=400, body=body)
    error = check_error(
        call.request(client, provider), 400, ANYCODE[shaped], type_="invalid_request_error"
    )
    if shaped:
        assert error["param"] == "input", error
    recovers(client, provider, call, server)


ANYCODE = {True: "bad", False: None}


@pytest.mark.parametrize("shaped", [True, False], ids=["openai-body", "text-body"])
def test_upstream_429(
    client: httpx.Client, case: tuple[str, Call, OpenAICompatUpstream], shaped: bool
) -> None:
    provider, call, server = case
    body = (
        provider_error_body(
            provider, "slow down", "rate_limit_error", param=None, code="rate_limit_exceeded"
        )
        if shaped
        else b"Too Many Requests"
    )
    server.fault = Fault(kind="status", status=429, body=body, headers={"Retry-After": "7"})
    response = call.request(client, provider)
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "7"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    if shaped:
        assert error["code"] == "rate_limit_exceeded", error
    assert len(server.requests) == 1, "a 429 must not be retried by the gateway"
    recovers(client, provider, call, server)


@pytest.fixture(params=PLAIN_CALLS, ids=PLAIN_IDS)
def plain_case(
    request: pytest.FixtureRequest,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> tuple[str, Call, OpenAICompatUpstream]:
    """Like `case`, without the streams: they are relayed chunk by chunk, never read whole."""
    provider, call = request.param
    server = {"custom": custom_upstream, "ollama": ollama_upstream, "cerebras": cerebras_upstream}
    return provider, call, server[provider]


def test_oversized_upstream_body(
    client: httpx.Client,
    plain_case: tuple[str, Call, OpenAICompatUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, call, server = plain_case
    monkeypatch.setattr(upstream_module, "MAX_BODY_BYTES", 40)
    error = check_error(call.request(client, provider), 502, "upstream_error", type_="api_error")
    assert "larger than 40 bytes" in error["message"], error
    monkeypatch.undo()
    recovers(client, provider, call, server)


# --- timeouts and unreachable upstreams ----------------------------------------------------


@pytest.fixture(scope="module")
def quick_client(
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> Iterator[httpx.Client]:
    with short_timeout_client(custom_upstream, ollama_upstream, cerebras_upstream, 0.25) as http:
        yield http


def test_slow_upstream_times_out(
    quick_client: httpx.Client, case: tuple[str, Call, OpenAICompatUpstream]
) -> None:
    provider, call, server = case
    # The answer comes after 2 s, eight times the timeout: a 504 means the gateway's own clock
    # ended the wait first; no upper bound on the time is needed, and none can flake.
    server.fault = Fault(kind="delay_headers", delay_s=2.0)
    started = time.monotonic()
    response = call.request(quick_client, provider)
    elapsed = time.monotonic() - started
    check_error(response, 504, "upstream_timeout", type_="api_error", param=None)
    assert elapsed > 0.2, elapsed  # not before the timeout
    assert len(server.requests) == 1, "a timed-out request must not be retried"
    recovers(quick_client, provider, call, server)


class AttemptCounter:
    """Counts the gateway's upstream request attempts through the client's request hook."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.count = 0

    def started(
        self, client: UpstreamClient, method: str, path: str, headers: dict[str, str]
    ) -> object:
        del method, path, headers
        if client.port == self.port:
            self.count += 1
        return None

    def finished(self, token: object, status: int | None, error: BaseException | None) -> None:
        del token, status, error


@contextlib.contextmanager
def gateway_in_front_of(base: str) -> Iterator[httpx.Client]:
    """A gateway whose every provider points at `base`, and a client holding its key."""
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=base + "/v1",
        custom_api_key=CUSTOM_KEY,
        ollama_base_url=base,
        cerebras_base_url=base + "/v1",
        cerebras_api_key=CEREBRAS_KEY,
    )
    with gateway_client(config) as http:
        yield http


@pytest.fixture
def refused() -> Iterator[tuple[httpx.Client, AttemptCounter]]:
    """A gateway whose every upstream is a loopback port nobody listens on."""
    port = closed_port()
    counter = AttemptCounter(port)
    upstream_module.REQUEST_HOOKS.append(counter)
    try:
        with gateway_in_front_of(f"http://127.0.0.1:{port}") as http:
            yield http, counter
    finally:
        upstream_module.REQUEST_HOOKS.remove(counter)


@pytest.mark.parametrize(("provider", "call"), CALLS, ids=CALL_IDS)
def test_connection_refused_is_tried_three_times(
    refused: tuple[httpx.Client, AttemptCounter], provider: str, call: Call
) -> None:
    http, counter = refused
    started = time.monotonic()
    error = check_error(call.request(http, provider), 502, "upstream_error", type_="api_error")
    elapsed = time.monotonic() - started
    assert "not reachable" in error["message"], error
    # SPEC §4.2a: the first try plus at most two retries, with the short backoff between them
    # (0.25 s in all): at least that long, and far from the seconds a long backoff would take.
    assert counter.count == 1 + upstream_module.CONNECT_RETRIES == 3, counter.count
    assert 0.2 < elapsed < 10.0, elapsed


RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on with 0 s: close() sends RST


class HangUpServer:
    """Accepts connections and closes each at once with a reset, counting the accepts."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            # Counted at once: the gateway may answer its client before this thread goes on.
            self.accepted += 1
            # Wait for the request so the gateway has surely sent it, then reset.
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()


@pytest.fixture(scope="module")
def hangup() -> Iterator[tuple[httpx.Client, HangUpServer]]:
    """A gateway whose every upstream accepts, reads the request and resets the connection."""
    server = HangUpServer()
    try:
        with gateway_in_front_of(f"http://127.0.0.1:{server.port}") as http:
            yield http, server
    finally:
        server.close()


@pytest.mark.parametrize(("provider", "call"), CALLS, ids=CALL_IDS)
def test_reset_after_the_request_is_sent_is_tried_once(
    hangup: tuple[httpx.Client, HangUpServer], provider: str, call: Call
) -> None:
    http, server = hangup
    before = server.accepted
    check_error(call.request(http, provider), 502, "upstream_error", type_="api_error")
    assert server.accepted - before == 1, server.accepted - before
