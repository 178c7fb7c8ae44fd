"""Server-sent events: parsing upstream streams and framing the gateway's own."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"
MAX_EVENT_BYTES = 4 * 1024 * 1024


class SSEProtocolError(ValueError):
    """The upstream's event stream cannot be parsed."""


def frame(payload: Any) -> bytes:
    """One data-only event, as OpenAI sends them."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class SSEParser:
    """Incremental parser yielding the `data` of each complete event.

    Follows the WHATWG rules the SDKs use: CR, LF or CRLF line ends, several `data:` lines joined
    with LF, comments and other fields ignored. `event: error` marks the data as an error.
    """

    __slots__ = ("_buffer", "_data", "_event", "_size", "_skip_lf")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event = b""
        self._size = 0  # bytes of the event being read: its data lines so far
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """Feed raw bytes; returns the (event name, data) pairs completed by them."""
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across two reads
        self._skip_lf = False
        buffer = self._buffer + chunk if self._buffer else chunk
        # `find`, not `in`: `bytes in bytes` first tries the operand as an integer and builds
        # (then drops) a TypeError each time, which costs more than the search itself.
        if buffer.find(b"\r") >= 0:
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[tuple[bytes, bytes]] = []
        # Each block between blank lines is one event; the usual one, a single `data: ` line
        # starting afresh, is taken whole instead of line by line.
        *blocks, tail = buffer.split(b"\n\n")
        fresh = not (self._data or self._event)  # no line of an event came in an earlier read
        for block in blocks:
            if fresh and block.startswith(b"data: ") and block.find(b"\n") < 0:
                if len(block) - 5 > MAX_EVENT_BYTES:
                    raise SSEProtocolError("an event is larger than the gateway accepts")
                events.append((b"", block[6:]))
                continue
            for line in block.split(b"\n"):
                self._line(line, events)
            self._line(b"", events)
            fresh = True
        *lines, rest = tail.split(b"\n")
        for line in lines:
            self._line(line, events)
        if self._size + len(rest) > MAX_EVENT_BYTES:
            raise SSEProtocolError("an event is larger than the gateway accepts")
        self._buffer = rest
        return events

    def _line(self, line: bytes, events: list[tuple[bytes, bytes]]) -> None:
        if not line:
            if self._data:
                events.append((self._event, b"\n".join(self._data)))
            self._data = []
            self._event = b""
            self._size = 0
            return
        if line.startswith(b":"):
            return
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            # One event of many short lines is as large as one of a long line: bound the event.
            self._size += len(value) + 1
            if self._size > MAX_EVENT_BYTES:
                raise SSEProtocolError("an event is larger than the gateway accepts")
            self._data.append(value)
        elif name == b"event":
            self._event = value
