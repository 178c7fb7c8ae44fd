"""CreateResponse → chat completion request (translate mode), field by field."""

from __future__ import annotations

from typing import Any

import pytest

from oai_gateway.errors import InvalidRequestError, UnsupportedParameterError
from oai_gateway.wire.responses.request import check, translate

Json = dict[str, Any]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather by city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def chat(**body: Any) -> Json:
    return translate({"model": "m", "input": "Hi", **body}).chat


def test_a_string_input_with_instructions_becomes_system_and_user_messages() -> None:
    assert chat(instructions="Be brief.") == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    }


def test_message_items_of_every_role_and_content_form() -> None:
    items = [
        {"role": "developer", "content": "Rules."},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is "},
                {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
            ],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "A cat.", "annotations": []},
            ],
        },
        {"role": "user", "content": [{"type": "input_text", "text": "Sure?"}]},
    ]
    assert chat(input=items)["messages"] == [
        {"role": "system", "content": "Rules."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is "},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
                },
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Sure?"},
    ]


def test_function_calls_and_outputs_become_tool_calls_and_tool_messages() -> None:
    items = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "x"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Looking."}],
        },
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {
            "type": "function_call",
            "call_id": "c2",
            "name": "get_weather",
            "arguments": '{"city":"Rome"}',
        },
        {"type": "function_call_output", "call_id": "c1", "output": "18C"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "21C"}],
        },
        {"type": "function_call", "call_id": "c3", "name": "get_weather", "arguments": "{}"},
    ]
    messages = chat(input=items)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "Looking.",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "c2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
            },
        ],
    }
    assert messages[2:4] == [
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "tool", "tool_call_id": "c2", "content": "21C"},
    ]
    assert messages[4]["content"] is None
    assert messages[4]["tool_calls"][0]["id"] == "c3"
    assert len(messages) == 5  # the reasoning item left no trace


def test_generation_settings_map_to_their_chat_names() -> None:
    body = chat(
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=64,
        temperature=0.3,
        top_p=0.9,
        parallel_tool_calls=False,
        reasoning={"effort": "low", "summary": "auto"},
        user="u1",
        top_logprobs=2,
        text={
            "format": {
                "type": "json_schema",
                "name": "w",
                "schema": {"type": "object"},
                "strict": True,
            },
            "verbosity": "low",
        },
    )
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather by city",
                "parameters": WEATHER["parameters"],
                "strict": True,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["max_tokens"] == 64
    assert body["reasoning_effort"] == "low"
    assert (body["temperature"], body["top_p"], body["parallel_tool_calls"]) == (0.3, 0.9, False)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    assert body["verbosity"] == "low"
    assert body["user"] == "u1"
    assert (body["logprobs"], body["top_logprobs"]) == (True, 2)
    assert chat(text={"format": {"type": "json_object"}})["response_format"] == {
        "type": "json_object"
    }
    assert "response_format" not in chat(text={"format": {"type": "text"}})


def test_a_stream_asks_the_upstream_for_usage() -> None:
    translated = translate({"model": "m", "input": "Hi", "stream": True})
    assert translated.stream
    assert translated.chat["stream"] is True
    assert translated.chat["stream_options"] == {"include_usage": True}


def test_stateless_settings_are_accepted_and_ignored_and_unknown_fields_pass() -> None:
    body = chat(
        store=False,
        include=["reasoning.encrypted_content"],
        prompt_cache_key="k",
        client_metadata={"a": "b"},
        metadata={"m": "1"},
        truncation="disabled",
        service_tier="auto",
        top_k=5,
    )
    assert body == {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "top_k": 5}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("previous_response_id", "resp_1"),
        ("conversation", "conv_1"),
        ("prompt", {"id": "pmpt_1"}),
        ("background", True),
        ("truncation", "auto"),
    ],
)
def test_stateful_features_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(UnsupportedParameterError) as caught:
        chat(**{field: value})
    assert caught.value.param == field
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.http_status == 400


BUILT_IN = [
    {"type": "web_search", "external_web_access": False},
    {"type": "namespace", "name": "multi_agent_v1", "description": "x", "tools": []},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "code_interpreter", "container": {"type": "auto"}},
    {"type": "mcp", "server_label": "x"},
    {"type": "image_generation"},
    {"type": "computer_use_preview"},
]


@pytest.mark.parametrize("tool", BUILT_IN, ids=lambda t: t["type"])
def test_built_in_tools_are_refused_naming_tools(tool: Json) -> None:
    with pytest.raises(UnsupportedParameterError) as caught:
        chat(tools=[WEATHER, tool])
    assert caught.value.param == "tools"
    assert tool["type"] in caught.value.message


def test_built_in_tools_are_dropped_when_the_provider_says_so() -> None:
    body = translate(
        {
            "model": "m",
            "input": "Hi",
            "tools": [*BUILT_IN, WEATHER],
            "tool_choice": {"type": "web_search"},
        },
        drop_unsupported=True,
    ).chat
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]
    assert "tool_choice" not in body
    only_built_in = translate(
        {"model": "m", "input": "Hi", "tools": BUILT_IN}, drop_unsupported=True
    )
    assert "tools" not in only_built_in.chat


@pytest.mark.parametrize(
    "item",
    [
        {"type": "item_reference", "id": "msg_1"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
        {"role": "system", "content": [{"type": "input_image", "image_url": "x"}]},
        {
            "type": "function_call_output",
            "call_id": "c",
            "output": [{"type": "input_image", "image_url": "x"}],
        },
    ],
)
def test_input_items_without_a_chat_form_are_refused_naming_input(item: Json) -> None:
    with pytest.raises(UnsupportedParameterError) as caught:
        chat(input=[item])
    assert caught.value.param == "input"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "", "input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": "x", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "x", "tools": {}}, "tools"),
        ({"model": "m", "input": "x", "max_output_tokens": True}, "max_output_tokens"),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "temperature": "hot"}, "temperature"),
        ({"model": "m", "input": "x", "instructions": ["a"]}, "instructions"),
        ({"model": "m", "input": "x", "temperature": 2.5}, "temperature"),
        ({"model": "m", "input": "x", "top_logprobs": 21}, "top_logprobs"),
        ({"model": "m", "input": "x", "truncation": "sometimes"}, "truncation"),
        ({"model": "m", "input": "x", "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"model": "m", "input": ["not an item"]}, "input"),
        ({"model": "m", "input": "x", "include": [1]}, "include"),
    ],
)
def test_fields_the_gateway_relies_on_are_checked(body: Json, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check(body)
    assert caught.value.param == param
    assert caught.value.http_status == 400


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": [1]}, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input"),
        ({"input": [{"role": "user", "content": 5}]}, "input"),
        ({"input": [{"type": "function_call", "call_id": "c"}]}, "input"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice"),
        ({"text": {"format": {"type": "xml"}}}, "text"),
    ],
)
def test_malformed_items_are_invalid_requests(body: Json, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        translate({"model": "m", "input": "Hi", **body})
    assert caught.value.param == param
    assert not isinstance(caught.value, UnsupportedParameterError)


def test_check_says_whether_a_stream_is_asked_for() -> None:
    assert check({"model": "m", "input": "x", "stream": True}) is True
    assert check({"model": "m", "input": [], "stream": False}) is False
