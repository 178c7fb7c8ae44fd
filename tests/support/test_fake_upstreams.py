"""Proves the fake upstreams themselves speak their protocols before the gateway relies on them."""

from __future__ import annotations

import base64
import json
import re
import struct
from typing import Any

import httpx
import pytest

from tests.support.fake_upstreams import (
    CerebrasUpstream,
    Fault,
    OllamaUpstream,
    OpenAICompatUpstream,
    openai_error_body,
)

USER = [{"role": "user", "content": "hello brave new world"}]
RFC3339_NANO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d)"
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def events(resp: httpx.Response) -> list[Any]:
    """SSE data payloads, with the ``[DONE]`` sentinel kept as a string."""
    out: list[Any] = []
    for line in resp.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_openai_compat_chat_stream_tools_and_auth() -> None:
    with (
        OpenAICompatUpstream(api_key="sk-up") as up,
        httpx.Client(base_url=up.base_url, timeout=5) as client,
    ):
        assert client.get("/v1/models").status_code == 401
        auth = {"Authorization": "Bearer sk-up"}
        assert client.get("/v1/models/org/model-a", headers=auth).json()["id"] == "org/model-a"
        missing = client.get("/v1/models/nope", headers=auth)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"

        body = {"model": "gpt-test", "messages": USER, "n": 2}
        chat = client.post("/v1/chat/completions", json=body, headers=auth).json()
        assert [c["message"]["content"] for c in chat["choices"]] == [USER[0]["content"]] * 2
        assert "refusal" not in chat["choices"][0]["message"]
        assert "logprobs" not in chat["choices"][0]
        assert "timings" in chat
        assert up.requests[-1].headers["authorization"] == "Bearer sk-up"
        assert up.requests[-1].json == body

        stream = {**body, "n": 1, "stream": True, "stream_options": {"include_usage": True}}
        resp = client.post("/v1/chat/completions", json=stream, headers=auth)
        got = events(resp)
        assert resp.headers["content-type"] == "text/event-stream"
        assert got[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in got[:-2])
        assert text == USER[0]["content"]
        assert got[-3]["choices"][0]["finish_reason"] == "stop"
        assert got[-2]["choices"] == []
        assert got[-2]["usage"]["total_tokens"] > 0
        assert "timings" in got[-2]
        assert got[-1] == "[DONE]"

        tool = {"model": "gpt-test", "messages": USER, "tools": TOOLS, "stream": True}
        got = events(client.post("/v1/chat/completions", json=tool, headers=auth))
        fragments = [t for e in got[:-1] for t in e["choices"][0]["delta"].get("tool_calls", [])]
        assert len(fragments) == 2
        assert all(f["index"] == 0 for f in fragments)
        args = "".join(f["function"]["arguments"] for f in fragments)
        assert json.loads(args) == {"input": USER[0]["content"]}
        assert got[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_compat_completions_and_embeddings() -> None:
    with OpenAICompatUpstream() as up, httpx.Client(base_url=up.base_url, timeout=5) as client:
        comp = client.post("/v1/completions", json={"model": "gpt-test", "prompt": ["a b", "c"]})
        assert [c["text"] for c in comp.json()["choices"]] == ["a b", "c"]
        base = {"model": "gpt-test", "input": ["x", "y"], "dimensions": 4}
        floats = client.post("/v1/embeddings", json=base).json()["data"]
        b64 = client.post("/v1/embeddings", json={**base, "encoding_format": "base64"}).json()
        decoded = [
            list(struct.unpack("<4f", base64.b64decode(d["embedding"]))) for d in b64["data"]
        ]
        assert decoded == [d["embedding"] for d in floats]
        tokens = client.post("/v1/embeddings", json={"model": "gpt-test", "input": [[1, 2], [3]]})
        assert [d["index"] for d in tokens.json()["data"]] == [0, 1]
        assert client.post("/v1/chat/completions", content=b"{nope").status_code == 400


def test_faults() -> None:
    stream = {"model": "gpt-test", "messages": USER, "stream": True}
    with OpenAICompatUpstream() as up, httpx.Client(base_url=up.base_url, timeout=5) as client:
        body = openai_error_body("slow down", "requests", code="rate_limit_exceeded")
        up.fault = Fault("status", status=429, body=body, headers={"Retry-After": "2"})
        limited = client.get("/v1/models")
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "2"
        assert client.get("/health").status_code == 200  # health paths are never faulted

        up.fault = Fault("reset_before_headers")
        with pytest.raises(httpx.ReadError):  # a reset (RST), not a clean close
            client.get("/v1/models")

        up.fault = Fault("invalid_json")
        with pytest.raises(json.JSONDecodeError):
            client.get("/v1/models").json()

        up.fault = Fault("stream_break", after_chunks=2)
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream("POST", "/v1/chat/completions", json=stream) as resp,
        ):
            events(resp)

        up.fault = Fault("stream_error_event", after_chunks=1)
        got = events(client.post("/v1/chat/completions", json=stream))
        assert len(got) == 2
        assert "error" in got[1]

        up.clear()
        assert up.fault is None
        assert up.requests == []


