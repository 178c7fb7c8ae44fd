"""Chat completions through every provider: forwarding, normalisation and streams (SPEC §6.4, §7).

Every test drives the real gateway over HTTP in front of the loopback fake upstreams and looks
at both sides: what the client got and what the upstream received.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import CEREBRAS_KEY, CHAT_MODEL, CUSTOM_KEY, GATEWAY_KEY
from tests.support.fake_upstreams import (
    CerebrasUpstream,
    OllamaUpstream,
    OpenAICompatUpstream,
)
from tests.support.gateway import GatewayServer, make_config
from tests.support.sse import parse_sse
from tests.support.values import CHAT_PATH, PROMPT, chat_body

Json = dict[str, Any]
PROMPT_WORDS = len(PROMPT.split())
CHAT_KEYS = {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
CHUNK_KEYS = {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
WEATHER_TOOL: Json = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@dataclass
class Stream:
    """A parsed SSE answer: the response plus its JSON events, checked for exact framing."""

    response: httpx.Response
    events: list[Json]
    done: bool

    @property
    def choice_chunks(self) -> list[Json]:
        return [e for e in self.events if e.get("choices")]

    def deltas(self, index: int = 0) -> list[Json]:
        return [c["delta"] for e in self.choice_chunks for c in e["choices"] if c["index"] == index]

    def content(self, index: int = 0) -> str:
        return "".join(d.get("content") or "" for d in self.deltas(index))


def stream_chat(client: httpx.Client, provider: str, body: Json) -> Stream:
    with client.stream("POST", CHAT_PATH.format(provider), json=body) as response:
        text = response.read().decode()
    assert response.status_code == 200, text
    assert response.headers["content-type"].startswith("text/event-stream")
    events, done = parse_sse(text)
    return Stream(response, events, done)


def check_chunk_shape(stream: Stream, model: str) -> None:
    """OpenAI's chunk invariants: one id/created, `finish_reason` on every choice, one role."""
    assert stream.done, "stream did not end with data: [DONE]"
    assert stream.events, "no chunks"
    ids = {e["id"] for e in stream.events}
    created = {e["created"] for e in stream.events}
    assert len(ids) == 1, ids
    assert len(created) == 1, created
    for event in stream.events:
        assert set(event) <= CHUNK_KEYS, event
        assert event["object"] == "chat.completion.chunk"
        assert event["model"] == model
        assert isinstance(event["created"], int)
        for choice in event["choices"]:
            assert "finish_reason" in choice, event
            assert set(choice) <= {"index", "delta", "finish_reason", "logprobs"}, choice
            assert set(choice["delta"]) <= {"role", "content", "refusal", "tool_calls"}, choice
    indices = {c["index"] for e in stream.choice_chunks for c in e["choices"]}
    for index in indices:
        deltas = stream.deltas(index)
        roles = [d for d in deltas if "role" in d]
        assert len(roles) == 1, deltas
        assert deltas[0].get("role") == "assistant", deltas
        finishes = [
            c["finish_reason"]
            for e in stream.choice_chunks
            for c in e["choices"]
            if c["index"] == index
        ]
        assert all(f is None for f in finishes[:-1]), finishes
        assert finishes[-1] is not None, finishes


# --- forwarding -------------------------------------------------------------------------------


