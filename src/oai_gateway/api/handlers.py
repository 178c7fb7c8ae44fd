"""The handlers the route table names: each reads what it needs from the `Exchange`, calls the
provider (for data-plane routes, through `serve`, the one choke point) and renders the answer.

What an answer means is the provider's business, how it is shaped is the wire package's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources

import orjson

from oai_gateway.api.body import read_body
from oai_gateway.api.cancel import guarded
from oai_gateway.api.exchange import Exchange, Services
from oai_gateway.api.table import Handler
from oai_gateway.errors import RouteNotFoundError
from oai_gateway.observability.metrics import CONTENT_TYPE
from oai_gateway.providers.base import ChunkStream, Json, Operation, UpstreamCall
from oai_gateway.providers.registry import ensure_model_allowed, upstream_readiness
from oai_gateway.wire import requests
from oai_gateway.wire.answer import Answer
from oai_gateway.wire.responses import request as responses_request

HEALTHY = orjson.dumps({"status": "ok"})
OPENAPI_DOCUMENT = resources.files("oai_gateway").joinpath("openapi.json").read_bytes()

# The body check of each generation operation; a new one (responses) adds a line.
GENERATION_REQUESTS: Mapping[Operation, Callable[[Json], requests.RequestFacts]] = {
    Operation.CHAT: requests.chat_request,
    Operation.COMPLETIONS: requests.completion_request,
    Operation.RESPONSES: responses_request.facts,
}

# -- health, metrics, the OpenAPI document ----------------------------------------------------


async def health(services: Services, exchange: Exchange) -> None:
    await exchange.respond.json(200, HEALTHY)


async def readiness(services: Services, exchange: Exchange) -> None:
    problems = await services.registry.readiness()
    ready = any(problem is None for problem in problems.values())
    upstreams = upstream_readiness(services.registry)
    body = {
        "status": "ready" if ready else "unavailable",
        "providers": {
            name: {"ready": problem is None, "detail": problem}
            | ({"upstreams": upstreams[name]} if name in upstreams else {})
            for name, problem in problems.items()
        },
    }
    await exchange.respond.json(200 if ready else 503, orjson.dumps(body))


async def metrics(services: Services, exchange: Exchange) -> None:
    body = services.metrics.exposition()
    await exchange.respond.raw(200, body, [(b"content-type", CONTENT_TYPE)])


async def openapi(services: Services, exchange: Exchange) -> None:
    await exchange.respond.json(200, OPENAPI_DOCUMENT)


# -- the data plane ---------------------------------------------------------------------------


async def serve(
    services: Services,
    exchange: Exchange,
    work: Callable[[UpstreamCall], Awaitable[None]],
    *,
    body: Json | None = None,
    facts: requests.RequestFacts | None = None,
) -> None:
    """The one path of every request under /{provider}/v1 once its body is checked: the model
    allow-list, admission, the work (cancellable by the client), and settlement."""
    context = exchange.context
    if facts is not None:
        context.model = facts.model
        context.stream = facts.stream
        ensure_model_allowed(exchange.provider, facts.model)
    await services.enforcement.admit(exchange, body)
    try:
        deadline = time.monotonic() + exchange.provider.spec.timeout_s
        call = UpstreamCall(context.request_id, deadline, context)
        await guarded(exchange, lambda: work(call))
    finally:
        await services.enforcement.settle(exchange)


async def _body(services: Services, exchange: Exchange) -> Json:
    return requests.parse_object(
        await read_body(exchange.scope, exchange.receive, services.max_body)
    )


async def _answer(exchange: Exchange, answer: Awaitable[Answer]) -> None:
    result = await answer
    if result.usage is not None:
        exchange.context.usage = result.usage
    await exchange.respond.json(200, result.body)


async def _relay(exchange: Exchange, opened: Awaitable[ChunkStream]) -> None:
    stream = await opened
    respond, context = exchange.respond, exchange.context
    try:
        await respond.start_stream()
        async for piece in stream:
            if context.first_chunk_s is None:
                context.first_chunk_s = context.elapsed_s()
            await respond.stream_piece(piece)
        await respond.end_stream()
    finally:
        context.usage = stream.usage
        await stream.aclose()


async def generate(services: Services, exchange: Exchange) -> None:
    """Chat and legacy completions (and any generation operation in GENERATION_REQUESTS)."""
    operation = exchange.route.operation
    assert operation is not None
    body = await _body(services, exchange)
    facts = GENERATION_REQUESTS[operation](body)
    provider = exchange.provider

    async def work(call: UpstreamCall) -> None:
        if facts.stream:
            await _relay(exchange, provider.stream(call, operation, body, facts))
        else:
            await _answer(exchange, provider.generate(call, operation, body, facts))

    await serve(services, exchange, work, body=body, facts=facts)


async def embeddings(services: Services, exchange: Exchange) -> None:
    body = await _body(services, exchange)
    facts = requests.embeddings_request(body)

    async def work(call: UpstreamCall) -> None:
        await _answer(exchange, exchange.provider.embed(call, body, facts))

    await serve(services, exchange, work, body=body, facts=facts)


async def list_models(services: Services, exchange: Exchange) -> None:
    async def work(call: UpstreamCall) -> None:
        models = await exchange.provider.list_models(call)
        allowed = exchange.provider.spec.models
        if allowed is not None:
            models = [m for m in models if m["id"] in allowed]
        body = orjson.dumps({"object": "list", "data": models})
        await exchange.respond.json(200, body)

    await serve(services, exchange, work)


async def retrieve_model(services: Services, exchange: Exchange) -> None:
    model_id = exchange.params["model"]

    async def work(call: UpstreamCall) -> None:
        model = await exchange.provider.retrieve_model(call, model_id)
        await exchange.respond.json(200, orjson.dumps(model))

    await serve(services, exchange, work, facts=requests.RequestFacts(model_id))


# -- the Responses API's stored responses (SPEC §9) and its WebSocket mode ---------------------

_RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


def _stored(suffix: str) -> Handler:
    """A handler relaying one stored-response route: `/responses/{id}` plus `suffix`."""

    async def handler(services: Services, exchange: Exchange) -> None:
        ident = exchange.params["id"]
        if not _RESPONSE_ID.fullmatch(ident):
            raise RouteNotFoundError(f"No response with id '{ident[:200]}'.", param="response_id")
        query = exchange.scope.get("query_string", b"").decode("latin-1")
        path = f"/{ident}{suffix}" + (f"?{query}" if query else "")
        method = exchange.scope["method"]

        async def work(call: UpstreamCall) -> None:
            answer = await exchange.provider.stored_response(call, method, path)
            await exchange.respond.json(200, answer.body)

        await serve(services, exchange, work)

    return handler


stored_response = _stored("")
cancel_response = _stored("/cancel")
response_input_items = _stored("/input_items")


async def responses_websocket(services: Services, exchange: Exchange) -> None:
    """Responses over a WebSocket (Codex tries one first) is not served: a plain 404, after
    which clients use HTTPS."""
    raise RouteNotFoundError(
        "The gateway serves the Responses API over HTTPS only (POST .../v1/responses); "
        "WebSocket mode is not available."
    )
