"""Streams always ask the upstream for usage, so every stream is counted (SPEC §10.3), and the
client sees the usage-only chunk only when it asked for it (SPEC §7)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.conftest import CHAT_MODEL
from tests.support.fake_upstreams import CerebrasUpstream, OllamaUpstream, OpenAICompatUpstream
from tests.support.sse import stream_chunks

PROMPT = "count these five words"
WORDS = len(PROMPT.split())
ENDPOINTS = ("chat/completions", "completions")


def body(provider: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"model": CHAT_MODEL[provider], "stream": True}
    if endpoint == "chat/completions":
        fields["messages"] = [{"role": "user", "content": PROMPT}]
    else:
        fields["prompt"] = PROMPT
    return {**fields, **extra}


def stream(client: httpx.Client, provider: str, endpoint: str, **extra: Any) -> list[Any]:
    with client.stream(
        "POST", f"/{provider}/v1/{endpoint}", json=body(provider, endpoint, **extra)
    ) as r:
        r.read()
    return stream_chunks(r)


def tokens(client: httpx.Client, provider: str, kind: str) -> float:
    text = client.get("/metrics").text
    model = CHAT_MODEL[provider]
    labels = f'kind="{kind}",model="{model}",provider="{provider}"'
    pattern = "^oai_gateway_tokens_total" + re.escape("{" + labels + "}") + r" (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found[1]) if found else 0.0


def upstream_of(provider: str, request: pytest.FixtureRequest) -> Any:
    name = {
        "custom": "custom_upstream",
        "ollama": "ollama_upstream",
        "cerebras": "cerebras_upstream",
    }
    return request.getfixturevalue(name[provider])


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_stream_without_include_usage_is_counted_and_shows_no_usage(
    client: httpx.Client, provider: str, endpoint: str, request: pytest.FixtureRequest
) -> None:
    upstream = upstream_of(provider, request)
    before = tokens(client, provider, "prompt"), tokens(client, provider, "completion")
    events = stream(client, provider, endpoint)
    sent = upstream.requests[-1].json
    assert sent["stream_options"] == {"include_usage": True}
    assert events, "no chunks"
    assert all(e["choices"] for e in events), "a usage-only chunk the client did not ask for"
    assert all(e.get("usage") is None for e in events), events
    after = tokens(client, provider, "prompt"), tokens(client, provider, "completion")
    assert after[0] - before[0] == WORDS
    assert after[1] - before[1] >= 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_with_include_usage_the_client_gets_exactly_one_usage_chunk(
    client: httpx.Client, provider: str, endpoint: str, request: pytest.FixtureRequest
) -> None:
    upstream = upstream_of(provider, request)
    before = tokens(client, provider, "prompt")
    events = stream(client, provider, endpoint, stream_options={"include_usage": True})
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    usage_chunks = [e for e in events if e["choices"] == []]
    assert len(usage_chunks) == 1
    assert events[-1] is usage_chunks[0]
    assert usage_chunks[0]["usage"]["prompt_tokens"] == WORDS
    assert tokens(client, provider, "prompt") - before == WORDS


def test_other_stream_options_are_kept(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    stream(client, "custom", "chat/completions", stream_options={"include_obfuscation": False})
    sent = custom_upstream.requests[-1].json
    assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}


def test_include_usage_false_is_overridden_upstream_but_honoured_for_the_client(
    client: httpx.Client, ollama_upstream: OllamaUpstream
) -> None:
    events = stream(client, "ollama", "chat/completions", stream_options={"include_usage": False})
    assert ollama_upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    assert all(e["choices"] for e in events)


def test_several_prompts_to_ollama_are_each_counted(
    client: httpx.Client, ollama_upstream: OllamaUpstream
) -> None:
    before = tokens(client, "ollama", "prompt")
    events = stream(client, "ollama", "completions", prompt=[PROMPT, PROMPT])
    assert all(
        r.json["stream_options"] == {"include_usage": True} for r in ollama_upstream.requests
    )
    assert len(ollama_upstream.requests) == 2
    assert all(e["choices"] for e in events)
    assert tokens(client, "ollama", "prompt") - before == 2 * WORDS


def test_a_plain_request_gets_no_stream_options(
    client: httpx.Client, cerebras_upstream: CerebrasUpstream
) -> None:
    response = client.post(
        "/cerebras/v1/chat/completions",
        json={"model": CHAT_MODEL["cerebras"], "messages": [{"role": "user", "content": PROMPT}]},
    )
    assert response.status_code == 200, response.text
    assert "stream_options" not in cerebras_upstream.requests[-1].json
