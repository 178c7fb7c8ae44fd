"""The provider interface: the whole OpenAI surface of SPEC §1, and the values it trades in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from oai_gateway.config.settings import ProviderSpec
from oai_gateway.upstream.client import Timer
from oai_gateway.wire.answer import Answer
from oai_gateway.wire.requests import RequestFacts

Json = dict[str, Any]


class Operation(StrEnum):
    MODELS = "models"
    EMBEDDINGS = "embeddings"
    COMPLETIONS = "completions"
    CHAT = "chat completions"
    RESPONSES = "the Responses API"


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """What every upstream request made for one client request carries: the id to forward,
    the time budget, and where the time spent waiting is added up."""

    request_id: str
    deadline: float  # time.monotonic() by which a non-streaming answer must be complete
    timer: Timer


class ChunkStream:
    """An upstream stream that has passed its status check: framed SSE bytes to relay as they
    come (the last piece ends with `data: [DONE]`), and a way to stop.

    `aclose` must always be awaited: it closes the upstream connection even if iteration never
    started (a client that left before the first chunk). `usage` is known once the stream ended.
    """

    __slots__ = ("_chunks", "_close", "_usage")

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        close: Callable[[], None],
        usage: Callable[[], Json | None] = lambda: None,
    ) -> None:
        self._chunks = chunks
        self._close = close
        self._usage = usage

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    @property
    def usage(self) -> Json | None:
        return self._usage()

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._close()


class Provider(Protocol):
    """What every provider implements. Routes only ever talk to this.

    `generate` and `stream` serve every generation operation (chat, legacy completions, and
    whatever a dialect adds): which one is the `operation` argument.
    """

    spec: ProviderSpec
    unsupported: frozenset[Operation]

    async def start(self) -> None: ...
    async def aclose(self) -> None: ...
    async def check_ready(self) -> str | None:
        """None when the upstream answers, else a one-line reason."""
        ...

    async def list_models(self, call: UpstreamCall) -> list[Json]: ...
    async def retrieve_model(self, call: UpstreamCall, model_id: str) -> Json: ...
    async def embed(self, call: UpstreamCall, body: Json, facts: RequestFacts) -> Answer: ...
    async def generate(
        self, call: UpstreamCall, operation: Operation, body: Json, facts: RequestFacts
    ) -> Answer: ...
    async def stream(
        self, call: UpstreamCall, operation: Operation, body: Json, facts: RequestFacts
    ) -> ChunkStream: ...
    async def stored_response(self, call: UpstreamCall, method: str, suffix: str) -> Answer:
        """A stored-response route of the Responses API (`suffix` after `/responses`)."""
        ...
