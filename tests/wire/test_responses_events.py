"""The translated stream (chat chunks → Responses events), event by event."""

from __future__ import annotations

from typing import Any, cast

import pytest
from openai import omit
from openai._models import construct_type_unchecked
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from oai_gateway.wire.responses.events import ChatStreamTranslator
from oai_gateway.wire.responses.framing import frame
from oai_gateway.wire.responses.objects import echoed_fields
from tests.wire.responses_spec import event_problems

Json = dict[str, Any]
MODEL = "llama-3.1-8b"


def chunk(delta: Json | None = None, finish: str | None = None, **extra: Any) -> Json:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": choices,
        **extra,
    }


USAGE = chunk(usage={"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16})


def run(chunks: list[Json], *, request: Json | None = None) -> list[Json]:
    """Every event of one translated stream, each checked against OpenAI's schema."""
    translator = ChatStreamTranslator(model=MODEL, echoed=echoed_fields(request or {}))
    events = translator.start()
    for item in chunks:
        events.extend(translator.chunk(item))
    events.extend(translator.finish())
    check(events)
    return events


def check(events: list[Json]) -> None:
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        assert event_problems(event) == []
        assert frame(event).startswith(f"event: {event['type']}\ndata: ".encode())


def sdk_final(events: list[Json]) -> Any:
    """What openai-python's `responses.stream()` accumulates from these events."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        state.handle_event(
            construct_type_unchecked(type_=cast(Any, ResponseStreamEvent), value=event)
        )
    return state._completed_response


def types(events: list[Json]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def test_text_stream_is_openai_event_order() -> None:
    events = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            USAGE,
        ]
    )
    assert types(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    created = events[0]["response"]
    assert created["status"] == "in_progress"
    assert created["output"] == []
    assert created["model"] == MODEL
    assert created["id"].startswith("resp_")
    added = events[2]
    assert added["output_index"] == 0
    assert added["item"]["type"] == "message"
    assert added["item"]["status"] == "in_progress"
    item_id = added["item"]["id"]
    assert item_id.startswith("msg_")
    assert [e["delta"] for e in events[4:6]] == ["Hel", "lo"]
    assert {e["item_id"] for e in events[3:8]} == {item_id}
    assert events[8]["item"]["id"] == item_id
    assert events[6]["text"] == "Hello"
    assert events[7]["part"]["text"] == "Hello"
    final = events[-1]["response"]
    assert final["id"] == created["id"]
    assert final["status"] == "completed"
    assert final["store"] is False
    assert final["incomplete_details"] is None
    assert final["output"] == [events[8]["item"]]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["input_tokens"] == 11
    assert final["usage"]["output_tokens"] == 5
    assert final["usage"]["total_tokens"] == 16
    assert sdk_final(events).output_text == "Hello"


def tool_fragment(
    index: int, *, call_id: str | None = None, name: str | None = None, arguments: str = ""
) -> Json:
    function: Json = {"arguments": arguments}
    fragment: Json = {"index": index, "function": function}
    if call_id is not None:
        fragment.update(id=call_id, type="function")
        function["name"] = name
    return fragment


def test_several_tool_calls_stream_one_after_the_other_with_argument_deltas() -> None:
    events = run(
        [
            chunk({"role": "assistant", "content": None}),
            chunk({"tool_calls": [tool_fragment(0, call_id="call_a", name="get_weather")]}),
            chunk({"tool_calls": [tool_fragment(0, arguments='{"city":')]}),
            chunk({"tool_calls": [tool_fragment(0, arguments='"Paris"}')]}),
            chunk(
                {
                    "tool_calls": [
                        tool_fragment(1, call_id="call_b", name="get_time", arguments='{"tz":')
                    ]
                }
            ),
            chunk({"tool_calls": [tool_fragment(1, arguments='"CET"}')]}),
            chunk({}, "tool_calls"),
            USAGE,
        ]
    )
    assert types(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "completed",
    ]
    first, second = events[2]["item"], events[7]["item"]
    assert (first["call_id"], first["name"], first["arguments"]) == ("call_a", "get_weather", "")
    assert (events[2]["output_index"], events[7]["output_index"]) == (0, 1)
    assert events[5]["arguments"] == '{"city":"Paris"}'
    assert events[5]["name"] == "get_weather"
    assert events[10]["arguments"] == '{"tz":"CET"}'
    assert events[10]["item_id"] == second["id"]
    output = events[-1]["response"]["output"]
    assert [(o["type"], o["call_id"], o["arguments"]) for o in output] == [
        ("function_call", "call_a", '{"city":"Paris"}'),
        ("function_call", "call_b", '{"tz":"CET"}'),
    ]
    calls = sdk_final(events).output
    assert [c.arguments for c in calls] == ['{"city":"Paris"}', '{"tz":"CET"}']


def test_text_then_a_tool_call_are_two_items() -> None:
    events = run(
        [
            chunk({"content": "Let me look."}),
            chunk({"tool_calls": [tool_fragment(0, call_id="call_a", name="f", arguments="{}")]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert types(events)[2:] == [
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "completed",
    ]
    assert [o["type"] for o in events[-1]["response"]["output"]] == ["message", "function_call"]
    assert "usage" not in events[-1]["response"]  # the upstream reported none


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_deltas_become_a_reasoning_item_before_the_message(key: str) -> None:
    events = run(
        [
            chunk({"role": "assistant", key: "Think"}),
            chunk({key: "ing."}),
            chunk({"content": "Answer"}),
            chunk({}, "stop"),
        ]
    )
    assert types(events)[2:] == [
        "output_item.added",
        "content_part.added",
        "reasoning_text.delta",
        "reasoning_text.delta",
        "reasoning_text.done",
        "content_part.done",
        "output_item.done",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["type"] == "reasoning"
    assert reasoning["id"].startswith("rs_")
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Thinking."}]
    assert message["content"][0]["text"] == "Answer"  # no reasoning leaks into the text
    assert sdk_final(events).output_text == "Answer"


def test_length_cut_ends_with_response_incomplete() -> None:
    events = run(
        [chunk({"content": "Once upon"}), chunk({}, "length"), USAGE],
        request={"max_output_tokens": 2},
    )
    assert types(events)[-2:] == ["output_item.done", "incomplete"]
    assert events[-2]["item"]["status"] == "incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["max_output_tokens"] == 2


@pytest.mark.parametrize("code", ["server_error", "rate_limit_exceeded"])
def test_failure_mid_stream_ends_with_response_failed(code: str) -> None:
    translator = ChatStreamTranslator(model=MODEL, echoed=echoed_fields({}))
    events = translator.start() + translator.chunk(chunk({"content": "Par"}))
    events += translator.fail(code, "The upstream stopped answering.")
    check(events)
    assert types(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "failed",
    ]
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": code, "message": "The upstream stopped answering."}
    assert failed["output"][0]["status"] == "incomplete"


def test_request_settings_are_echoed_in_every_response_object() -> None:
    tool: Json = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    request: Json = {
        "instructions": "Be brief.",
        "temperature": 0.2,
        "metadata": {"k": "v"},
        "tools": [tool],
        "reasoning": {"effort": "low", "summary": "auto"},
    }
    events = run([chunk({"content": "ok"}, "stop")], request=request)
    for response in (events[0]["response"], events[-1]["response"]):
        assert response["instructions"] == "Be brief."
        assert response["temperature"] == 0.2
        assert response["metadata"] == {"k": "v"}
        assert response["tools"] == [{**tool, "strict": None, "description": None}]
        assert response["reasoning"] == {"effort": "low", "summary": "auto"}


def test_a_late_fragment_of_a_finished_call_still_reaches_the_final_response() -> None:
    events = run(
        [
            chunk({"tool_calls": [tool_fragment(0, call_id="a", name="f", arguments="{")]}),
            chunk({"tool_calls": [tool_fragment(1, call_id="b", name="g", arguments="{}")]}),
            chunk({"tool_calls": [tool_fragment(0, arguments="}")]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert [o["arguments"] for o in events[-1]["response"]["output"]] == ["{}", "{}"]
