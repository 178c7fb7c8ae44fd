"""Upstream failures as the client sees them (SPEC §5 upstream rows, §4.2a, §7).

Faults are injected into the real loopback upstreams; the gateway is driven over HTTP. After each
fault a normal request must succeed, so a broken pooled connection never outlives its fault.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.conftest import CEREBRAS_KEY, CHAT_MODEL, CUSTOM_KEY, GATEWAY_KEY, short_timeout_client
from tests.support.errors import check_error, provider_error_body
from tests.support.fake_upstreams import (
    CerebrasUpstream,
    Fault,
    OllamaUpstream,
    OpenAICompatUpstream,
    openai_error_body,
)
from tests.support.gateway import GatewayServer, gateway_client, make_config
from tests.support.sockets import closed_port
from tests.support.sse import parse_sse
from tests.support.values import CHAT_PATH, PROMPT, chat_body

Json = dict[str, Any]
KEY_VARIABLE = {"custom": "CUSTOM_API_KEY", "cerebras": "CEREBRAS_API_KEY"}


def post_chat(client: httpx.Client, provider: str, *, stream: bool, **extra: Any) -> httpx.Response:
    body = chat_body(provider, stream=stream, **extra)
    with client.stream("POST", CHAT_PATH.format(provider), json=body) as response:
        response.read()
    return response


def check_recovers(client: httpx.Client, provider: str, upstream: OpenAICompatUpstream) -> None:
    """With the fault gone, the very next requests (both kinds) succeed."""
    upstream.fault = None
    answer = post_chat(client, provider, stream=False)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == PROMPT
    streamed = post_chat(client, provider, stream=True)
    assert streamed.status_code == 200, streamed.text
    _, done = parse_sse(streamed.text)
    assert done


def error_events(response: httpx.Response) -> tuple[list[Json], list[Json], bool]:
    """A stream that broke after it started: (chunks, error events, ended with [DONE])."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events, done = parse_sse(response.text)
    errors = [e for e in events if "error" in e]
    chunks = [e for e in events if "error" not in e]
    return chunks, errors, done


def check_stream_error(response: httpx.Response, code: str, *, min_chunks: int = 1) -> Json:
    """Exactly one `data: {"error": ...}` event, last, and no [DONE] (SPEC §7)."""
    chunks, errors, done = error_events(response)
    assert not done, "a failed stream must not end with [DONE]"
    assert len(errors) == 1, errors
    events, _ = parse_sse(response.text)
    assert set(events[-1]) == {"error"}, "the error is not the last event"
    error: Json = errors[0]["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == "api_error", error
    assert error["code"] == code, error
    assert len(chunks) >= min_chunks, chunks
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    return error


# --- upstream HTTP error answers --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, 400), (404, 404), (409, 409), (413, 413), (422, 400)],
)
def test_client_errors_pass_through(
    client: httpx.Client,
    provider: str,
    *,
    upstream: OpenAICompatUpstream,
    stream: bool,
    status: int,
    expected: int,
) -> None:
    body = provider_error_body(
        provider, "the upstream says no", "invalid_request_error", param="stop", code="bad_stop"
    )
    upstream.fault = Fault(kind="status", status=status, body=body)
    response = post_chat(client, provider, stream=stream)
    check_error(
        response,
        expected,
        "bad_stop",
        type_="invalid_request_error",
        param="stop",
        contains=("the upstream says no",),
    )
    assert len(upstream.requests) == 1, "an upstream error must not be retried"
    check_recovers(client, provider, upstream)


