"""Legacy text completions through every provider (SPEC §6.3, §7), plus SDK completions/chat."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import CHAT_MODEL, GATEWAY_KEY
from tests.support.errors import check_error
from tests.support.fake_upstreams import OllamaUpstream, OpenAICompatUpstream
from tests.support.gateway import GatewayServer
from tests.support.sse import parse_sse

PROMPTS = ["alpha beta", "gamma", "delta epsilon zeta"]
TEXT_CHOICE_KEYS = {"text", "index", "logprobs", "finish_reason"}


def complete(client: httpx.Client, provider: str, **fields: Any) -> httpx.Response:
    return client.post(
        f"/{provider}/v1/completions", json={"model": CHAT_MODEL[provider], **fields}
    )


def stream_events(client: httpx.Client, provider: str, **fields: Any) -> list[dict[str, Any]]:
    """The stream's JSON chunks, after checking its SSE framing and the final [DONE]."""
    body = {"model": CHAT_MODEL[provider], "stream": True, **fields}
    with client.stream("POST", f"/{provider}/v1/completions", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events, done = parse_sse(text)
    assert done, text[-200:]  # [DONE] last: parse_sse refuses anything after it
    return events


def assert_text_completion(body: dict[str, Any], provider: str) -> None:
    assert body["object"] == "text_completion"
    assert isinstance(body["id"], str)
    assert body["id"]
    assert isinstance(body["created"], int)
    assert body["model"] == CHAT_MODEL[provider]
    for choice in body["choices"]:
        assert set(choice) == TEXT_CHOICE_KEYS
        assert choice["logprobs"] is None
        assert choice["finish_reason"] == "stop"
    assert not {"timings", "time_info", "system_fingerprint_extra"} & set(body)


def texts_by_index(chunks: list[dict[str, Any]]) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    return texts


def assert_chunks(chunks: list[dict[str, Any]], provider: str) -> None:
    assert chunks
    assert all(c["object"] == "text_completion" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["model"] == CHAT_MODEL[provider] for c in chunks)
    for chunk in chunks:
        for choice in chunk["choices"]:
            assert set(choice) == TEXT_CHOICE_KEYS
    finishes = [
        choice["finish_reason"]
        for c in chunks
        for choice in c["choices"]
        if choice["finish_reason"]
    ]
    assert finishes
    assert set(finishes) == {"stop"}


# -- non-streaming -------------------------------------------------------------------------------


def test_single_prompt(client: httpx.Client, provider: str, upstream: OpenAICompatUpstream) -> None:
    response = complete(client, provider, prompt="hello there")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert_text_completion(body, provider)
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "hello there")]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    assert len(upstream.requests) == 1
    assert upstream.requests[0].path == "/v1/completions"
    assert upstream.requests[0].json["prompt"] == "hello there"


def test_prompt_list(client: httpx.Client, provider: str) -> None:
    response = complete(client, provider, prompt=PROMPTS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_text_completion(body, provider)
    assert [(c["index"], c["text"]) for c in body["choices"]] == list(enumerate(PROMPTS))
    # 2+1+3 prompt words; the fake echoes each prompt back as its completion.
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 6, "total_tokens": 12}


def test_ollama_prompt_list_one_call_per_prompt(
    client: httpx.Client, ollama_upstream: OllamaUpstream
) -> None:
    response = complete(client, "ollama", prompt=PROMPTS, max_tokens=1)
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert [(c["index"], c["text"]) for c in choices] == [(0, "alpha"), (1, "gamma"), (2, "delta")]
    assert [c["finish_reason"] for c in choices] == ["length", "stop", "length"]
    sent = [r.json for r in ollama_upstream.requests]
    assert len(sent) == len(PROMPTS)
    assert all(r.path == "/v1/completions" for r in ollama_upstream.requests)
    assert sorted(s["prompt"] for s in sent) == sorted(PROMPTS)
    assert all(s["max_tokens"] == 1 for s in sent)


@pytest.mark.parametrize("provider", ["custom", "cerebras"])  # ollama splits, covered above
def test_passthrough_providers_send_prompt_list_once(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream
) -> None:
    response = complete(client, provider, prompt=PROMPTS)
    assert response.status_code == 200, response.text
    assert [r.json["prompt"] for r in upstream.requests] == [PROMPTS]


