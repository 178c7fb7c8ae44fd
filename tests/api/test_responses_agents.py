"""The OpenAI Agents SDK's default model (the Responses API) running a function-tool turn
through the gateway, in both modes."""

from __future__ import annotations

import asyncio

import pytest
from agents import (
    Agent,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tests.conftest import CHAT_MODEL, GATEWAY_KEY
from tests.support.fake_upstreams import OpenAICompatUpstream
from tests.support.gateway import GatewayServer

calls: list[str] = []


@function_tool
def get_weather(input: str) -> str:
    """The current weather for what the user asked."""
    calls.append(input)
    return "sunny and 18 degrees"


@pytest.fixture(autouse=True)
def _agents_sdk_without_tracing() -> None:
    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    set_default_openai_api("responses")
    calls.clear()


@pytest.mark.parametrize("provider", ["custom", "cerebras"])
def test_agent_runs_a_function_tool_turn(
    gateway: GatewayServer, provider: str, custom_upstream: OpenAICompatUpstream
) -> None:
    client = AsyncOpenAI(
        base_url=f"{gateway.url}/{provider}/v1", api_key=GATEWAY_KEY, max_retries=0
    )
    set_default_openai_client(client, use_for_tracing=False)
    agent = Agent(
        name="weather",
        instructions="Use the tool.",
        model=CHAT_MODEL[provider],
        tools=[get_weather],
    )

    async def run() -> str:
        try:
            result = await Runner.run(agent, "weather in Paris", max_turns=3)
            return str(result.final_output)
        finally:
            await client.close()

    final = asyncio.run(asyncio.wait_for(run(), 30))
    assert calls == ["weather in Paris"]  # the fake model passes the prompt as the argument
    assert final == "sunny and 18 degrees"  # and answers with the tool's output
