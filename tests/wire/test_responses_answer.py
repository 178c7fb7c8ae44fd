"""A chat completion → a `Response` (translate mode, not streamed)."""

from __future__ import annotations

from typing import Any

import pytest

from oai_gateway.errors import UpstreamError
from oai_gateway.wire.responses.answer import response
from oai_gateway.wire.responses.objects import echoed_fields
from tests.wire.responses_spec import response_problems

Json = dict[str, Any]
USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 7,
    "total_tokens": 27,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 3},
}


def completion(message: Json, finish: str = "stop", **extra: Any) -> Json:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "llama-3.1-8b",
        "usage": USAGE,
        **extra,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
    }


def answer(chat: Json, request: Json | None = None) -> Json:
    out = response(chat, echoed=echoed_fields(request or {}), model="asked-for")
    assert response_problems(out) == []
    return out


def test_text_answer() -> None:
    out = answer(completion({"content": "Hello."}), {"instructions": "Be kind.", "top_p": 0.5})
    assert out["object"] == "response"
    assert out["id"].startswith("resp_")
    assert out["status"] == "completed"
    assert out["model"] == "llama-3.1-8b"
    assert out["created_at"] == 1700000000
    assert isinstance(out["completed_at"], int)
    assert out["store"] is False
    assert out["instructions"] == "Be kind."
    assert out["top_p"] == 0.5
    [message] = out["output"]
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["status"] == "completed"
    assert message["id"].startswith("msg_")
    assert message["content"] == [
        {"type": "output_text", "text": "Hello.", "annotations": [], "logprobs": []}
    ]
    assert out["usage"] == {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 27,
    }


def test_tool_calls_become_function_call_items_after_the_text() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    out = answer(completion({"content": "Let me check.", "tool_calls": calls}, "tool_calls"))
    kinds = [(o["type"], o.get("call_id"), o.get("name")) for o in out["output"]]
    assert kinds == [
        ("message", None, None),
        ("function_call", "call_1", "f"),
        ("function_call", "call_2", "g"),
    ]
    assert out["output"][1]["arguments"] == '{"a":1}'
    assert out["output"][1]["id"].startswith("fc_")


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_becomes_a_reasoning_item_first(key: str) -> None:
    out = answer(completion({"content": "42", key: "Six times seven."}))
    reasoning, message = out["output"]
    assert reasoning["type"] == "reasoning"
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Six times seven."}]
    assert message["content"][0]["text"] == "42"


def test_a_length_cut_is_incomplete() -> None:
    out = answer(completion({"content": "Once"}, "length"), {"max_output_tokens": 1})
    assert out["status"] == "incomplete"
    assert out["completed_at"] is None
    assert out["incomplete_details"] == {"reason": "max_output_tokens"}
    assert out["output"][0]["status"] == "incomplete"
    assert out["max_output_tokens"] == 1


def test_a_refusal_is_a_refusal_part() -> None:
    out = answer(completion({"content": None, "refusal": "I can't."}))
    assert out["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't."}]


def test_an_empty_answer_has_no_output_and_missing_usage_is_left_out() -> None:
    chat = completion({"content": ""})
    del chat["usage"]
    out = answer(chat)
    assert out["output"] == []
    assert "usage" not in out


@pytest.mark.parametrize(
    "chat",
    [
        {"choices": []},
        {"choices": [{"index": 0}]},
        completion({"tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}),
    ],
)
def test_an_answer_without_a_usable_message_is_an_upstream_error(chat: Json) -> None:
    with pytest.raises(UpstreamError):
        response(chat, echoed={}, model="m")
