"""LangChain's `ChatOpenAI(use_responses_api=True)` through the gateway, in both modes: a plain
answer, a stream, and a tool-call turn, each checked at the client and at the upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.conftest import CHAT_MODEL, GATEWAY_KEY
from tests.support.fake_upstreams import CerebrasUpstream, OpenAICompatUpstream
from tests.support.gateway import GatewayServer
from tests.support.values import PROMPT

MODES = ["custom", "cerebras"]  # native (llama.cpp-shaped upstream) and translate


@tool
def get_weather(input: str) -> str:
    """The current weather for what the user asked."""
    return "sunny and 18 degrees"


@pytest.fixture
def upstreams(
    custom_upstream: OpenAICompatUpstream, cerebras_upstream: CerebrasUpstream
) -> Iterator[dict[str, OpenAICompatUpstream]]:
    custom_upstream.responses.deviant = True  # its /v1/responses answers as llama.cpp's does
    yield {"custom": custom_upstream, "cerebras": cerebras_upstream}
    custom_upstream.responses.deviant = False


def chat_model(gateway: GatewayServer, provider: str, **extra: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=CHAT_MODEL[provider],
        base_url=f"{gateway.url}/{provider}/v1",
        api_key=SecretStr(GATEWAY_KEY),
        use_responses_api=True,
        max_retries=0,
        timeout=10,
        **extra,
    )


def upstream_paths(upstream: OpenAICompatUpstream) -> list[str]:
    return [r.path for r in upstream.requests]


def expected_path(provider: str) -> str:
    return "/v1/responses" if provider == "custom" else "/v1/chat/completions"


@pytest.mark.parametrize("provider", MODES)
def test_invoke(
    gateway: GatewayServer, provider: str, upstreams: dict[str, OpenAICompatUpstream]
) -> None:
    answer = chat_model(gateway, provider).invoke(PROMPT)
    assert isinstance(answer, AIMessage)
    assert answer.text == PROMPT  # the fake model echoes the prompt
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["output_tokens"] > 0
    upstream = upstreams[provider]
    assert upstream_paths(upstream) == [expected_path(provider)]
    assert not upstream.requests[0].json.get("stream")


@pytest.mark.parametrize("provider", MODES)
def test_stream(
    gateway: GatewayServer, provider: str, upstreams: dict[str, OpenAICompatUpstream]
) -> None:
    chunks = list(chat_model(gateway, provider).stream(PROMPT))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len([c for c in chunks if c.text]) > 1  # it really arrived in pieces
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.text == PROMPT
    upstream = upstreams[provider]
    assert upstream_paths(upstream) == [expected_path(provider)]
    assert upstream.requests[0].json.get("stream") is True


@pytest.mark.parametrize("provider", MODES)
def test_a_tool_call_turn(
    gateway: GatewayServer, provider: str, upstreams: dict[str, OpenAICompatUpstream]
) -> None:
    model = chat_model(gateway, provider).bind_tools([get_weather])
    question = HumanMessage("weather in Paris")
    call = model.invoke([question])
    assert isinstance(call, AIMessage)
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [
        ("get_weather", {"input": "weather in Paris"})
    ]
    result = ToolMessage(
        get_weather.invoke(call.tool_calls[0]["args"]), tool_call_id=call.tool_calls[0]["id"]
    )
    final = model.invoke([question, call, result])
    assert final.text == "sunny and 18 degrees"  # the fake model repeats the tool's output
    upstream = upstreams[provider]
    assert upstream_paths(upstream) == [expected_path(provider)] * 2
    second = upstream.requests[1].json
    if provider == "custom":  # the Responses items went through unchanged
        outputs = [i for i in second["input"] if i.get("type") == "function_call_output"]
        assert [o["call_id"] for o in outputs] == [call.tool_calls[0]["id"]]
    else:  # translated into a chat tool message
        tools = [m for m in second["messages"] if m["role"] == "tool"]
        assert [m["tool_call_id"] for m in tools] == [call.tool_calls[0]["id"]]