def test_custom_forwards_the_body_unchanged(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    body = chat_body(
        "custom",
        messages=[
            {"role": "developer", "content": "Be terse."},
            {"role": "system", "content": "You are a test."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0="}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        response_format={"type": "json_object"},
        n=2,
        stop=["\n\n", "END"],
        seed=42,
        temperature=0.25,
        max_completion_tokens=64,
        logprobs=True,
        top_logprobs=2,
        x_custom_field={"nested": [1, 2, 3]},
    )
    response = client.post(
        CHAT_PATH.format("custom"), json=body, headers={"x-request-id": "forward-check-1"}
    )
    assert response.status_code == 200, response.text
    assert len(custom_upstream.requests) == 1
    seen = custom_upstream.requests[0]
    assert seen.method == "POST"
    assert seen.path == "/v1/chat/completions"
    assert seen.json == body
    assert seen.headers["authorization"] == f"Bearer {CUSTOM_KEY}"
    assert seen.headers["x-request-id"] == "forward-check-1"
    assert GATEWAY_KEY not in repr(seen.headers)
    # n=2 reached an upstream that honours it.
    assert [c["index"] for c in response.json()["choices"]] == [0, 1]


def test_ollama_rewrites_max_completion_tokens_and_developer(
    client: httpx.Client, ollama_upstream: OllamaUpstream
) -> None:
    body = chat_body(
        "ollama",
        messages=[
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": PROMPT},
        ],
        max_completion_tokens=2,
        x_custom_field="kept",
    )
    response = client.post(CHAT_PATH.format("ollama"), json=body)
    assert response.status_code == 200, response.text
    sent = ollama_upstream.requests[-1].json
    assert "max_completion_tokens" not in sent
    assert sent["max_tokens"] == 2
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["messages"][0]["content"] == "Be terse."
    assert sent["x_custom_field"] == "kept"
    # The limit took effect upstream, which only honours max_tokens.
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "hello brave"
    assert choice["finish_reason"] == "length"


def test_ollama_keeps_an_explicit_max_tokens(
    client: httpx.Client, ollama_upstream: OllamaUpstream
) -> None:
    body = chat_body("ollama", max_tokens=3, max_completion_tokens=1)
    response = client.post(CHAT_PATH.format("ollama"), json=body)
    assert response.status_code == 200, response.text
    sent = ollama_upstream.requests[-1].json
    assert sent["max_tokens"] == 3
    assert "max_completion_tokens" not in sent


def test_cerebras_gets_developer_as_system(
    client: httpx.Client, cerebras_upstream: CerebrasUpstream
) -> None:
    body = chat_body(
        "cerebras",
        messages=[
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": PROMPT},
        ],
        seed=7,
    )
    # The fake Cerebras rejects the developer role with a 400, as the real one does.
    response = client.post(CHAT_PATH.format("cerebras"), json=body)
    assert response.status_code == 200, response.text
    sent = cerebras_upstream.requests[-1]
    assert [m["role"] for m in sent.json["messages"]] == ["system", "user"]
    assert sent.json["seed"] == 7
    assert sent.headers["authorization"] == f"Bearer {CEREBRAS_KEY}"


# --- non-streaming normalisation ----------------------------------------------------------------


def test_chat_answer_is_normalised(client: httpx.Client, provider: str) -> None:
    response = client.post(CHAT_PATH.format(provider), json=chat_body(provider))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert set(answer) <= CHAT_KEYS, answer  # timings / time_info dropped
    assert answer["object"] == "chat.completion"
    assert answer["model"] == CHAT_MODEL[provider]
    assert isinstance(answer["id"], str)
    assert answer["id"]
    assert isinstance(answer["created"], int)
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": PROMPT, "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert answer["usage"] == {
        "prompt_tokens": PROMPT_WORDS,
        "completion_tokens": PROMPT_WORDS,
        "total_tokens": 2 * PROMPT_WORDS,
    }


def test_ollama_ids_are_regenerated(client: httpx.Client) -> None:
    ids = []
    for _ in range(2):
        response = client.post(CHAT_PATH.format("ollama"), json=chat_body("ollama"))
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    assert ids[0] != ids[1]
    # Ollama's own ids are chatcmpl-<0..998> and collide; none of them may leak through.
    assert not any(re.fullmatch(r"chatcmpl-\d{1,3}", i) for i in ids), ids
    assert all(i.startswith("chatcmpl-") for i in ids), ids


def test_tool_call_answer(client: httpx.Client, provider: str) -> None:
    body = chat_body(provider, tools=[WEATHER_TOOL])
    response = client.post(CHAT_PATH.format(provider), json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["logprobs"] is None
    message = choice["message"]
    assert message["content"] is None
    assert message["refusal"] is None
    [call] = message["tool_calls"]
    assert call["type"] == "function"
    assert isinstance(call["id"], str)
    assert call["id"]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"input": PROMPT}
    assert response.json()["usage"]["completion_tokens"] >= 1


# --- streams --------------------------------------------------------------------------------------


def test_stream_shape(client: httpx.Client, provider: str) -> None:
    stream = stream_chat(client, provider, chat_body(provider, stream=True))
    check_chunk_shape(stream, CHAT_MODEL[provider])
    assert stream.content() == PROMPT
    assert stream.choice_chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(e.get("usage") is None for e in stream.events), stream.events
    assert all(e["choices"] for e in stream.events), "usage chunk without include_usage"
    assert "text/event-stream" in stream.response.headers["content-type"]


def test_stream_with_include_usage(client: httpx.Client, provider: str) -> None:
    body = chat_body(provider, stream=True, stream_options={"include_usage": True})
    stream = stream_chat(client, provider, body)
    check_chunk_shape(stream, CHAT_MODEL[provider])
    usage_chunks = [e for e in stream.events if e["choices"] == []]
    assert len(usage_chunks) == 1
    assert stream.events[-1] is usage_chunks[0], "usage chunk is not the last one"
    assert usage_chunks[0]["usage"] == {
        "prompt_tokens": PROMPT_WORDS,
        "completion_tokens": PROMPT_WORDS,
        "total_tokens": 2 * PROMPT_WORDS,
    }
    # Cerebras puts usage on its finish chunk; OpenAI sends it only on the final one.
    assert all(e.get("usage") is None for e in stream.events[:-1]), stream.events


def test_cerebras_unrequested_usage_is_stripped(client: httpx.Client) -> None:
    stream = stream_chat(client, "cerebras", chat_body("cerebras", stream=True))
    assert stream.done
    assert all(e.get("usage") is None and "time_info" not in e for e in stream.events)
    assert all(e["choices"] for e in stream.events)


def test_stream_tool_call_fragments_keep_index(client: httpx.Client, provider: str) -> None:
    stream = stream_chat(client, provider, chat_body(provider, stream=True, tools=[WEATHER_TOOL]))
    check_chunk_shape(stream, CHAT_MODEL[provider])
    fragments = [call for d in stream.deltas() for call in d.get("tool_calls", [])]
    if provider == "custom":
        assert len(fragments) >= 2, "the custom fake fragments arguments; test lost its point"
    assert fragments
    assert all(f["index"] == 0 for f in fragments), fragments
    first = fragments[0]
    assert first["type"] == "function"
    assert first["function"]["name"] == "get_weather"
    assert isinstance(first["id"], str)
    assert first["id"]
    arguments = "".join(f["function"].get("arguments", "") for f in fragments)
    assert orjson.loads(arguments) == {"input": PROMPT}
    assert stream.choice_chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_with_several_choices(client: httpx.Client) -> None:
    stream = stream_chat(client, "custom", chat_body("custom", stream=True, n=2))
    check_chunk_shape(stream, CHAT_MODEL["custom"])
    assert stream.content(0) == PROMPT
    assert stream.content(1) == PROMPT


@pytest.fixture(scope="module")
def legacy_ollama() -> Iterator[GatewayServer]:
    """A gateway in front of an Ollama older than 0.32.6, which repeats the role every chunk."""
    with (
        OllamaUpstream(legacy_stream=True) as upstream,
        GatewayServer(
            make_config(allowed_api_keys=GATEWAY_KEY, ollama_base_url=upstream.base_url)
        ) as gateway,
    ):
        yield gateway


def test_legacy_ollama_stream_sends_role_once(legacy_ollama: GatewayServer) -> None:
    with legacy_ollama.client() as http:
        stream = stream_chat(http, "ollama", chat_body("ollama", stream=True))
    check_chunk_shape(stream, CHAT_MODEL["ollama"])
    assert len(stream.deltas()) >= 3  # several chunks, each with a role upstream
    assert stream.content() == PROMPT
    assert stream.choice_chunks[-1]["choices"][0]["finish_reason"] == "stop"


class TerseUpstream(OpenAICompatUpstream):
    """An OpenAI-compatible server that leaves out null fields (`finish_reason`, `logprobs`),
    and sends neither `id` nor `created`, as some llama.cpp-style servers do."""

    def envelope(self, obj: str, rid: tuple[str, int], model: str, choices: list[Json]) -> Json:
        del rid
        terse = [{k: v for k, v in c.items() if v is not None} for c in choices]
        return {"object": obj, "model": model, "choices": terse}


@pytest.fixture(scope="module")
def terse_client() -> Iterator[httpx.Client]:
    with (
        TerseUpstream() as upstream,
        GatewayServer(
            make_config(allowed_api_keys=GATEWAY_KEY, custom_base_url=upstream.base_url + "/v1")
        ) as gateway,
        httpx.Client(
            base_url=gateway.url, headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=10
        ) as http,
    ):
        yield http


def test_terse_upstream_answer_is_completed(terse_client: httpx.Client) -> None:
    response = terse_client.post(CHAT_PATH.format("custom"), json=chat_body("custom"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer["id"], str)
    assert answer["id"].startswith("chatcmpl")
    assert isinstance(answer["created"], int)
    assert answer["created"] > 0
    choice = answer["choices"][0]
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"


def test_terse_upstream_stream_is_completed(terse_client: httpx.Client) -> None:
    stream = stream_chat(terse_client, "custom", chat_body("custom", stream=True))
    check_chunk_shape(stream, CHAT_MODEL["custom"])  # finish_reason on every choice, one id
    assert stream.content() == PROMPT
    assert all(isinstance(e["id"], str) and e["id"] for e in stream.events)


@pytest.fixture
def paced_custom(custom_upstream: OpenAICompatUpstream) -> Iterator[OpenAICompatUpstream]:
    """The custom upstream sending 6 content chunks 0.2 s apart, restored afterwards."""
    saved = custom_upstream.chunk_delay_s, custom_upstream.stream_chunks
    custom_upstream.chunk_delay_s, custom_upstream.stream_chunks = 0.2, 6
    try:
        yield custom_upstream
    finally:
        custom_upstream.chunk_delay_s, custom_upstream.stream_chunks = saved


def test_stream_chunks_are_relayed_as_they_arrive(
    client: httpx.Client, paced_custom: OpenAICompatUpstream
) -> None:
    # 9 frames 0.2 s apart: the upstream needs ~1.6 s for the whole stream.
    arrivals: list[float] = []
    text = b""
    started = time.monotonic()
    body = chat_body("custom", stream=True)
    with client.stream("POST", CHAT_PATH.format("custom"), json=body) as response:
        assert response.status_code == 200
        for part in response.iter_raw():
            text += part
            arrivals.append(time.monotonic() - started)
    events, done = parse_sse(text.decode())
    assert done
    assert len(events) == 8
    # A buffering gateway would deliver everything at the end, in one burst.
    assert arrivals[-1] - arrivals[0] > 0.8, arrivals
    assert len(arrivals) >= 4, arrivals


# --- the official SDK ---------------------------------------------------------------------------


def sdk(gateway: GatewayServer, provider: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/{provider}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=10
    )


def test_sdk_chat(gateway: GatewayServer, provider: str) -> None:
    with sdk(gateway, provider) as api:
        answer = api.chat.completions.create(
            model=CHAT_MODEL[provider], messages=[{"role": "user", "content": PROMPT}]
        )
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == PROMPT
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.total_tokens == 2 * PROMPT_WORDS
    assert answer.model_extra == {}, answer.model_extra  # no non-OpenAI fields left


def test_sdk_chat_stream(gateway: GatewayServer, provider: str) -> None:
    with sdk(gateway, provider) as api:
        stream = api.chat.completions.create(
            model=CHAT_MODEL[provider],
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == PROMPT
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 2 * PROMPT_WORDS


def test_sdk_stream_helper_assembles_tool_call(gateway: GatewayServer, provider: str) -> None:
    # The SDK's accumulator merges tool-call fragments by index and fails without one.
    with (
        sdk(gateway, provider) as api,
        api.chat.completions.stream(
            model=CHAT_MODEL[provider],
            messages=[{"role": "user", "content": PROMPT}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        ) as stream,
    ):
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"input": PROMPT}
