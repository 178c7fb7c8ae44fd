"""Chat completions through each provider, non-streaming and streaming (SPEC §6.4, §7)."""

from __future__ import annotations

import httpx
import orjson

from tests.conftest import CHAT_MODEL


def test_chat_roundtrip(client: httpx.Client, provider: str) -> None:
    body = {"model": CHAT_MODEL[provider], "messages": [{"role": "user", "content": "hello"}]}
    response = client.post(f"/{provider}/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["refusal"] is None


def test_chat_stream(client: httpx.Client, provider: str) -> None:
    body = {
        "model": CHAT_MODEL[provider],
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
    }
    with client.stream("POST", f"/{provider}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        text = response.read().decode()
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
