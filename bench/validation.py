"""Cost of request validation: the parse step's check of a body against OpenAI's schema.

    uv run python bench/validation.py [--rounds 5] [--number 20000]

Times, per realistic body, the schema check alone (`request_schema.check`) and the whole step the
router runs after reading a body (`requests.parse_object` + the endpoint's `*_request`), in
microseconds per request: the median of `--rounds` rounds of `--number` calls each. Prints a
Markdown table. In-process only: no sockets, no upstream.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec
import orjson

from oai_gateway.wire import request_schema, requests

Json = dict[str, Any]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
AGENT_TURN: list[Json] = [
    {"role": "user", "content": "What's the weather in Paris and in Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
            for i in range(2)
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 25}'},
    {"role": "assistant", "content": "Paris is 21 °C, Rome 25 °C."},
]
BODIES: list[tuple[str, str, Json]] = [
    (
        "chat, one user message",
        "chat",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]},
    ),
    (
        "chat, SDK defaults + stream",
        "chat",
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello."},
            ],
            "temperature": 0.7,
            "max_tokens": 256,
            "stop": None,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    (
        "chat, agent: 2 tools, 11 messages",
        "chat",
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "You help with weather."}] + AGENT_TURN * 2,
            "tools": [WEATHER_TOOL, {**WEATHER_TOOL, "function": {"name": "get_time"}}],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "temperature": 0,
        },
    ),
    (
        "chat, image part",
        "chat",
        {
            "model": "gpt-4o-mini",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                }
            ],
        },
    ),
    ("completion", "completions", {"model": "m", "prompt": "Once upon", "max_tokens": 16}),
    ("embeddings, 16 inputs", "embeddings", {"model": "m", "input": ["some text"] * 16}),
]
SCHEMAS: dict[str, type[msgspec.Struct]] = {
    "chat": request_schema.ChatCompletionRequest,
    "completions": request_schema.CompletionRequest,
    "embeddings": request_schema.EmbeddingRequest,
}
STEPS: dict[str, Callable[[Json], requests.RequestFacts]] = {
    "chat": requests.chat_request,
    "completions": requests.completion_request,
    "embeddings": requests.embeddings_request,
}


def parse_step(step: Callable[[Json], requests.RequestFacts], raw: bytes) -> None:
    step(requests.parse_object(raw))


def per_call_us(work: Callable[[], object], rounds: int, number: int) -> float:
    times = timeit.repeat(work, number=number, repeat=rounds)
    return statistics.median(times) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    print("| body | bytes | schema check (µs) | parse + check + facts (µs) |")
    print("| --- | ---: | ---: | ---: |")
    for name, endpoint, body in BODIES:
        raw = orjson.dumps(body)
        schema, step = SCHEMAS[endpoint], STEPS[endpoint]
        step(requests.parse_object(raw))  # valid, or the figures would time the error path
        checked = per_call_us(partial(request_schema.check, body, schema), args.rounds, args.number)
        whole = per_call_us(partial(parse_step, step, raw), args.rounds, args.number)
        print(f"| {name} | {len(raw)} | {checked:.2f} | {whole:.2f} |")


if __name__ == "__main__":
    main()
