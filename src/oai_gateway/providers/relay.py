"""An upstream stream relayed to the client as two plain generators:
`events` (SSE bytes to event objects) and `frames` (event objects to normalised SSE frames).

Both work one upstream read at a time: events that arrived together leave together (one write
instead of one per event), and nothing waits for more input.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import NamedTuple

import orjson

from oai_gateway.errors import UpstreamError
from oai_gateway.observability.redact import Redactor
from oai_gateway.providers.base import Json
from oai_gateway.upstream.client import UpstreamResponse
from oai_gateway.wire.normalize.stream import ChunkNormalizer, UpstreamStreamError
from oai_gateway.wire.sse import DONE, DONE_EVENT, SSEParser, SSEProtocolError, frame


class EventBatch(NamedTuple):
    """The events of one upstream read; `last` when `data: [DONE]` ended the stream in it."""

    events: list[Json]
    last: bool


async def events(response: UpstreamResponse, label: str) -> AsyncGenerator[EventBatch, None]:
    """The upstream's events, one batch per read, ending after `[DONE]`.

    Events before a malformed one are still yielded, then the error is raised; a stream that
    ends without `[DONE]` is an error too. The upstream response is closed in every case.
    """
    parser = SSEParser()
    try:
        async for part in response.chunks():
            batch: list[Json] = []
            try:
                for event, data in parser.feed(part):
                    if data == DONE:
                        yield EventBatch(batch, last=True)
                        return
                    batch.append(_event_object(event, data, label))
            except SSEProtocolError as exc:
                failure = UpstreamError(f"{label} sent an invalid event stream: {exc}.")
            except UpstreamError as exc:
                failure = exc
            else:
                if batch:
                    yield EventBatch(batch, last=False)
                continue
            if batch:
                yield EventBatch(batch, last=False)
            raise failure
    finally:
        response.close()
    raise UpstreamError(f"{label} ended the stream before it was complete.")


def _event_object(event: bytes, data: bytes, label: str) -> Json:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"{label} sent a stream event that is not JSON.") from None
    if not isinstance(chunk, dict):
        raise UpstreamError(f"{label} sent a stream event that is not an object.")
    if event == b"error" and "error" not in chunk:
        chunk = {"error": chunk}
    return chunk


async def frames(
    batches: AsyncGenerator[EventBatch, None],
    normalizer: ChunkNormalizer,
    *,
    label: str,
    redactor: Redactor,
    finish: bool = True,
) -> AsyncGenerator[bytes, None]:
    """Each batch normalised and framed as one piece; with `finish`, the usage chunk and
    `data: [DONE]` end the last one. An error event inside the stream ends it with an error,
    after the chunks before it. Closing this closes `batches` (and so the upstream response)."""
    try:
        async for batch in batches:
            shaped: list[bytes] = []
            try:
                for event in batch.events:
                    chunk = normalizer.chunk(event)
                    if chunk is not None:
                        shaped.append(frame(chunk))
            except UpstreamStreamError as exc:
                if shaped:
                    yield b"".join(shaped)
                message = redactor.redact(str(exc))
                raise UpstreamError(f"{label} failed mid-stream: {message}") from None
            if batch.last and finish:
                final = normalizer.usage_chunk()
                if final is not None:
                    shaped.append(frame(final))
                shaped.append(DONE_EVENT)
            if shaped:
                yield b"".join(shaped)
    finally:
        await batches.aclose()
