"""The spec checker itself must catch broken responses, or a green suite proves nothing."""

from __future__ import annotations

import orjson

from tests.spec import check_response, problems

GOOD_CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
}


def test_a_valid_chat_completion_passes() -> None:
    assert problems("CreateChatCompletionResponse", GOOD_CHAT) == []


def test_a_broken_field_is_caught() -> None:
    broken = {**GOOD_CHAT, "created": "yesterday"}
    assert problems("CreateChatCompletionResponse", broken)
    missing = {k: v for k, v in GOOD_CHAT.items() if k != "choices"}
    assert problems("CreateChatCompletionResponse", missing)


def test_a_missing_required_message_field_is_caught() -> None:
    choices: list[dict[str, object]] = GOOD_CHAT["choices"]  # type: ignore[assignment]
    choice = {**choices[0], "message": {"role": "assistant", "content": "x"}}
    assert problems("CreateChatCompletionResponse", {**GOOD_CHAT, "choices": [choice]})


def test_stream_chunks_are_checked_one_by_one() -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
    }
    good = b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
    path = "/p/v1/chat/completions"
    assert check_response(path, 200, "text/event-stream", good) == []
    bad_chunk = {**chunk, "choices": [{"index": 0, "delta": {"content": "x"}}]}
    bad = b"data: " + orjson.dumps(bad_chunk) + b"\n\ndata: [DONE]\n\n"
    assert check_response(path, 200, "text/event-stream", bad)
    assert check_response(path, 200, "text/event-stream", b"event: x\ndata: {}\n\n")


def test_errors_must_be_in_the_envelope() -> None:
    path = "/p/v1/models"
    good = orjson.dumps({"error": {"message": "m", "type": "t", "param": None, "code": None}})
    assert check_response(path, 404, "application/json", good) == []
    assert check_response(path, 404, "application/json", b'{"detail": "nope"}')


def test_base64_embeddings_are_checked_as_floats() -> None:
    body = {
        "object": "list",
        "model": "m",
        "data": [{"object": "embedding", "index": 0, "embedding": "AACAPw=="}],
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    assert check_response("/p/v1/embeddings", 200, "application/json", orjson.dumps(body)) == []
    body["data"][0]["embedding"] = "AACA"  # type: ignore[index]
    assert check_response("/p/v1/embeddings", 200, "application/json", orjson.dumps(body))
