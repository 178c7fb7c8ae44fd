"""The one reader of the gateway's chat and legacy-completion event streams (SPEC §7)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

Json = dict[str, Any]


def parse_sse(text: str) -> tuple[list[Json], bool]:
    """Split a gateway event stream; every event must be exactly `data: <json>\\n\\n`.

    Comment events (`: keep-alive`) are allowed by SPEC §7 and skipped. Returns the JSON
    events and whether the stream ended with `data: [DONE]` (nothing may follow it).
    """
    assert text.endswith("\n\n"), f"stream does not end with a blank line: {text[-80:]!r}"
    raw_events = text[:-2].split("\n\n")
    events: list[Json] = []
    done = False
    for raw in raw_events:
        assert not done, f"event after [DONE]: {raw!r}"
        if raw.startswith(":"):
            assert "\n" not in raw, raw
            continue
        assert raw.startswith("data: "), f"not a data event: {raw!r}"
        data = raw.removeprefix("data: ")
        assert "\n" not in data, f"event spans several lines: {raw!r}"
        if data == "[DONE]":
            done = True
            continue
        parsed = orjson.loads(data)
        assert isinstance(parsed, dict), raw
        events.append(parsed)
    return events, done


def stream_chunks(response: httpx.Response) -> list[Json]:
    """The JSON chunks of a whole, successful stream: 200, text/event-stream, ended by [DONE]."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    events, done = parse_sse(response.text)
    assert done, "the stream did not end with data: [DONE]"
    return events
