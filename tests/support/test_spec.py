"""The spec checker itself must catch broken responses, or a green suite proves nothing."""

from __future__ import annotations

import asyncio
import threading

import httpx
import orjson

from oai_gateway.server.asgi import Receive, Scope, Send
from tests.support.gateway import LoopbackServer
from tests.support.spec import (
    SpecCheckingApp,
    begin_test,
    check_response,
    problems,
    take_violations,
)

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


LINGER_S = 0.03  # work the app does after its last byte, as the gateway's logging and metrics do
NOT_A_MODEL_LIST = b'{"object": "list"}'  # ListModelsResponse requires `data`


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class BrokenModelList:
    """Answers every request with a model list that breaks the spec, in one or two parts.

    `hold` keeps the second part back until a test releases it; `done` says it has been sent.
    """

    def __init__(self, *, in_two_parts: bool = False) -> None:
        self.in_two_parts = in_two_parts
        self.hold = threading.Event()
        self.done = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.in_two_parts:
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            await asyncio.to_thread(self.hold.wait, 5)
        await send({"type": "http.response.body", "body": NOT_A_MODEL_LIST})
        self.done.set()
        await asyncio.sleep(LINGER_S)


def test_a_violation_in_the_last_response_is_recorded_before_the_client_has_read_it() -> None:
    """The check used to run after the app returned: work after the last byte hid violations."""
    with (
        LoopbackServer(SpecCheckingApp(BrokenModelList())) as server,
        httpx.Client(base_url=server.url, timeout=5) as http,
    ):
        lost = 0
        for _ in range(9):
            assert http.get("/p/v1/models").content == NOT_A_MODEL_LIST
            found = take_violations()
            lost += not found
            assert all("ListModelsResponse" in v for v in found), found
    assert lost == 0, f"{lost} of 9 violations were not recorded when the response arrived"


def test_a_response_that_outlives_its_test_is_not_blamed_on_the_next_one() -> None:
    app = BrokenModelList(in_two_parts=True)
    with (
        LoopbackServer(SpecCheckingApp(app)) as server,
        httpx.Client(base_url=server.url, timeout=5) as http,
        http.stream("GET", "/p/v1/models") as response,
    ):
        assert response.status_code == 200
        begin_test()  # the test that sent the request has ended; another one begins
        app.hold.set()
        assert response.read() == NOT_A_MODEL_LIST
        assert app.done.wait(5)
        assert take_violations() == []
