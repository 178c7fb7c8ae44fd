"""Request bodies are checked against OpenAI's schema before anything goes upstream (SPEC §5).

A wrong type or range is a 400 invalid_request_error naming the top-level field in `param`, and
the upstream never sees the request; every valid form (nulls for "not set", unknown fields)
reaches the upstream unchanged.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.fake_upstreams import OpenAICompatUpstream

Json = dict[str, Any]
CHAT: Json = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION: Json = {"model": "gpt-test", "prompt": "hi"}
EMBEDDING: Json = {"model": "org/model-a", "input": "hi"}
PATHS = {
    "chat": "/custom/v1/chat/completions",
    "completions": "/custom/v1/completions",
    "embeddings": "/custom/v1/embeddings",
}
BASES = {"chat": CHAT, "completions": COMPLETION, "embeddings": EMBEDDING}
IMAGE_URL = {"url": "https://example.com/a.png"}
USER_IMAGE: Json = {"type": "image_url", "image_url": IMAGE_URL}
CALL = {"name": "f", "arguments": "{"}

INVALID: list[tuple[str, Json, str]] = [
    # the four the review reproduced
    ("chat", {"temperature": "hot"}, "temperature"),
    ("chat", {"n": "2"}, "n"),
    ("chat", {"max_tokens": "ten"}, "max_tokens"),
    ("chat", {"messages": [{"role": "user", "content": 42}]}, "messages"),
    # ranges
    ("chat", {"temperature": 2.5}, "temperature"),
    ("chat", {"top_p": -0.1}, "top_p"),
    ("chat", {"n": 0}, "n"),
    ("chat", {"presence_penalty": 3}, "presence_penalty"),
    ("chat", {"top_logprobs": 21}, "top_logprobs"),
    ("chat", {"logit_bias": {"50256": -101}}, "logit_bias"),
    ("chat", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("chat", {"stop": []}, "stop"),
    ("chat", {"metadata": {"k": "v" * 513}}, "metadata"),
    ("chat", {"safety_identifier": "x" * 65}, "safety_identifier"),
    # types and enumerations
    ("chat", {"n": True}, "n"),
    ("chat", {"n": 2.5}, "n"),
    ("chat", {"stream": "yes"}, "stream"),
    ("chat", {"stream_options": {"include_usage": "yes"}}, "stream_options"),
    ("chat", {"seed": "42"}, "seed"),
    ("chat", {"logprobs": 1}, "logprobs"),
    ("chat", {"reasoning_effort": "extreme"}, "reasoning_effort"),
    ("chat", {"service_tier": "gold"}, "service_tier"),
    ("chat", {"modalities": ["video"]}, "modalities"),
    ("chat", {"tool_choice": "sometimes"}, "tool_choice"),
    ("chat", {"tool_choice": {"type": "function"}}, "tool_choice"),
    ("chat", {"tools": [{"type": "function"}]}, "tools"),
    ("chat", {"tools": [{"type": "function", "function": {"name": 7}}]}, "tools"),
    ("chat", {"response_format": {"type": "xml"}}, "response_format"),
    ("chat", {"response_format": {"type": "json_schema"}}, "response_format"),
    ("chat", {"parallel_tool_calls": "true"}, "parallel_tool_calls"),
    ("chat", {"audio": {"voice": "alloy", "format": "ogg"}}, "audio"),
    ("chat", {"prediction": {"type": "content", "content": 5}}, "prediction"),
    ("chat", {"user": 12}, "user"),
    # messages in depth
    ("chat", {"messages": []}, "messages"),
    ("chat", {"messages": "hi"}, "messages"),
    ("chat", {"messages": [{"content": "hi"}]}, "messages"),
    ("chat", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ("chat", {"messages": [{"role": "user"}]}, "messages"),
    ("chat", {"messages": [{"role": "user", "content": []}]}, "messages"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
    ("chat", {"messages": [{"role": "system", "content": [USER_IMAGE]}]}, "messages"),
    ("chat", {"messages": [{"role": "tool", "content": "42"}]}, "messages"),
    (
        "chat",
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]},
        "messages",
    ),
    # legacy completions
    ("completions", {"max_tokens": "ten"}, "max_tokens"),
    ("completions", {"max_tokens": -1}, "max_tokens"),
    ("completions", {"temperature": "hot"}, "temperature"),
    ("completions", {"logprobs": 6}, "logprobs"),
    ("completions", {"best_of": 21}, "best_of"),
    ("completions", {"echo": "no"}, "echo"),
    ("completions", {"suffix": 1}, "suffix"),
    ("completions", {"n": "2"}, "n"),
    ("completions", {"prompt": 42}, "prompt"),
    # embeddings
    ("embeddings", {"dimensions": 0}, "dimensions"),
    ("embeddings", {"dimensions": "256"}, "dimensions"),
    ("embeddings", {"encoding_format": "int8"}, "encoding_format"),
    ("embeddings", {"user": ["u"]}, "user"),
    ("embeddings", {"input": [1, "a"]}, "input"),
]


@pytest.mark.parametrize(
    ("endpoint", "change", "param"),
    INVALID,
    ids=[f"{e}-{p}-{i}" for i, (e, _, p) in enumerate(INVALID)],
)
def test_invalid_field_is_400_naming_it_and_never_reaches_the_upstream(
    client: httpx.Client,
    custom_upstream: OpenAICompatUpstream,
    endpoint: str,
    change: Json,
    param: str,
) -> None:
    response = client.post(PATHS[endpoint], json={**BASES[endpoint], **change})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error", error
    assert error["param"] == param, error
    assert error["code"] is None, error
    assert param in error["message"], error
    assert custom_upstream.requests == [], "an invalid request went upstream"


NULLS = {
    "chat": [
        "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "seed",
        "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs",
        "response_format", "tools", "tool_choice", "parallel_tool_calls", "stream",
        "stream_options", "user", "metadata", "store", "service_tier", "reasoning_effort",
        "verbosity", "modalities", "audio", "prediction", "web_search_options",
        "safety_identifier", "prompt_cache_key", "function_call", "functions",
    ],
    "completions": [
        "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
        "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix",
        "temperature", "top_p", "user",
    ],
    "embeddings": ["encoding_format", "dimensions", "user"],
}  # fmt: skip

VALID: list[tuple[str, Json]] = [
    ("chat", dict.fromkeys(NULLS["chat"])),
    ("completions", dict.fromkeys(NULLS["completions"])),
    ("embeddings", dict.fromkeys(NULLS["embeddings"])),
    (
        "chat",
        {
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "system", "content": "you are terse", "name": "rules"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {**IMAGE_URL, "detail": "low"}},
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                        {"type": "file", "file": {"file_id": "file-1"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
                {"role": "user", "content": "thanks", "vendor_extra": {"x": 1}},
            ],
            "temperature": 0,
            "top_p": 1,
            "n": 1,
            "stop": "END",
            "max_tokens": 0,
            "seed": -3,
            "logit_bias": {"50256": -100},
            "logprobs": True,
            "top_logprobs": 20,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
            },
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
                {"type": "custom", "custom": {"name": "g"}},
            ],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": False,
            "metadata": {"team": "search"},
            "reasoning_effort": "low",
            "an_unknown_field": {"kept": [1, 2, 3]},
        },
    ),
    ("chat", {"stop": ["a", "b", "c", "d"], "tool_choice": "required", "temperature": 2}),
    ("completions", {"prompt": ["a", "b"], "max_tokens": 5, "logprobs": 0, "stop": ["\n"]}),
    ("completions", {"prompt": [[1, 2], [3]], "echo": True, "suffix": "", "best_of": 2}),
    ("embeddings", {"input": [[1, 2], [3]], "encoding_format": "float", "dimensions": 8}),
]


@pytest.mark.parametrize(("endpoint", "change"), VALID)
def test_every_valid_form_reaches_the_upstream_unchanged(
    client: httpx.Client,
    custom_upstream: OpenAICompatUpstream,
    endpoint: str,
    change: Json,
) -> None:
    body = {**BASES[endpoint], **change}
    response = client.post(PATHS[endpoint], json=body)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        # The upstream itself may refuse a combination; the gateway must not have.
        assert custom_upstream.requests, response.text
    assert len(custom_upstream.requests) == 1
    assert custom_upstream.requests[0].json == body