def test_upstream_error_type_is_kept(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    body = openai_error_body("context too long", "context_length_exceeded", code="ctx_len")
    custom_upstream.fault = Fault(kind="status", status=400, body=body)
    response = post_chat(client, "custom", stream=False)
    check_error(response, 400, "ctx_len", type_="context_length_exceeded", param=None)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_unknown_model_is_model_not_found(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream, stream: bool
) -> None:
    # Each fake answers in its own dialect: OpenAI's code, Cerebras' flat body, and Ollama's
    # `not_found_error` type with no code at all.
    response = post_chat(client, provider, stream=stream, model="no-such-model")
    check_error(response, 404, "model_not_found", type_="invalid_request_error", param="model")
    assert len(upstream.requests) == 1


def test_cerebras_flat_validation_error(
    client: httpx.Client, cerebras_upstream: CerebrasUpstream
) -> None:
    # Unknown fields pass through (SPEC §5); strict Cerebras rejects them in its flat format.
    response = post_chat(client, "cerebras", stream=False, x_custom_field=1)
    check_error(
        response,
        400,
        "wrong_api_format",
        type_="invalid_request_error",
        param="validation_error",
        contains=("x_custom_field",),
    )
    assert cerebras_upstream.requests[-1].json["x_custom_field"] == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_plain_text_client_error(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream, stream: bool
) -> None:
    upstream.fault = Fault(kind="status", status=400, body=b"bad request: stop must be a list")
    response = post_chat(client, provider, stream=stream)
    check_error(
        response,
        400,
        None,
        type_="invalid_request_error",
        param=None,
        contains=("bad request: stop must be a list",),
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_failure_is_502(
    client: httpx.Client,
    provider: str,
    upstream: OpenAICompatUpstream,
    stream: bool,
    status: int,
) -> None:
    body = provider_error_body(
        provider, "Incorrect API key", "invalid_request_error", param=None, code=None
    )
    upstream.fault = Fault(kind="status", status=status, body=body)
    response = post_chat(client, provider, stream=stream)
    names = (KEY_VARIABLE[provider],) if provider in KEY_VARIABLE else ("Ollama",)
    check_error(
        response, 502, "upstream_auth_failed", type_="api_error", contains=(*names, str(status))
    )
    assert "www-authenticate" not in response.headers, "the client's key was fine"
    check_recovers(client, provider, upstream)


def test_wrong_cerebras_key_is_502(cerebras_upstream: CerebrasUpstream) -> None:
    # A real rejection, not an injected one: the fake checks the key the gateway sends.
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        cerebras_base_url=cerebras_upstream.base_url + "/v1",
        cerebras_api_key="csk-not-the-right-key",
    )
    with gateway_client(config) as http:
        response = post_chat(http, "cerebras", stream=False)
    error = check_error(
        response, 502, "upstream_auth_failed", type_="api_error", contains=("CEREBRAS_API_KEY",)
    )
    assert "csk-not-the-right-key" not in response.text
    assert error["param"] is None
    assert cerebras_upstream.requests[-1].headers["authorization"] == "Bearer csk-not-the-right-key"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("type_", "code"),
    [("requests", "rate_limit_exceeded"), ("insufficient_quota", "insufficient_quota")],
)
def test_rate_limit_passes_through(
    client: httpx.Client,
    provider: str,
    *,
    upstream: OpenAICompatUpstream,
    stream: bool,
    type_: str,
    code: str,
) -> None:
    body = provider_error_body(
        provider, "Rate limit reached for requests", type_, param=None, code=code
    )
    upstream.fault = Fault(kind="status", status=429, body=body, headers={"retry-after": "7"})
    response = post_chat(client, provider, stream=stream)
    check_error(response, 429, code, type_=type_, contains=("Rate limit reached for requests",))
    assert response.headers["retry-after"] == "7"
    assert len(upstream.requests) == 1
    check_recovers(client, provider, upstream)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_become_502(
    client: httpx.Client,
    provider: str,
    upstream: OpenAICompatUpstream,
    stream: bool,
    status: int,
) -> None:
    body = provider_error_body(
        provider, "CUDA out of memory", "server_error", param=None, code=None
    )
    upstream.fault = Fault(kind="status", status=status, body=body)
    response = post_chat(client, provider, stream=stream)
    check_error(
        response,
        502,
        "upstream_error",
        type_="api_error",
        param=None,
        contains=(str(status), "CUDA out of memory", f"'{provider}'"),
    )
    assert upstream.base_url not in response.text  # the provider is named, its address is not
    assert len(upstream.requests) == 1, "the gateway must not retry once the upstream had it"
    check_recovers(client, provider, upstream)


