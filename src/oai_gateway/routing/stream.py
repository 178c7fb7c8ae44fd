"""A stream past its commit point: the first event already read, the upstream held until the
stream ends (SPEC §11)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from oai_gateway.providers.base import ChunkStream
from oai_gateway.routing.members import Lease


async def first_event(stream: ChunkStream) -> bytes:
    """The stream's first piece; an attempt has an answer only once it arrived."""
    try:
        return await anext(aiter(stream))
    except StopAsyncIteration:
        return b""
    except BaseException:
        await stream.aclose()
        raise


class CommittedStream(ChunkStream):
    """Relays `first` and then the rest of `inner`; ending it releases the upstream's lease, so
    `least_in_flight` counts a stream until its last byte."""

    __slots__ = ("_inner", "_lease")

    def __init__(self, first: bytes, inner: ChunkStream, lease: Lease) -> None:
        super().__init__(_chain(first, inner), _nothing)
        self._inner = inner
        self._lease = lease

    def __aiter__(self) -> AsyncIterator[bytes]:
        return super().__aiter__()

    @property
    def usage(self) -> Any:
        return self._inner.usage

    async def aclose(self) -> None:
        try:
            await super().aclose()
            await self._inner.aclose()
        finally:
            self._lease.release()


async def _chain(first: bytes, inner: ChunkStream) -> AsyncGenerator[bytes, None]:
    if first:
        yield first
    async for piece in inner:
        yield piece


def _nothing() -> None:
    return None