def test_custom_token_prompts_passed_through(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    response = complete(client, "custom", prompt=[[1, 2], [3]])
    assert response.status_code == 200, response.text
    assert [c["index"] for c in response.json()["choices"]] == [0, 1]
    assert custom_upstream.requests[0].json["prompt"] == [[1, 2], [3]]


# -- streaming -----------------------------------------------------------------------------------


def test_stream_single_prompt(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream
) -> None:
    chunks = stream_events(client, provider, prompt="one two three four")
    assert_chunks(chunks, provider)
    assert texts_by_index(chunks) == {0: "one two three four"}
    # Usage was not asked for: no usage-only chunk and no usage on any chunk.
    assert all(c["choices"] for c in chunks)
    assert all(c.get("usage") is None for c in chunks)
    assert len(upstream.requests) == 1
    assert upstream.requests[0].json["stream"] is True


def test_stream_prompt_list(client: httpx.Client, provider: str) -> None:
    chunks = stream_events(client, provider, prompt=PROMPTS)
    assert_chunks(chunks, provider)
    assert texts_by_index(chunks) == dict(enumerate(PROMPTS))
    finished = [ch["index"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert sorted(finished) == [0, 1, 2]


def test_stream_include_usage_final_chunk(client: httpx.Client, provider: str) -> None:
    chunks = stream_events(client, provider, prompt=PROMPTS, stream_options={"include_usage": True})
    assert_chunks(chunks, provider)
    last = chunks[-1]
    assert last["choices"] == []
    assert last["object"] == "text_completion"
    assert last["usage"] == {"prompt_tokens": 6, "completion_tokens": 6, "total_tokens": 12}
    assert all(c["choices"] for c in chunks[:-1])
    assert texts_by_index(chunks) == dict(enumerate(PROMPTS))


def test_ollama_stream_prompt_list_in_order(
    client: httpx.Client, ollama_upstream: OllamaUpstream
) -> None:
    chunks = stream_events(client, "ollama", prompt=PROMPTS)
    indexes = [ch["index"] for c in chunks for ch in c["choices"]]
    # One upstream stream per prompt, relayed one after another.
    assert indexes == sorted(indexes)
    assert set(indexes) == {0, 1, 2}
    assert [r.json["prompt"] for r in ollama_upstream.requests] == PROMPTS
    assert all(r.json["stream"] is True for r in ollama_upstream.requests)


# -- token ids through ollama --------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [[101, 102, 103], [[101, 102], [7]]])
@pytest.mark.parametrize("stream", [False, True])
def test_ollama_token_prompts_rejected(
    client: httpx.Client, ollama_upstream: OllamaUpstream, prompt: Any, stream: bool
) -> None:
    response = complete(client, "ollama", prompt=prompt, stream=stream)
    error = check_error(response, 400, "unsupported_operation")
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "prompt"
    assert "ollama" in error["message"]
    assert ollama_upstream.requests == []


# -- validation and errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "prompt"),
        ({"prompt": 7}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": ["a", 1]}, "prompt"),
        ({"prompt": "a", "stream": "yes"}, "stream"),
        ({"prompt": "a", "stream": True, "stream_options": []}, "stream_options"),
    ],
)
def test_invalid_request_400_without_upstream_call(
    client: httpx.Client,
    provider: str,
    upstream: OpenAICompatUpstream,
    fields: dict[str, Any],
    param: str,
) -> None:
    error = check_error(complete(client, provider, **fields), 400, None)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert upstream.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_404(client: httpx.Client, provider: str, stream: bool) -> None:
    response = client.post(
        f"/{provider}/v1/completions",
        json={"model": "no-such-model", "prompt": "hi", "stream": stream},
    )
    check_error(response, 404, "model_not_found")


# -- official SDK --------------------------------------------------------------------------------


def sdk(gateway: GatewayServer, provider: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/{provider}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=10
    )


def test_sdk_completions(gateway: GatewayServer, provider: str) -> None:
    with sdk(gateway, provider) as api:
        done = api.completions.create(model=CHAT_MODEL[provider], prompt=["hi there", "bye"])
        stream = api.completions.create(
            model=CHAT_MODEL[provider],
            prompt="streamed words here",
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert done.object == "text_completion"
    assert [(c.index, c.text) for c in done.choices] == [(0, "hi there"), (1, "bye")]
    assert done.usage is not None
    assert done.usage.total_tokens == 6
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(ch.text for c in chunks for ch in c.choices) == "streamed words here"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 3


def test_sdk_chat(gateway: GatewayServer, provider: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "say these words"}]
    with sdk(gateway, provider) as api:
        done = api.chat.completions.create(model=CHAT_MODEL[provider], messages=messages)
        stream = api.chat.completions.create(
            model=CHAT_MODEL[provider], messages=messages, stream=True
        )
        chunks = list(stream)
    assert done.object == "chat.completion"
    assert done.choices[0].message.content == "say these words"
    assert done.choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "say these words"
    assert chunks[0].choices[0].delta.role == "assistant"


def test_sdk_completions_unknown_model_not_found(gateway: GatewayServer, provider: str) -> None:
    with sdk(gateway, provider) as api, pytest.raises(openai.NotFoundError) as caught:
        api.completions.create(model="no-such-model", prompt="hi")
    assert caught.value.code == "model_not_found"


def test_sdk_ollama_token_prompt_bad_request(gateway: GatewayServer) -> None:
    with sdk(gateway, "ollama") as api, pytest.raises(openai.BadRequestError) as caught:
        api.completions.create(model=CHAT_MODEL["ollama"], prompt=[1, 2, 3])
    assert caught.value.code == "unsupported_operation"
    assert caught.value.param == "prompt"
