"""Legacy completions for upstreams that take one prompt per call (`one_prompt_per_call`):
several prompts become one upstream call each, merged back into one answer or one stream.

The body has already passed the dialect's quirks and rewrite, so each prompt is a string.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

from oai_gateway.providers.base import ChunkStream, Json, UpstreamCall
from oai_gateway.providers.dialect import Endpoint
from oai_gateway.wire.normalize.common import new_id
from oai_gateway.wire.normalize.stream import ChunkNormalizer
from oai_gateway.wire.requests import RequestFacts
from oai_gateway.wire.sse import DONE_EVENT, frame

if TYPE_CHECKING:
    from oai_gateway.providers.provider import DialectProvider


# One legacy completion with many prompts costs the upstream at most the provider's
# `max_prompts_in_flight` generations at once, not one per prompt: 300 prompts once made 300
# concurrent generations.


def _prompts(body: Json) -> list[str]:
    prompt = body["prompt"]
    return [prompt] if isinstance(prompt, str) else list(prompt)


async def _bounded(calls: list[Coroutine[Any, Any, Json]], in_flight: int) -> list[Json]:
    """Every call's answer, at most `in_flight` at a time; the first failure cancels
    the others (running or waiting) and is raised itself."""
    gate = asyncio.Semaphore(in_flight)

    async def one(call: Coroutine[Any, Any, Json]) -> Json:
        async with gate:
            return await call

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(call)) for call in calls]
    except BaseExceptionGroup as failed:
        for call in calls:
            call.close()  # never started: no "coroutine was never awaited" warning
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def add_usage(total: Json | None, part: Json | None) -> Json | None:
    if part is None:
        return total
    if total is None:
        return dict(part)
    return {
        k: total.get(k, 0) + part.get(k, 0)
        for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    }


async def generate(
    provider: DialectProvider,
    call: UpstreamCall,
    endpoint: Endpoint,
    body: Json,
    facts: RequestFacts,
) -> Json:
    prompts = _prompts(body)
    if len(prompts) == 1:
        return await provider.shaped(call, endpoint, {**body, "prompt": prompts[0]}, facts)
    answers = await _bounded(
        [provider.shaped(call, endpoint, {**body, "prompt": p}, facts) for p in prompts],
        provider.spec.max_prompts_in_flight,
    )
    # Built apart from answers[0], which is both the template and one of the parts.
    choices: list[Json] = []
    total: Json | None = None
    for position, answer in enumerate(answers):
        choices.extend({**choice, "index": position} for choice in answer["choices"])
        total = add_usage(total, answer.get("usage"))
    merged = answers[0]
    merged["choices"] = choices
    if total is not None:
        merged["usage"] = total
    return merged


def _part(endpoint: Endpoint, facts: RequestFacts, ident: str, position: int) -> ChunkNormalizer:
    """The normaliser of one prompt's stream: its choices at `position`, usage kept for the end."""
    return ChunkNormalizer(
        endpoint.chunks, model=facts.model, include_usage=False, ident=ident, choice_index=position
    )


async def stream(
    provider: DialectProvider,
    call: UpstreamCall,
    endpoint: Endpoint,
    body: Json,
    facts: RequestFacts,
) -> ChunkStream:
    """The prompts streamed one after another, choice by choice, under one id."""
    prompts = _prompts(body)
    first = await provider.open_stream(call, endpoint, {**body, "prompt": prompts[0]})
    if len(prompts) == 1:
        return provider.relayed(first, endpoint, facts)
    ident = new_id(endpoint.id_prefix)
    final = ChunkNormalizer(
        endpoint.chunks, model=facts.model, include_usage=facts.include_usage, ident=ident
    )

    async def chunks() -> AsyncIterator[bytes]:
        response = first
        for position, prompt in enumerate(prompts):
            if position:
                response = await provider.open_stream(call, endpoint, {**body, "prompt": prompt})
            part = _part(endpoint, facts, ident, position)
            frames = provider.frames(response, part, finish=False)
            try:
                async for batch in frames:
                    yield batch
            finally:
                await frames.aclose()
            final.usage = add_usage(final.usage, part.usage)
        last = final.usage_chunk()
        yield (frame(last) if last is not None else b"") + DONE_EVENT

    return ChunkStream(chunks(), first.close, lambda: final.usage)
