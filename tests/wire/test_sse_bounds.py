"""An upstream event stream is bounded per event, not per line."""

from __future__ import annotations

import pytest

from oai_gateway.wire.sse import MAX_EVENT_BYTES, SSEParser, SSEProtocolError


def test_an_event_of_many_short_data_lines_is_bounded_as_a_whole() -> None:
    parser = SSEParser()
    lines = (b"data: " + b"x" * 1023 + b"\n") * (MAX_EVENT_BYTES // 1024 + 2)
    with pytest.raises(SSEProtocolError, match="event is larger"):
        parser.feed(lines)  # no line is long, the event is


def test_many_events_each_below_the_bound_pass() -> None:
    parser = SSEParser()
    event = b"data: " + b"x" * (MAX_EVENT_BYTES // 2) + b"\n\n"
    for _ in range(4):  # together twice the bound, each half of it
        assert parser.feed(event) == [(b"", b"x" * (MAX_EVENT_BYTES // 2))]
