"""Any upstream JSON gives a valid answer or an upstream error (502), never anything else.

The normalisers are fed answer-shaped objects in which every field the gateway reads is either
well-formed or any JSON at all; whatever they return must validate against OpenAI's schema, and
the only exceptions allowed are the ones the gateway maps to 502. More examples:
`NORMALIZE_FUZZ_EXAMPLES=2000 uv run pytest tests/wire/test_normalize_fuzz.py`.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oai_gateway.errors import UpstreamError
from oai_gateway.wire.normalize import chat
from oai_gateway.wire.normalize.chat import CHAT_CHUNKS, chat_completion
from oai_gateway.wire.normalize.embeddings import decode_base64, embeddings
from oai_gateway.wire.normalize.models import model_object
from oai_gateway.wire.normalize.stream import ChunkNormalizer, UpstreamStreamError
from oai_gateway.wire.normalize.text import TEXT_CHUNKS, text_completion
from tests.support.fake_upstreams import Fault, OpenAICompatUpstream
from tests.support.spec import problems

EXAMPLES = int(os.environ.get("NORMALIZE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
anything = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field that is well-formed most of the time and any JSON the rest."""
    return st.one_of(good, good, anything)


def shaped(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: maybe(v) for k, v in fields.items()})


counts = st.integers(0, 10_000)
usage = shaped(
    prompt_tokens=counts,
    completion_tokens=counts,
    total_tokens=counts,
    prompt_tokens_details=shaped(cached_tokens=counts),
    completion_tokens_details=shaped(reasoning_tokens=counts),
)
token_logprob = shaped(
    token=st.text(max_size=4),
    logprob=st.floats(-100, 0),
    bytes=st.lists(st.integers(0, 255), max_size=3) | st.none(),
    top_logprobs=st.lists(
        shaped(token=st.text(max_size=4), logprob=st.floats(-100, 0), bytes=st.none()),
        max_size=2,
    ),
)
chat_logprobs = st.none() | shaped(
    content=st.lists(token_logprob, max_size=2) | st.none(),
    refusal=st.none(),
)
function = shaped(name=st.text(max_size=6), arguments=st.text(max_size=10))
tool_call = shaped(
    id=st.text(max_size=6), type=st.just("function"), function=function, index=st.integers(0, 3)
)
finish = st.sampled_from(["stop", "length", "tool_calls", "content_filter", "function_call"])
message = shaped(
    role=st.just("assistant"),
    content=st.text(max_size=10) | st.none(),
    refusal=st.text(max_size=5) | st.none(),
    tool_calls=st.lists(tool_call, max_size=2),
)
delta = shaped(
    role=st.just("assistant"),
    content=st.text(max_size=10) | st.none(),
    refusal=st.none(),
    tool_calls=st.lists(tool_call, max_size=2),
)
envelope = {
    "id": st.text(max_size=8),
    "object": st.text(max_size=8),
    "created": st.integers(0, 2**31),
    "model": st.text(max_size=8),
    "usage": usage,
    "system_fingerprint": st.text(max_size=5),
    "service_tier": st.sampled_from(["auto", "default", "flex"]),
}
chat_answer = shaped(
    choices=st.lists(
        shaped(
            index=st.integers(0, 3), message=message, finish_reason=finish, logprobs=chat_logprobs
        ),
        max_size=3,
    ),
    **envelope,
)
text_answer = shaped(
    choices=st.lists(
        shaped(
            index=st.integers(0, 3),
            text=st.text(max_size=10),
            finish_reason=finish,
            logprobs=st.none() | chat_logprobs,
        ),
        max_size=3,
    ),
    **envelope,
)
chunk = shaped(
    choices=st.lists(
        shaped(
            index=st.integers(0, 3),
            delta=delta,
            finish_reason=finish | st.none(),
            text=st.text(max_size=5),
        ),
        max_size=2,
    ),
    **envelope,
)
vector = st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=4) | st.lists(
    st.floats(allow_nan=False, allow_infinity=False), max_size=2
)
embedding_answer = shaped(
    object=st.just("list"),
    model=st.text(max_size=8),
    data=st.lists(
        shaped(
            object=st.just("embedding"),
            index=st.integers(0, 3),
            embedding=vector | st.just("AACAPw=="),
        ),
        min_size=1,
        max_size=3,
    ),
    usage=usage,
)


def valid_or_upstream_error(schema: str, produce: Any) -> None:
    try:
        answer = produce()
    except UpstreamError:
        return
    assert problems(schema, answer) == [], answer


@FUZZ
@given(chat_answer)
def test_chat_answers(answer: dict[str, Any]) -> None:
    valid_or_upstream_error(
        "CreateChatCompletionResponse", lambda: chat_completion(answer, model="m")
    )


@FUZZ
@given(text_answer)
def test_completion_answers(answer: dict[str, Any]) -> None:
    valid_or_upstream_error("CreateCompletionResponse", lambda: text_completion(answer, model="m"))