def test_disconnects_are_counted() -> None:
    stream = {"model": "gpt-test", "messages": USER, "stream": True}
    with (
        OpenAICompatUpstream(chunk_delay_s=0.5, stream_chunks=5) as up,
        httpx.Client(base_url=up.base_url, timeout=5) as client,
    ):
        with client.stream("POST", "/v1/chat/completions", json=stream) as resp:
            next(resp.iter_lines())  # then hang up mid-stream
        assert up.wait_for_disconnect(2)

        up.fault = Fault("delay_headers", delay_s=10)
        with pytest.raises(httpx.ReadTimeout):
            client.get("/v1/models", timeout=0.2)
        assert up.wait_for_disconnect(2, count=2)


def test_ollama_quirks() -> None:
    with (
        OllamaUpstream() as up,
        OllamaUpstream(models=[], legacy_stream=True) as empty,
        httpx.Client(base_url=up.base_url, timeout=5) as client,
    ):
        assert client.get("/").text == "Ollama is running"
        tags = client.get("/api/tags").json()["models"]
        assert all(re.fullmatch(RFC3339_NANO, m["modified_at"]) for m in tags)
        assert httpx.get(f"{empty.base_url}/v1/models").json()["data"] is None

        chat = client.post("/v1/chat/completions", json={"model": "llama3.2:1b", "messages": USER})
        data = chat.json()
        assert data["system_fingerprint"] == "fp_ollama"
        assert 0 <= int(data["id"][9:]) < 999
        assert "reasoning" in data["choices"][0]["message"]

        missing = client.post("/v1/chat/completions", json={"model": "x", "messages": USER})
        assert missing.json()["error"]["type"] == "not_found_error"
        assert client.post("/api/show", json={"model": "x"}).json() == {
            "error": "model 'x' not found"
        }
        prompts = {"model": "llama3.2:1b", "prompt": ["a", "b"]}
        assert client.post("/v1/completions", json=prompts).status_code == 400
        tokens = {"model": "nomic-embed-text", "input": [1, 2]}
        assert client.post("/v1/embeddings", json=tokens).json()["error"]["message"] == (
            "invalid input type"
        )

        empty.models.append("llama3.2:1b")
        legacy = {"model": "llama3.2:1b", "messages": USER, "stream": True}
        got = events(httpx.post(f"{empty.base_url}/v1/chat/completions", json=legacy))
        assert all(e["choices"][0]["delta"]["role"] == "assistant" for e in got[:-1])
        assert got[-2]["choices"][0]["finish_reason"] == "stop"
        assert got[-2]["choices"][0]["delta"]["content"] != ""


def test_cerebras_strictness() -> None:
    with CerebrasUpstream(api_key="csk-1") as up, httpx.Client(base_url=up.base_url) as client:
        denied = client.get("/v1/models")
        assert denied.status_code == 401
        assert "error" not in denied.json()
        client.headers["Authorization"] = "Bearer csk-1"
        base = {"model": "gpt-oss-120b", "messages": USER}
        unknown = client.post("/v1/chat/completions", json={**base, "store": True}).json()
        assert unknown["code"] == "wrong_api_format"
        assert "'store'" in unknown["message"]
        developer = {**base, "messages": [{"role": "developer", "content": "x"}]}
        assert client.post("/v1/chat/completions", json=developer).status_code == 400
        assert client.post("/v1/embeddings", json=base).status_code == 404

        got = events(client.post("/v1/chat/completions", json={**base, "stream": True}))
        final = got[-2]
        assert final["choices"][0]["finish_reason"] == "stop"
        assert "usage" in final
        assert "time_info" in final
        assert got[-1] == "[DONE]"
        missing = client.post("/v1/chat/completions", json={**base, "model": "nope"})
        assert missing.status_code == 404
        assert missing.json()["code"] == "model_not_found"
