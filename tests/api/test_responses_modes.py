"""What each `responses` mode does beyond the happy path: translation refusals, native
pass-through, stored-response routes, `off`, WebSocket upgrades, failures mid-stream,
cancellation, and the cross-cutting behaviour every route has (ids, timing, tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from oai_gateway.wire.sse import SSEParser
from tests.conftest import CHAT_MODEL, CUSTOM_KEY, GATEWAY_KEY, config_for
from tests.support.fake_upstreams import (
    CerebrasUpstream,
    Fault,
    OllamaUpstream,
    OpenAICompatUpstream,
    openai_error_body,
)
from tests.support.gateway import GatewayServer

Json = dict[str, Any]
PROVIDERS_FILE = """\
[providers.translated]
kind = "openai"
base_url = "{custom}/v1"
api_key_env = "CUSTOM_KEY"
responses = "translate"

[providers.dropping]
kind = "cerebras"
base_url = "{cerebras}/v1"
api_key_env = "CEREBRAS_KEY"
drop_unsupported_params = true

[providers.refusing]
kind = "openai"
base_url = "{custom}/v1"
api_key_env = "CUSTOM_KEY"
responses = "off"
"""


@pytest.fixture(scope="module")
def named_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> Iterator[GatewayServer]:
    path: Path = tmp_path_factory.mktemp("responses") / "providers.toml"
    path.write_text(
        PROVIDERS_FILE.format(custom=custom_upstream.base_url, cerebras=cerebras_upstream.base_url)
    )
    config = config_for(custom_upstream, ollama_upstream, cerebras_upstream, request_timeout_s=3)
    from tests.support.gateway import make_config

    named = make_config(
        env={"CUSTOM_KEY": CUSTOM_KEY, "CEREBRAS_KEY": "csk-upstream-cerebras-secret-42"},
        providers_file=str(path),
        allowed_api_keys=GATEWAY_KEY,
        request_timeout_s=3,
    )
    merged = type(config)(config.settings, (*config.providers, *named.providers))
    with GatewayServer(merged) as server:
        yield server


@pytest.fixture
def http(named_gateway: GatewayServer) -> Iterator[httpx.Client]:
    with named_gateway.client() as client:
        yield client


def post(http: httpx.Client, provider: str, body: Json) -> httpx.Response:
    return http.post(f"/{provider}/v1/responses", json=body)


def events_of(raw: bytes) -> list[Json]:
    return [orjson.loads(data) for _, data in SSEParser().feed(raw)]


# -- translate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("previous_response_id", "resp_123", "previous_response_id"),
        ("conversation", "conv_123", "conversation"),
        ("tools", [{"type": "web_search"}], "tools"),
        ("tools", [{"type": "namespace", "name": "x", "description": "", "tools": []}], "tools"),
        ("input", [{"type": "item_reference", "id": "msg_1"}], "input"),
    ],
)
def test_translate_refuses_what_it_cannot_translate_before_any_upstream_call(
    http: httpx.Client,
    cerebras_upstream: CerebrasUpstream,
    field: str,
    value: Any,
    param: str,
) -> None:
    body = {"model": "gpt-oss-120b", "input": "hi", field: value}
    reply = post(http, "cerebras", body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "unsupported_parameter",
        param,
    )
    assert cerebras_upstream.requests == []


def test_translate_drops_built_in_tools_when_the_provider_says_so(
    http: httpx.Client, cerebras_upstream: CerebrasUpstream
) -> None:
    tools = [
        {"type": "web_search", "external_web_access": False},
        {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
    ]
    reply = post(
        http,
        "dropping",
        {
            "model": "gpt-oss-120b",
            "input": "run ls",
            "tools": tools,
            "store": False,
            "include": ["reasoning.encrypted_content"],
            "reasoning": {"summary": "auto"},
            "prompt_cache_key": "k",
        },
    )
    assert reply.status_code == 200
    [sent] = [r.json for r in cerebras_upstream.requests]
    assert [t["function"]["name"] for t in sent["tools"]] == ["exec_command"]
    for ignored in ("store", "include", "reasoning", "prompt_cache_key", "input"):
        assert ignored not in sent
    assert reply.json()["store"] is False


def test_translate_on_an_openai_kind_uses_its_chat_endpoint(
    http: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    reply = post(
        http,
        "translated",
        {
            "model": "gpt-test",
            "input": "via chat",
            "top_p": 0.5,
            "max_output_tokens": 32,
            "text": {"format": {"type": "json_object"}},
        },
    )
    assert reply.status_code == 200
    assert reply.json()["output"][0]["content"][0]["text"] == "via chat"
    [sent] = custom_upstream.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.json == {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "via chat"}],
        "top_p": 0.5,
        "max_tokens": 32,
        "response_format": {"type": "json_object"},
    }


# -- native ------------------------------------------------------------------------------------


def test_native_forwards_the_body_unchanged(
    http: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    body = {
        "model": "gpt-test",
        "input": "hi",
        "previous_response_id": "resp_1",
        "tools": [{"type": "web_search"}],
        "store": True,
        "vendor_extra": {"a": 1},
    }
    reply = post(http, "custom", body)
    assert reply.status_code == 200
    [sent] = custom_upstream.requests
    assert sent.path == "/v1/responses"
    assert sent.json == body
    assert sent.headers["authorization"] == f"Bearer {CUSTOM_KEY}"


def test_stored_responses_are_relayed_in_native_mode(http: httpx.Client) -> None:
    made = post(http, "custom", {"model": "gpt-test", "input": "keep me"}).json()
    ident = made["id"]
    fetched = http.get(f"/custom/v1/responses/{ident}")
    assert fetched.status_code == 200
    assert fetched.json()["output"] == made["output"]
    items = http.get(f"/custom/v1/responses/{ident}/input_items", params={"limit": 5})
    assert items.status_code == 200
    assert items.json()["data"][0]["content"][0]["text"] == "keep me"
    cancelled = http.post(f"/custom/v1/responses/{ident}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    deleted = http.delete(f"/custom/v1/responses/{ident}")
    assert deleted.json() == {"id": ident, "object": "response", "deleted": True}
    gone = http.get(f"/custom/v1/responses/{ident}")
    assert gone.status_code == 404
    assert gone.json()["error"]["param"] == "response_id"


@pytest.mark.parametrize("suffix", ["", "/cancel", "/input_items"])
def test_stored_responses_are_not_found_in_translate_mode(
    http: httpx.Client, cerebras_upstream: CerebrasUpstream, suffix: str
) -> None:
    method = "POST" if suffix == "/cancel" else "GET"
    reply = http.request(method, f"/cerebras/v1/responses/resp_1{suffix}")
    assert reply.status_code == 404
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert cerebras_upstream.requests == []


def test_a_malformed_response_id_is_not_found(
    http: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    reply = http.get("/custom/v1/responses/..%2F..%2Fmodels")
    assert reply.status_code == 404
    assert custom_upstream.requests == []


# -- off, WebSocket ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/refusing/v1/responses", "/refusing/v1/responses/resp_1"])
def test_off_mode_is_an_unsupported_operation(
    http: httpx.Client, custom_upstream: OpenAICompatUpstream, path: str
) -> None:
    method = "POST" if path.endswith("responses") else "GET"
    reply = http.request(method, path, json={"model": "gpt-test", "input": "hi"})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "unsupported_operation"
    assert custom_upstream.requests == []


def test_a_websocket_upgrade_gets_a_plain_404(http: httpx.Client) -> None:
    headers = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    reply = http.get("/custom/v1/responses", headers=headers)
    assert reply.status_code == 404
    assert reply.json()["error"]["type"] == "invalid_request_error"


# -- failures ----------------------------------------------------------------------------------


def stream(http: httpx.Client, provider: str) -> list[Json]:
    body = {"model": CHAT_MODEL.get(provider, "gpt-test"), "input": "a b c d e f", "stream": True}
    with http.stream("POST", f"/{provider}/v1/responses", json=body) as reply:
        assert reply.status_code == 200
        return events_of(reply.read())


@pytest.mark.parametrize("kind", ["stream_break", "stream_garbage"])
@pytest.mark.parametrize("provider", ["custom", "cerebras"])
def test_an_upstream_that_breaks_the_stream_ends_it_with_response_failed(
    http: httpx.Client,
    provider: str,
    kind: Any,
    custom_upstream: OpenAICompatUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> None:
    upstream = custom_upstream if provider == "custom" else cerebras_upstream
    upstream.fault = Fault(kind=kind, after_chunks=4)
    events = stream(http, provider)
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert events[-1]["response"]["id"] == events[0]["response"]["id"]


def test_native_relays_the_upstreams_own_error_event(
    http: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    custom_upstream.fault = Fault(kind="stream_error_event", after_chunks=3)
    events = stream(http, "custom")
    assert [e["type"] for e in events][-1] == "error"
    assert events[-1]["code"] == "server_error"
    assert events[-1]["sequence_number"] == 3


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ({"message": "overloaded", "type": "server_error"}, "server_error"),
        (
            {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"},
            "rate_limit_exceeded",
        ),
    ],
)
def test_translate_turns_an_error_chunk_into_response_failed(
    http: httpx.Client, cerebras_upstream: CerebrasUpstream, error: Json, code: str
) -> None:
    def failing(first: Json | None) -> bytes:
        return b"data: " + orjson.dumps({"error": error}) + b"\n\n"

    cerebras_upstream.mid_stream_error = failing  # type: ignore[method-assign,assignment]
    cerebras_upstream.fault = Fault(kind="stream_error_event", after_chunks=2)
    try:
        events = stream(http, "cerebras")
    finally:
        del cerebras_upstream.mid_stream_error
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == code


@pytest.mark.parametrize("provider", ["custom", "cerebras"])
@pytest.mark.parametrize("statuses", [(429, 429), (500, 502), (404, 404), (401, 502)])
def test_upstream_errors_before_the_stream_are_json_errors(
    http: httpx.Client,
    provider: str,
    statuses: tuple[int, int],
    custom_upstream: OpenAICompatUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> None:
    status, expected = statuses
    upstream = custom_upstream if provider == "custom" else cerebras_upstream
    upstream.fault = Fault(kind="status", status=status, body=openai_error_body("nope"))
    body = {"model": CHAT_MODEL[provider], "input": "hi", "stream": True}
    reply = post(http, provider, body)
    assert reply.status_code == expected
    assert reply.headers["content-type"].startswith("application/json")
    assert "x-request-id" in reply.headers


# -- what every route has ----------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["custom", "cerebras"])
def test_ids_timing_and_tokens(
    http: httpx.Client, named_gateway: GatewayServer, provider: str
) -> None:
    model = CHAT_MODEL[provider]
    reply = http.post(
        f"/{provider}/v1/responses",
        json={"model": model, "input": "count these four words", "stream": True},
        headers={"x-request-id": "resp-test-1"},
    )
    assert reply.headers["x-request-id"] == "resp-test-1"
    assert reply.headers["server-timing"].startswith("upstream;dur=")
    assert "data: [DONE]" not in reply.text
    metrics = http.get("/metrics").text
    line = f'oai_gateway_tokens_total{{kind="completion",model="{model}",provider="{provider}"}}'
    assert any(row.startswith(line) for row in metrics.splitlines()), metrics[-2000:]


@pytest.mark.parametrize("provider", ["custom", "cerebras"])
def test_a_client_that_leaves_mid_stream_closes_the_upstream_request(
    named_gateway: GatewayServer,
    provider: str,
    custom_upstream: OpenAICompatUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> None:
    upstream = custom_upstream if provider == "custom" else cerebras_upstream
    upstream.chunk_delay_s, upstream.stream_chunks = 0.2, 40
    body = {"model": CHAT_MODEL[provider], "input": " ".join(["w"] * 40), "stream": True}
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    try:
        with (
            httpx.Client(base_url=named_gateway.url, headers=headers, timeout=10) as client,
            client.stream("POST", f"/{provider}/v1/responses", json=body) as reply,
        ):
            for _ in reply.iter_bytes():
                break
        assert upstream.wait_for_disconnect(2.0), "the upstream request was left running"
    finally:
        upstream.chunk_delay_s, upstream.stream_chunks = 0.0, 3


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "gpt-test"}, "input"),
        ({"model": "gpt-test", "input": "hi", "stream": "yes"}, "stream"),
        ({"model": "gpt-test", "input": 5}, "input"),
    ],
)
@pytest.mark.parametrize("provider", ["custom", "cerebras"])
def test_bad_bodies_are_400s_naming_the_field(
    http: httpx.Client, provider: str, body: Json, param: str
) -> None:
    reply = post(http, provider, body)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == param


@pytest.mark.parametrize("provider", ["custom", "cerebras"])
def test_concurrent_streams_stay_apart(named_gateway: GatewayServer, provider: str) -> None:
    """Several streams at once: each gets its own response id, numbering and text."""
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}

    def one(word: str) -> list[Json]:
        body = {"model": CHAT_MODEL[provider], "input": f"{word} {word} {word}", "stream": True}
        with (
            httpx.Client(base_url=named_gateway.url, headers=headers, timeout=10) as client,
            client.stream("POST", f"/{provider}/v1/responses", json=body) as reply,
        ):
            return events_of(reply.read())

    words = [f"w{i}" for i in range(6)]
    with ThreadPoolExecutor(len(words)) as pool:
        streams = list(pool.map(one, words))
    ids = {events[0]["response"]["id"] for events in streams}
    assert len(ids) == len(words)
    for word, events in zip(words, streams, strict=True):
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        final = events[-1]
        assert final["type"] == "response.completed"
        message = next(o for o in final["response"]["output"] if o["type"] == "message")
        assert message["content"][0]["text"] == f"{word} {word} {word}"
