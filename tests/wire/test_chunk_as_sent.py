"""Chunks already in OpenAI's shape are sent with only their shared values set: for any chunk,
that gives byte for byte what rebuilding it gives, and the stream's state evolves the same."""

from __future__ import annotations

import copy
import json
from typing import Any
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from oai_gateway.errors import UpstreamError
from oai_gateway.wire.normalize.chat import CHAT_CHUNKS
from oai_gateway.wire.normalize.stream import ChunkNormalizer, UpstreamStreamError
from oai_gateway.wire.normalize.text import TEXT_CHUNKS
from tests.wire.test_normalize_fuzz import FUZZ, anything, chunk


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Well-formed nine times in ten, any JSON the tenth."""
    return st.integers(0, 9).flatmap(lambda n: anything if n == 9 else good)


def in_order(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict with these keys in this order, each one nearly always present and well-formed."""
    present = st.lists(
        st.integers(0, 9).map(lambda n: n != 9), min_size=len(fields), max_size=len(fields)
    )
    values = st.tuples(*(mostly(value) for value in fields.values()))
    return st.builds(
        lambda keep, found: {k: v for k, v, on in zip(fields, found, keep, strict=True) if on},
        present,
        values,
    )


text = st.text(max_size=6)
role = mostly(st.sampled_from(["assistant", "user", "tool", "robot"]))
delta = in_order(role=role, content=text | st.none(), refusal=text | st.none())
choice = in_order(
    index=st.integers(0, 2),
    delta=delta,
    logprobs=st.none(),
    finish_reason=mostly(st.sampled_from([None, "stop", "length", "tool_calls", "bogus"])),
)
openai_chunk = in_order(
    id=text,
    object=st.just("chat.completion.chunk"),
    created=mostly(st.integers(0, 2**31)),
    model=text,
    choices=st.integers(0, 3).flatmap(lambda n: st.lists(choice, min_size=1 + n // 3, max_size=2)),
    system_fingerprint=text,
    usage=mostly(st.none()) | st.just({"prompt_tokens": 1, "completion_tokens": 2}),
)


def outcome(
    normalizer: ChunkNormalizer, chunk: dict[str, Any], *, rebuilt: bool
) -> tuple[str, str] | str | None:
    try:
        out = normalizer._rebuilt(chunk) if rebuilt else normalizer.chunk(chunk)
    except (UpstreamError, UpstreamStreamError) as exc:
        return type(exc).__name__, str(exc)
    return None if out is None else json.dumps(out)  # keys in order, as they are sent


@FUZZ
@given(
    st.lists(openai_chunk | chunk, min_size=1, max_size=5),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, "gen-id"]),
)
def test_a_chunk_sent_as_it_came_is_the_chunk_rebuilt(
    chunks: list[dict[str, Any]], chat: bool, include_usage: bool, ident: str | None
) -> None:
    # Ids and times the gateway makes up are the same for both (the same id, the same second).
    with (
        mock.patch("oai_gateway.wire.normalize.stream.new_id", return_value="made-id"),
        mock.patch("oai_gateway.wire.normalize.stream.time.time", return_value=7.0),
    ):
        both_ways(chunks, chat, include_usage, ident)


def both_ways(
    chunks: list[dict[str, Any]], chat: bool, include_usage: bool, ident: str | None
) -> None:
    shape = CHAT_CHUNKS if chat else TEXT_CHUNKS
    fast, slow = (
        ChunkNormalizer(shape, model="m", include_usage=include_usage, ident=ident)
        for _ in range(2)
    )
    for each in chunks:
        same = copy.deepcopy(each)
        assert outcome(fast, each, rebuilt=False) == outcome(slow, same, rebuilt=True)
        assert each == same  # the upstream's chunk is never changed in place
    assert json.dumps(fast.usage_chunk()) == json.dumps(slow.usage_chunk())
    assert fast.usage == slow.usage


def test_the_common_shape_takes_the_short_way() -> None:
    normalizer = ChunkNormalizer(CHAT_CHUNKS, model="m", include_usage=False)
    first = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        ],
    }
    sent = normalizer.chunk(first)
    assert sent == first
    assert sent is not first
    assert sent["choices"] is first["choices"]  # not rebuilt
    # The role goes out once per choice: a repeated one needs the chunk rebuilt without it.
    again = normalizer.chunk(first)
    assert again is not None
    assert again["choices"] is not first["choices"]
    assert again["choices"][0]["delta"] == {"content": ""}
