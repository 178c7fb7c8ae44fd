"""Upstream answers with unchecked shapes are invalid upstream answers: 502, never a 500.

Each case is a 200 from a loopback upstream whose body the normalisers once trusted: a base64
embedding that is not base64 (or not whole float32 values), chat-form logprobs whose entries lack
a number, a chunk `index` that is a list.
"""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.support.errors import check_error
from tests.support.fake_upstreams import Fault, OpenAICompatUpstream
from tests.support.sse import parse_sse

CHAT = "/custom/v1/chat/completions"
COMPLETIONS = "/custom/v1/completions"
EMBEDDINGS = "/custom/v1/embeddings"


def answer(server: OpenAICompatUpstream, body: object) -> None:
    server.fault = Fault(kind="status", status=200, body=orjson.dumps(body))


def stream_answer(server: OpenAICompatUpstream, *chunks: object) -> None:
    events = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    server.fault = Fault(
        kind="status",
        status=200,
        body=events + b"data: [DONE]\n\n",
        headers={"Content-Type": "text/event-stream"},
    )


@pytest.mark.parametrize(
    "vector",
    ["not base64 at all!", "AAAAAAA=", "AAAA" * 3 + "A"],
    ids=["not-base64", "five-bytes", "bad-padding"],
)
def test_undecodable_base64_embedding_is_502(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream, vector: str
) -> None:
    answer(
        custom_upstream,
        {
            "object": "list",
            "model": "org/model-a",
            "data": [{"object": "embedding", "index": 0, "embedding": vector, "extra": 1}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        },
    )
    body = {"model": "org/model-a", "input": "x", "encoding_format": "float"}
    check_error(client.post(EMBEDDINGS, json=body), 502, "upstream_error", type_="api_error")


@pytest.mark.parametrize(
    "entry",
    [
        {"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a"}]},
        {"token": "a", "logprob": -0.1, "top_logprobs": [{"token": ["a"], "logprob": -1}]},
    ],
    ids=["alternative-without-logprob", "unhashable-token"],
)
def test_malformed_chat_form_logprobs_in_a_completion_do_not_break_the_answer(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream, entry: object
) -> None:
    answer(
        custom_upstream,
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "gpt-test",
            "choices": [
                {"index": 0, "text": "a", "finish_reason": "stop", "logprobs": {"content": [entry]}}
            ],
        },
    )
    response = client.post(COMPLETIONS, json={"model": "gpt-test", "prompt": "x"})
    assert response.status_code in (200, 502), response.text
    if response.status_code == 200:
        logprobs = response.json()["choices"][0]["logprobs"]
        assert logprobs["tokens"] == ["a"], logprobs
    else:
        check_error(response, 502, "upstream_error", type_="api_error")


def test_unhashable_chunk_index_is_not_a_500(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": [{"index": [0], "delta": {"role": "assistant", "content": "hi"}}],
    }
    stream_answer(custom_upstream, chunk)
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "stream": True}
    response = client.post(CHAT, json=body)
    assert response.status_code == 200
    events, done = parse_sse(response.text)
    errors = [e["error"] for e in events if "error" in e]
    for error in errors:
        assert error["code"] == "upstream_error", error
    for event in events:
        for choice in event.get("choices", []):
            assert isinstance(choice["index"], int), event
    assert done or errors, response.text
