"""SSEParser: the WHATWG rules the SDKs use, fed in arbitrary pieces."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oai_gateway.wire.sse import MAX_EVENT_BYTES, SSEParser, SSEProtocolError, frame


def feed_all(parts: list[bytes]) -> list[tuple[bytes, bytes]]:
    parser = SSEParser()
    events: list[tuple[bytes, bytes]] = []
    for part in parts:
        events.extend(parser.feed(part))
    return events


STREAM = b'data: {"a":1}\n\n: keep-alive\n\nevent: error\ndata: {"b":2}\n\ndata: [DONE]\n\n'
EXPECTED = [(b"", b'{"a":1}'), (b"error", b'{"b":2}'), (b"", b"[DONE]")]


def test_whole_stream() -> None:
    assert feed_all([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_any_split_gives_the_same_events(size: int) -> None:
    parts = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert feed_all(parts) == EXPECTED


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
def test_cr_and_crlf_line_endings(ending: bytes) -> None:
    stream = STREAM.replace(b"\n", ending)
    assert feed_all([stream]) == EXPECTED
    assert feed_all([bytes([b]) for b in stream]) == EXPECTED


def test_multi_line_data_is_joined_and_other_fields_ignored() -> None:
    stream = b"id: 7\nretry: 10\ndata: one\ndata:two\nfoo: bar\n\n"
    assert feed_all([stream]) == [(b"", b"one\ntwo")]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert feed_all([b"\n\n\n: only a comment\n\n"]) == []


def test_an_endless_line_is_refused() -> None:
    parser = SSEParser()
    with pytest.raises(SSEProtocolError):
        parser.feed(b"data: " + b"x" * (MAX_EVENT_BYTES + 1))


def test_frame_is_one_data_only_event() -> None:
    assert frame({"a": [1, "b"]}) == b'data: {"a":[1,"b"]}\n\n'


def reference_events(stream: bytes) -> list[tuple[bytes, bytes]]:
    """The WHATWG rules applied line by line to the whole stream at once."""
    events: list[tuple[bytes, bytes]] = []
    data: list[bytes] = []
    name = b""
    for line in stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")[:-1]:
        if not line:
            if data:
                events.append((name, b"\n".join(data)))
            data, name = [], b""
            continue
        field, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"data" and not line.startswith(b":"):
            data.append(value)
        elif field == b"event":
            name = value
    return events


@given(
    st.lists(
        st.sampled_from(
            [b"data: {}", b"data:x", b"data: ", b"event: error", b": c", b"id: 1", b"", b"data"]
        ),
        max_size=12,
    ),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.lists(st.integers(0, 200), max_size=6),
)
def test_events_are_those_of_the_line_by_line_rules(
    lines: list[bytes], ending: bytes, cuts: list[int]
) -> None:
    stream = b"".join(line + ending for line in lines) + b"\n"
    offsets = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    parts = [stream[a:b] for a, b in itertools.pairwise(offsets)]
    assert feed_all(parts) == reference_events(stream)