def test_plain_text_server_error(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    custom_upstream.fault = Fault(
        kind="status", status=503, body=b"<html>Service Unavailable</html>"
    )
    response = post_chat(client, "custom", stream=False)
    check_error(
        response, 502, "upstream_error", type_="api_error", contains=("503", "Service Unavailable")
    )


def test_retry_after_of_an_overloaded_upstream_is_kept(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    custom_upstream.fault = Fault(
        kind="status", status=503, body=b"overloaded", headers={"retry-after": "3"}
    )
    response = post_chat(client, "custom", stream=False)
    check_error(response, 502, "upstream_error", type_="api_error")
    assert response.headers["retry-after"] == "3"


@pytest.mark.parametrize("status", [400, 429, 500])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_key_never_reaches_the_client(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream, stream: bool, status: int
) -> None:
    message = f"Invalid key {CUSTOM_KEY}; sent Authorization: Bearer sk-some-other-token"
    body = openai_error_body(message, "invalid_request_error")
    custom_upstream.fault = Fault(kind="status", status=status, body=body)
    response = post_chat(client, "custom", stream=stream)
    assert response.status_code == {400: 400, 429: 429, 500: 502}[status]
    assert CUSTOM_KEY not in response.text
    assert "sk-some-other-token" not in response.text
    assert "Invalid key" in response.json()["error"]["message"]


def test_cerebras_key_never_reaches_the_client(
    client: httpx.Client, cerebras_upstream: CerebrasUpstream
) -> None:
    body = provider_error_body(
        "cerebras", f"key {CEREBRAS_KEY} is over quota", "server_error", param=None, code=None
    )
    cerebras_upstream.fault = Fault(kind="status", status=500, body=body)
    response = post_chat(client, "cerebras", stream=False)
    check_error(response, 502, "upstream_error", type_="api_error", contains=("over quota",))
    assert CEREBRAS_KEY not in response.text


# --- transport faults -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_client() -> Iterator[httpx.Client]:
    """A gateway whose custom and Ollama upstreams point at a port nobody listens on."""
    port = closed_port()
    config = make_config(
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=f"http://127.0.0.1:{port}/v1",
        custom_api_key=CUSTOM_KEY,
        ollama_base_url=f"http://127.0.0.1:{port}",
    )
    with gateway_client(config) as http:
        yield http


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("provider_name", "variable"), [("custom", "CUSTOM_BASE_URL"), ("ollama", "OLLAMA_BASE_URL")]
)
def test_connection_refused(
    dead_client: httpx.Client, stream: bool, provider_name: str, variable: str
) -> None:
    started = time.monotonic()
    response = post_chat(dead_client, provider_name, stream=stream)
    elapsed = time.monotonic() - started
    check_error(
        response, 502, "upstream_error", type_="api_error", contains=("not reachable", variable)
    )
    # Two quick reconnect attempts are allowed (0.25 s of backoff), not a wait of many seconds.
    assert elapsed < 10.0, elapsed


def test_answer_without_choices_is_502(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    custom_upstream.fault = Fault(kind="invalid_json", body=b'{"id": "x", "object": "chat"}')
    response = post_chat(client, "custom", stream=False)
    check_error(response, 502, "upstream_error", type_="api_error")


@pytest.fixture(scope="module")
def quick_client(
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> Iterator[httpx.Client]:
    """A gateway in front of the shared upstreams with REQUEST_TIMEOUT_S=0.5."""
    with short_timeout_client(custom_upstream, ollama_upstream, cerebras_upstream, 0.5) as http:
        yield http


def test_stream_stall_ends_with_timeout_event(
    quick_client: httpx.Client, provider: str, upstream: OpenAICompatUpstream
) -> None:
    # The stream resumes after 3 s of silence, six times the timeout: an error event means the
    # gateway ended the stream before the upstream resumed it.
    upstream.fault = Fault(kind="stream_stall", after_chunks=1, delay_s=3.0)
    response = post_chat(quick_client, provider, stream=True)
    check_stream_error(response, "upstream_timeout")
    check_recovers(quick_client, provider, upstream)


def test_stream_break_ends_with_error_event(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream
) -> None:
    upstream.fault = Fault(kind="stream_break", after_chunks=2)
    response = post_chat(client, provider, stream=True)
    check_stream_error(response, "upstream_error", min_chunks=1)
    check_recovers(client, provider, upstream)


def test_stream_garbage_ends_with_error_event(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream
) -> None:
    upstream.fault = Fault(kind="stream_garbage", after_chunks=1)
    response = post_chat(client, provider, stream=True)
    check_stream_error(response, "upstream_error")
    check_recovers(client, provider, upstream)


def test_upstream_error_event_ends_the_stream(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream
) -> None:
    upstream.fault = Fault(kind="stream_error_event", after_chunks=2)
    response = post_chat(client, provider, stream=True)
    error = check_stream_error(response, "upstream_error")
    upstream_text = {
        "custom": "upstream generation failed",
        "cerebras": "Internal server error during generation",
    }
    if provider in upstream_text:
        assert upstream_text[provider] in error["message"], error
    check_recovers(client, provider, upstream)


def test_break_before_the_first_chunk(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    # Headers were sent, so even with no chunk yet the failure is an SSE error event.
    custom_upstream.fault = Fault(kind="stream_break", after_chunks=0)
    response = post_chat(client, "custom", stream=True)
    check_stream_error(response, "upstream_error", min_chunks=0)


# --- what the official SDK raises -------------------------------------------------------------


def sdk(gateway: GatewayServer, provider: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/{provider}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=10
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sdk_unknown_model(gateway: GatewayServer, provider: str, stream: bool) -> None:
    with sdk(gateway, provider) as api, pytest.raises(openai.NotFoundError) as caught:
        api.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": PROMPT}], stream=stream
        )
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"


def test_sdk_upstream_failure(
    gateway: GatewayServer, provider: str, upstream: OpenAICompatUpstream
) -> None:
    upstream.fault = Fault(kind="status", status=500, body=b"boom")
    with sdk(gateway, provider) as api, pytest.raises(openai.InternalServerError) as caught:
        api.chat.completions.create(
            model=CHAT_MODEL[provider], messages=[{"role": "user", "content": PROMPT}]
        )
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert caught.value.type == "api_error"
    assert caught.value.request_id, "x-request-id missing on an error"


def test_sdk_upstream_auth_failure_is_not_the_clients(
    gateway: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    custom_upstream.fault = Fault(kind="status", status=401, body=b"")
    with sdk(gateway, "custom") as api, pytest.raises(openai.InternalServerError) as caught:
        api.chat.completions.create(
            model=CHAT_MODEL["custom"], messages=[{"role": "user", "content": PROMPT}]
        )
    assert caught.value.code == "upstream_auth_failed"


def test_sdk_rate_limit(gateway: GatewayServer, custom_upstream: OpenAICompatUpstream) -> None:
    body = openai_error_body("slow down", "requests", code="rate_limit_exceeded")
    custom_upstream.fault = Fault(
        kind="status", status=429, body=body, headers={"retry-after": "1"}
    )
    with sdk(gateway, "custom") as api, pytest.raises(openai.RateLimitError) as caught:
        api.chat.completions.create(
            model=CHAT_MODEL["custom"], messages=[{"role": "user", "content": PROMPT}]
        )
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "1"
    assert len(custom_upstream.requests) == 1


def drain(stream: Iterable[ChatCompletionChunk], into: list[ChatCompletionChunk]) -> None:
    for chunk in stream:
        into.append(chunk)


def test_sdk_mid_stream_failure(
    gateway: GatewayServer, provider: str, upstream: OpenAICompatUpstream
) -> None:
    upstream.fault = Fault(kind="stream_break", after_chunks=2)
    received: list[ChatCompletionChunk] = []
    with sdk(gateway, provider) as api:
        stream = api.chat.completions.create(
            model=CHAT_MODEL[provider],
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
        )
        with pytest.raises(openai.APIError) as caught:
            drain(stream, received)
    # Without the error event the SDK would end quietly, making a cut-off look complete.
    assert not isinstance(caught.value, openai.APIStatusError)
    assert caught.value.code == "upstream_error"
    assert received, "chunks before the failure were lost"