@FUZZ
@given(st.lists(chunk, min_size=1, max_size=4), st.booleans(), st.booleans())
def test_stream_chunks(chunks: list[dict[str, Any]], chat: bool, include_usage: bool) -> None:
    normalizer = ChunkNormalizer(
        CHAT_CHUNKS if chat else TEXT_CHUNKS, model="m", include_usage=include_usage
    )
    schema = "CreateChatCompletionStreamResponse" if chat else "CreateCompletionResponse"
    try:
        shaped_chunks = [normalizer.chunk(c) for c in chunks]
        shaped_chunks.append(normalizer.usage_chunk())
    except (UpstreamError, UpstreamStreamError):
        return
    for out in shaped_chunks:
        if out is None:
            continue
        if not chat:
            for choice in out["choices"]:
                choice["finish_reason"] = choice["finish_reason"] or "stop"
        assert problems(schema, out) == [], out


@FUZZ
@given(embedding_answer, st.sampled_from(["float", "base64"]), st.integers(1, 3))
def test_embedding_answers(answer: dict[str, Any], encoding: str, count: int) -> None:
    def produce() -> Any:
        out = embeddings(answer, model="m", count=count, encoding=encoding)
        for item in out["data"]:
            if isinstance(item["embedding"], str):
                item["embedding"] = decode_base64(item["embedding"])
        return out

    valid_or_upstream_error("CreateEmbeddingResponse", produce)


@FUZZ
@given(
    anything | shaped(id=st.text(max_size=5), created=st.integers(), owned_by=st.text(max_size=5))
)
def test_model_entries(entry: Any) -> None:
    found = model_object(entry, owner="p")
    if found is not None:
        assert problems("Model", found) == [], found


@pytest.mark.parametrize("value", [None, {}, "x", 1, {"choices": "x"}, {"choices": [1]}])
def test_hopeless_answers_are_upstream_errors(value: Any) -> None:
    with pytest.raises(UpstreamError):
        chat_completion(value if isinstance(value, dict) else {"choices": value}, model="m")


@settings(
    max_examples=max(EXAMPLES // 5, 20),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answer=chat_answer | text_answer, chat=st.booleans())
def test_through_the_gateway_an_upstream_answer_is_200_or_502(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream, answer: Any, chat: bool
) -> None:
    # Every 200 is also checked against OpenAI's schema by the suite's autouse fixture.
    custom_upstream.fault = Fault(kind="status", status=200, body=orjson.dumps(answer))
    if chat:
        body: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}
        response = client.post("/custom/v1/chat/completions", json=body)
    else:
        response = client.post("/custom/v1/completions", json={"model": "gpt-test", "prompt": "x"})
    assert response.status_code in (200, 502), response.text
    if response.status_code == 502:
        assert response.json()["error"]["code"] == "upstream_error"


# Answers mostly in OpenAI's plain shape, which the normaliser's no-repair path takes: each
# field is well-formed most of the time and an odd value (or absent) the rest.
odd: st.SearchStrategy[Any] = st.sampled_from(
    [None, True, 1, 2**70, 1.5, "", "x", [], {}, {"a": 1}]
)


def mostly(
    required: dict[str, st.SearchStrategy[Any]], **optional: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    def usually(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.integers(0, 19).flatmap(lambda n: odd if n == 0 else good)

    return st.fixed_dictionaries(
        {k: usually(v) for k, v in required.items()},
        optional={k: usually(v) for k, v in optional.items()},
    )


plain_message = mostly(
    {"role": st.just("assistant")},
    content=st.text(max_size=10) | st.none(),
    refusal=st.none() | st.text(max_size=3),
)
plain_choice = mostly(
    {"index": st.integers(0, 3), "message": plain_message, "finish_reason": finish},
    logprobs=st.none(),
    extra=odd,
)
plain_usage = mostly({"prompt_tokens": counts, "completion_tokens": counts, "total_tokens": counts})
plain_chat_answer = mostly(
    {
        "id": st.text(max_size=8),
        "created": st.integers(0, 2**31),
        "model": st.text(max_size=8),
        "choices": st.lists(plain_choice, max_size=3),
    },
    object=st.just("chat.completion"),
    usage=plain_usage | usage,
    system_fingerprint=st.text(max_size=5),
    service_tier=st.sampled_from(["auto", "default", "flex"]),
    timings=odd,
)


@FUZZ
@given(st.one_of(plain_chat_answer, plain_chat_answer, chat_answer))
def test_chat_no_repair_path_agrees(answer: dict[str, Any]) -> None:
    """Whatever the no-repair path accepts, it shapes exactly as the careful path: the same
    keys, in the same order, with the same values."""
    fast = chat._as_sent(answer)
    if fast is not None:
        assert repr(fast) == repr(chat._repaired(answer, "m", None))
