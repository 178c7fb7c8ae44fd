"""The provider interface: the whole OpenAI surface of SPEC §1, one implementation per kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from oai_gateway.config.settings import ProviderSpec
from oai_gateway.upstream.client import Timer
from oai_gateway.wire.normalize import ChunkNormalizer
from oai_gateway.wire.requests import RequestFacts

Json = dict[str, Any]


class Operation(StrEnum):
    MODELS = "models"
    EMBEDDINGS = "embeddings"
    COMPLETIONS = "completions"
    CHAT = "chat completions"


@dataclass(frozen=True, slots=True)
class CallContext:
    """Per-request facts a provider may use: the id to forward and the time budget."""

    request_id: str
    deadline: float  # time.monotonic() by which a non-streaming answer must be complete
    timer: Timer


class ChunkStream:
    """An upstream stream that has passed its status check: framed SSE bytes to relay as they
    come (the last piece ends with `data: [DONE]`), and a way to stop.

    `aclose` must always be awaited: it closes the upstream connection even if iteration never
    started (a client that left before the first chunk).
    """

    __slots__ = ("_chunks", "_close", "_normalizer")

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        close: Callable[[], None],
        normalizer: ChunkNormalizer | None = None,
    ) -> None:
        self._chunks = chunks
        self._close = close
        self._normalizer = normalizer

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    @property
    def usage(self) -> Json | None:
        return self._normalizer.usage if self._normalizer else None

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._close()


class Provider(Protocol):
    """What every provider kind implements. Routes only ever talk to this."""

    spec: ProviderSpec
    unsupported: frozenset[Operation]

    async def start(self) -> None: ...
    async def aclose(self) -> None: ...
    async def check_ready(self) -> str | None:
        """None when the upstream answers, else a one-line reason."""
        ...

    async def list_models(self, ctx: CallContext) -> list[Json]: ...
    async def retrieve_model(self, ctx: CallContext, model_id: str) -> Json: ...
    async def create_embeddings(
        self, ctx: CallContext, body: Json, facts: RequestFacts
    ) -> Json: ...
    async def create_completion(
        self, ctx: CallContext, body: Json, facts: RequestFacts
    ) -> Json: ...
    async def stream_completion(
        self, ctx: CallContext, body: Json, facts: RequestFacts
    ) -> ChunkStream: ...
    async def create_chat_completion(
        self, ctx: CallContext, body: Json, facts: RequestFacts
    ) -> Json: ...
    async def stream_chat_completion(
        self, ctx: CallContext, body: Json, facts: RequestFacts
    ) -> ChunkStream: ...
