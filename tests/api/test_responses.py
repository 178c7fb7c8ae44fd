"""`POST /{provider}/v1/responses` over real HTTP, in both modes, with the official SDK.

`custom` (kind openai) and `ollama` relay the upstream's own `/v1/responses` (`native`);
`cerebras` translates to chat completions (`translate`). Every answer and event is also checked
against OpenAI's schemas by the suite's autouse fixture (tests/support/spec.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.conftest import CHAT_MODEL, GATEWAY_KEY, upstream_for
from tests.support.fake_upstreams import CerebrasUpstream, OllamaUpstream, OpenAICompatUpstream

Json = dict[str, Any]
MODES = {"custom": "native", "ollama": "native", "cerebras": "translate"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}


@pytest.fixture(params=sorted(MODES))
def provider(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def sdk(gateway: Any, provider: str) -> Iterator[openai.OpenAI]:
    base = f"{gateway.url}/{provider}/v1"
    with openai.OpenAI(base_url=base, api_key=GATEWAY_KEY, max_retries=0, timeout=10) as client:
        yield client


@pytest.fixture
def upstream(
    provider: str,
    custom_upstream: OpenAICompatUpstream,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> OpenAICompatUpstream:
    return upstream_for(provider, custom_upstream, ollama_upstream, cerebras_upstream)


def upstream_paths(upstream: OpenAICompatUpstream) -> list[str]:
    return [r.path for r in upstream.requests]


def expected_path(provider: str) -> str:
    return "/v1/responses" if MODES[provider] == "native" else "/v1/chat/completions"


def test_create(sdk: openai.OpenAI, provider: str, upstream: OpenAICompatUpstream) -> None:
    reply = sdk.responses.create(
        model=CHAT_MODEL[provider], input="hello brave new world", instructions="Be kind."
    )
    assert reply.object == "response"
    assert reply.status == "completed"
    assert reply.output_text == "hello brave new world"
    assert reply.instructions == "Be kind."
    assert reply.usage is not None
    assert reply.usage.output_tokens == 4
    assert upstream_paths(upstream) == [expected_path(provider)]


def test_stream_helper_follows_every_event(
    sdk: openai.OpenAI, provider: str, upstream: OpenAICompatUpstream
) -> None:
    with sdk.responses.stream(model=CHAT_MODEL[provider], input="one two three four") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text == "one two three four"
    assert upstream_paths(upstream) == [expected_path(provider)]
    if MODES[provider] == "translate":
        sent = upstream.requests[0].json
        assert sent["stream"] is True
        assert sent["stream_options"] == {"include_usage": True}


def test_stream_through_a_llama_cpp_style_upstream(
    gateway: Any, custom_upstream: OpenAICompatUpstream
) -> None:
    """The upstream leaves out sequence numbers and indices; the SDK still follows the stream."""
    custom_upstream.responses.deviant = True
    try:
        with openai.OpenAI(
            base_url=f"{gateway.url}/custom/v1", api_key=GATEWAY_KEY, max_retries=0
        ) as client:
            with client.responses.stream(model="gpt-test", input="a b c") as stream:
                numbers = [event.sequence_number for event in stream]
                final = stream.get_final_response()
            plain = client.responses.create(model="gpt-test", input="d e")
    finally:
        custom_upstream.responses.deviant = False
    assert numbers == list(range(len(numbers)))
    assert final.output_text == "a b c"
    assert plain.output_text == "d e"
    assert plain.tools == []


class Weather(BaseModel):
    city: str
    celsius: int


def test_parse_with_a_pydantic_model(sdk: openai.OpenAI, provider: str) -> None:
    prompt = '{"city": "Paris", "celsius": 18}'
    reply = sdk.responses.parse(model=CHAT_MODEL[provider], input=prompt, text_format=Weather)
    assert reply.output_parsed == Weather(city="Paris", celsius=18)


def test_function_call_round_trip(
    sdk: openai.OpenAI, provider: str, upstream: OpenAICompatUpstream
) -> None:
    model = CHAT_MODEL[provider]
    first = sdk.responses.create(model=model, input="weather in Paris", tools=[WEATHER])  # type: ignore[list-item]
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"input": "weather in Paris"}
    history: list[Any] = [
        {"role": "user", "content": "weather in Paris"},
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees"},
    ]
    second = sdk.responses.create(model=model, input=history, tools=[WEATHER])  # type: ignore[list-item]
    assert second.output_text == "18 degrees"
    if MODES[provider] == "translate":
        sent = upstream.requests[1].json
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert sent["messages"][2] == {
            "role": "tool",
            "tool_call_id": call.call_id,
            "content": "18 degrees",
        }


def test_function_call_stream(sdk: openai.OpenAI, provider: str) -> None:
    with sdk.responses.stream(
        model=CHAT_MODEL[provider],
        input="weather in Rome",
        tools=[WEATHER],  # type: ignore[list-item]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    [call] = [item for item in final.output if item.type == "function_call"]
    assert json.loads(call.arguments) == {"input": "weather in Rome"}


def test_length_cut_is_incomplete(sdk: openai.OpenAI, provider: str) -> None:
    reply = sdk.responses.create(
        model=CHAT_MODEL[provider], input="one two three four five", max_output_tokens=16
    )
    assert reply.status == "completed"  # sixteen words are enough
    cut = sdk.responses.create(
        model=CHAT_MODEL[provider],
        input=" ".join(f"w{i}" for i in range(40)),
        max_output_tokens=16,
    )
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
