"""Differential fuzzing of the HTTP/1.1 client's response framing against h11's decoding.

hypothesis writes responses (interim 1xx heads, 204/304, content-length, chunked with extensions
and trailers, close-delimited bodies), delivers them split at random offsets down to one byte
per read, and the client must decode exactly what h11 decodes from the same bytes: status,
headers (trailers not among them), body, and whether the connection may carry another request.
FUZZ_EXAMPLES raises the number of examples (default 150) for a longer run.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oai_gateway.upstream import http1

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=24)
# Names the framing or the answer's meaning depend on; generated fields never use them.
FRAMING = {"content-length", "transfer-encoding", "connection", "upgrade", "trailer", "te"}


@dataclass
class Answer:
    wire: bytes
    close_delimited: bool


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    interim = draw(st.lists(st.sampled_from([100, 102, 103]), max_size=2))
    status = draw(st.sampled_from([200, 201, 204, 304, 400, 404, 429, 500, 503]))
    fields = draw(st.lists(st.tuples(TOKEN, VALUE), max_size=8))
    fields = [(n, v) for n, v in fields if n not in FRAMING]
    body = draw(st.binary(max_size=600))
    framing = (
        "none" if status in (204, 304) else draw(st.sampled_from(["length", "chunked", "close"]))
    )
    close = draw(st.booleans()) and framing != "close"
    wire = b"".join(b"HTTP/1.1 %d Interim\r\n\r\n" % code for code in interim)
    head = [b"HTTP/1.1 %d Reason\r\n" % status]
    head += [f"{n}: {v}\r\n".encode() for n, v in fields]
    if close or framing == "close":
        head.append(b"connection: close\r\n")
    if framing == "length":
        head.append(b"content-length: %d\r\n" % len(body))
        payload = body
    elif framing == "chunked":
        head.append(b"transfer-encoding: chunked\r\n")
        payload = draw(chunked(body))
    elif framing == "close":
        payload = body
    else:
        payload = b""
    wire += b"".join(head) + b"\r\n" + payload
    return Answer(wire=wire, close_delimited=framing == "close")


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=6)))
    parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    out = b""
    for part in parts:
        if not part:
            continue
        extension = draw(st.sampled_from(["", ";x", ";name=value", ';q="a b"']))
        out += b"%x%s\r\n" % (len(part), extension.encode()) + part + b"\r\n"
    trailers = draw(st.lists(st.tuples(TOKEN, VALUE), max_size=3))
    out += b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers) + b"\r\n"
    return out


def h11_decoding(answer: Answer) -> dict[str, Any]:
    connection = h11.Connection(h11.CLIENT)
    connection.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")])
    )
    connection.send(h11.EndOfMessage())
    connection.receive_data(answer.wire)
    if answer.close_delimited:
        connection.receive_data(b"")
    result: dict[str, Any] = {"body": b""}
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Response):
            headers: dict[str, str] = {}
            for name, value in event.headers:
                key = name.decode()
                headers[key] = (
                    f"{headers[key]}, {value.decode()}" if key in headers else value.decode()
                )
            result.update(status=event.status_code, headers=headers)
        elif isinstance(event, h11.Data):
            result["body"] += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            result["reusable"] = (
                connection.their_state is h11.DONE and connection.our_state is h11.DONE
            )
            return result
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            raise AssertionError(f"h11 did not finish: {event}")


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def client_decoding(answer: Answer, cuts: list[int]) -> dict[str, Any]:
    pool = http1.Pool("127.0.0.1", 9, tls=None, size=1, idle_s=1.0)
    connection = http1.Connection(pool)
    connection.connection_made(Transport())
    connection.send(b"POST / HTTP/1.1\r\n\r\n", None, deadline=None, idle_limit=60)
    wire = answer.wire
    offsets = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    for start, end in itertools.pairwise(offsets):
        connection.data_received(wire[start:end])
    if answer.close_delimited:
        connection.connection_lost(None)
    await connection.read_head()
    body = await connection.read_body(1 << 20)
    result = {
        "status": connection.status,
        "headers": dict(connection.headers),
        "body": body,
        "reusable": connection.reusable(),
    }
    connection.release()
    return result


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as each:
        yield each


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=answers(), cuts=st.lists(st.integers(0, 4096), max_size=40), one_byte=st.booleans())
def test_the_client_decodes_every_framing_as_h11_does(
    runner: asyncio.Runner, answer: Answer, cuts: list[int], one_byte: bool
) -> None:
    if one_byte:
        cuts = list(range(len(answer.wire)))
    expected = h11_decoding(answer)
    got = runner.run(client_decoding(answer, cuts))
    assert got == expected, answer.wire
