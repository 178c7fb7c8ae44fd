"""A cross-talk detector: no client ever receives another client's answer.

About 1,000 concurrent requests go through one pool of 8 connections to an upstream that echoes
each request's id, while it also misbehaves on a share of them: extra bytes after an answer (a
whole second answer carrying another client's id, or part of one), partial heads, resets, stalls
in the middle of a body, and clients that give up at random moments. Requests the upstream
answers properly must all succeed; every answer that arrives must carry its own request's id.
FUZZ_EXAMPLES scales the number of requests (FUZZ_EXAMPLES / 150 thousands, at least one).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
from collections import Counter

from oai_gateway.upstream.client import UpstreamClient
from tests.upstream.test_http1 import RunLoop, Timer, run

__all__ = ["run"]

REQUESTS = 1000 * max(1, int(os.environ.get("FUZZ_EXAMPLES", "150")) // 150)
POOL = 8


def answer(request_id: str, *, chunked: bool = False) -> bytes:
    body = b'{"id":"%s"}' % request_id.encode()
    if chunked:
        half = len(body) // 2
        framed = b"%x\r\n%s\r\n%x;e=1\r\n%s\r\n0\r\nx-t: 1\r\n\r\n" % (
            half,
            body[:half],
            len(body) - half,
            body[half:],
        )
        return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + framed
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body


def fault_of(request_id: str) -> str:
    n = int(request_id.removeprefix("req_"))
    return [
        "ok",
        "extra-answer",
        "partial-head",
        "reset",
        "stall",
        "cancel",
        "extra-part",
        "ok",
        "chunked",
        "ok",
    ][n % 10]


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
            await reader.readexactly(int(fields.get(b"content-length", b"0")))
            request_id = fields[b"x-request-id"].decode()
            if not await misbehave(fault_of(request_id), request_id, writer):
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def misbehave(fault: str, request_id: str, writer: asyncio.StreamWriter) -> bool:
    """Answer one request as `fault` says; False when the connection is to end."""
    other = f"req_{int(request_id[4:]) + 1}"  # a real client's id: the worst bytes to misread
    if fault == "extra-answer":
        writer.write(answer(request_id) + answer(other))
    elif fault == "extra-part":
        writer.write(answer(request_id) + answer(other)[:25])
    elif fault == "partial-head":
        writer.write(answer(request_id)[:20])
        await writer.drain()
        return False
    elif fault == "reset":
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False
    elif fault == "stall":
        data = answer(request_id)
        writer.write(data[:30])
        await writer.drain()
        await asyncio.sleep(0.03)
        writer.write(data[30:])
    else:
        writer.write(answer(request_id, chunked=fault == "chunked"))
    await writer.drain()
    return True


async def one(client: UpstreamClient, n: int) -> str:
    request_id = f"req_{n}"
    response = await client.request(
        "POST", "/x", body=b'{"n":%d}' % n, request_id=request_id, timer=Timer()
    )
    body = await response.read()
    if body != b'{"id":"%s"}' % request_id.encode():
        return f"CROSS-TALK {request_id} got {body!r}"
    return "answered"


async def scenario() -> Counter[str]:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = UpstreamClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={},
        timeout_s=30,
        label="echo upstream",
        unreachable_hint="start it",
        pool_size=POOL,
    )
    await client.start()
    loop = asyncio.get_running_loop()
    tasks = {n: asyncio.create_task(one(client, n)) for n in range(REQUESTS)}
    chance = random.Random(13)
    for n, task in tasks.items():
        if fault_of(f"req_{n}") == "cancel":
            loop.call_later(chance.uniform(0, 0.2), task.cancel)
    outcomes: Counter[str] = Counter()
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    for n, result in zip(tasks, results, strict=True):
        kind = result if isinstance(result, str) else type(result).__name__
        outcomes[f"{fault_of(f'req_{n}')}: {kind}"] += 1
    await client.aclose()
    server.close()
    return outcomes


def test_no_client_ever_receives_another_clients_answer(run: RunLoop) -> None:
    outcomes: Counter[str] = Counter()

    async def record() -> None:
        outcomes.update(await scenario())

    run(record())
    assert not [k for k in outcomes if "CROSS-TALK" in k], outcomes
    per_fault = REQUESTS // 10
    for fault in ("ok", "chunked", "extra-answer", "extra-part", "stall"):
        expected = per_fault * (3 if fault == "ok" else 1)
        assert outcomes[f"{fault}: answered"] == expected, outcomes
    assert outcomes["partial-head: UpstreamError"] == per_fault, outcomes
    assert outcomes["reset: UpstreamError"] == per_fault, outcomes
    assert sum(v for k, v in outcomes.items() if k.startswith("cancel")) == per_fault
