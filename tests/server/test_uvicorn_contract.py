"""The parts of uvicorn's private `httptools_impl` that server/protocol.py builds on.

pyproject.toml pins uvicorn to the range these tests passed on. A uvicorn release that renames a
callback, an attribute or the cycle's fields fails here, by name, instead of quietly dropping the
head deadline, the byte budget or a disconnect signal.
"""

from __future__ import annotations

import asyncio
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.server import ServerState

from oai_gateway.server.asgi import DISCONNECT_SIGNAL, DisconnectSignal
from oai_gateway.server.protocol import EnvelopeHttpToolsProtocol

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
OVERRIDDEN = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "send_400_response",
)
CYCLE_FIELDS = ("scope", "disconnected", "message_event", "response_started", "response_complete")


def test_the_installed_uvicorn_is_in_the_pinned_range() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if d.startswith("uvicorn")]
    assert ",<" in pin, f"uvicorn must have an upper bound: {pin}"
    low, high = (part.lstrip("><=") for part in pin.removeprefix("uvicorn").split(","))

    def key(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in text.split(".")[:2])

    assert key(low) <= key(version("uvicorn")) < key(high), (pin, version("uvicorn"))


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_every_overridden_method_exists_with_the_same_signature(name: str) -> None:
    base = getattr(httptools_impl.HttpToolsProtocol, name, None)
    assert base is not None, f"uvicorn's HttpToolsProtocol has no {name}() any more"
    ours = getattr(EnvelopeHttpToolsProtocol, name)
    assert list(inspect.signature(ours).parameters) == list(inspect.signature(base).parameters)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name in ("peername", "sockname") else default


def test_the_state_the_protocol_reads_is_where_it_expects() -> None:
    """One pipelined pair and a chunked body with a trailer through a real protocol instance:
    the attributes, the cycle's fields and the parser callbacks used exist and behave."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0)

    async def scenario() -> None:
        config = uvicorn.Config(app, http=EnvelopeHttpToolsProtocol, lifespan="off")
        state = ServerState()
        protocol = EnvelopeHttpToolsProtocol(config, state, {}, _loop=asyncio.get_running_loop())
        transport = Transport()
        protocol.connection_made(transport)
        assert protocol in state.connections
        assert isinstance(protocol.timeout_keep_alive, float | int)
        assert isinstance(state.default_headers, list)
        protocol.data_received(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2;ext=1\r\n{}\r\n0\r\nX-Trailer: 1\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first = protocol.pipeline[0][0] if protocol.pipeline else None
        cycle = protocol.cycle
        assert isinstance(cycle, httptools_impl.RequestResponseCycle)
        for field in CYCLE_FIELDS:
            assert hasattr(cycle, field), f"RequestResponseCycle has no {field} any more"
        assert first is cycle  # the second request waits in uvicorn's pipeline queue
        assert isinstance(cycle.scope[DISCONNECT_SIGNAL], DisconnectSignal)  # type: ignore[literal-required]
        assert cycle.keep_alive is True
        assert callable(protocol.flow.pause_reading)
        protocol.connection_lost(None)
        assert cycle.disconnected

    asyncio.run(scenario())
