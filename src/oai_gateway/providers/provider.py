"""`DialectProvider`: the one `Provider` implementation, a kind's `Dialect` over the shared
`Transport`. What differs between kinds is data in their dialect, never an override here."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from oai_gateway.config.settings import ProviderSpec
from oai_gateway.errors import (
    GatewayError,
    ModelNotFoundError,
    UnsupportedOperationError,
    UpstreamError,
)
from oai_gateway.observability.redact import Redactor
from oai_gateway.providers import fanout, relay, responses
from oai_gateway.providers.base import ChunkStream, Json, Operation, UpstreamCall
from oai_gateway.providers.dialect import Dialect, Endpoint
from oai_gateway.providers.quirks import apply_quirks
from oai_gateway.providers.rewrites import usage_reported
from oai_gateway.providers.transport import Transport
from oai_gateway.upstream.client import UpstreamResponse
from oai_gateway.wire.answer import Answer
from oai_gateway.wire.normalize.common import new_id
from oai_gateway.wire.normalize.embeddings import embeddings, exact_embeddings
from oai_gateway.wire.normalize.stream import ChunkNormalizer
from oai_gateway.wire.requests import RequestFacts

# Streams of chat chunks and text completions, whose usage comes only when asked for.
_CHUNKED = frozenset({Operation.CHAT, Operation.COMPLETIONS})

READY_TIMEOUT_S = 5.0


class _NullTimer:
    """Readiness checks are not part of any request's timing."""

    upstream_s = 0.0


class DialectProvider:
    """Forwards requests faithfully and normalises answers to OpenAI's exact shapes."""

    def __init__(self, spec: ProviderSpec, redactor: Redactor, dialect: Dialect) -> None:
        self.spec = spec
        self.dialect = dialect
        off = {Operation.RESPONSES} if spec.responses_mode == "off" else set()
        self.unsupported = dialect.unsupported | off
        self.transport = Transport(spec, redactor, dialect.label_for(spec))
        self.label = self.transport.label

    async def start(self) -> None:
        await self.transport.start()

    async def aclose(self) -> None:
        await self.transport.aclose()

    def supported(self, body: Json, operation: Operation) -> Json:
        """The body as the upstream takes it: fields it cannot honour dropped (or a 400 before
        any upstream call), then the dialect's rewrite."""
        body = apply_quirks(
            body,
            self.dialect.quirks.rules(operation),
            provider=self.spec.name,
            kind_label=self.dialect.kind_label,
            drop_unsupported=self.spec.drop_unsupported_params,
        )
        return self.dialect.rewrite(operation, body, self.spec)

    # -- models and readiness ---------------------------------------------------------------

    async def check_ready(self) -> str | None:
        call = UpstreamCall("readiness-check", time.monotonic() + READY_TIMEOUT_S, _NullTimer())
        try:
            if self.dialect.ready_path is None:
                await self.list_models(call)
            else:
                await self.transport.call(call, "GET", self.dialect.ready_path, None)
        except GatewayError as exc:
            return exc.message
        return None

    async def list_models(self, call: UpstreamCall) -> list[Json]:
        answer = await self.transport.call_object(call, "GET", self.dialect.models_path, None)
        try:
            return self.dialect.parse_models(answer, self.spec.name)
        except ValueError as exc:
            raise UpstreamError(f"{self.label} sent {exc}.") from None

    async def retrieve_model(self, call: UpstreamCall, model_id: str) -> Json:
        # Looked up in the list rather than at /models/{id}: ids may hold `/` and `:`, and a
        # crafted id must never become a different upstream path.
        models: dict[str, Json] = {}
        for model in await self.list_models(call):
            models.setdefault(model["id"], model)
        for alias in self.dialect.model_aliases(model_id):
            if alias in models:
                return models[alias]
        raise ModelNotFoundError(
            f"The model '{model_id}' does not exist at provider '{self.spec.name}'."
        )

    # -- embeddings and generation ----------------------------------------------------------

    async def embed(self, call: UpstreamCall, body: Json, facts: RequestFacts) -> Answer:
        path = self.dialect.api_prefix + self.dialect.embeddings_path
        body = self.supported(body, Operation.EMBEDDINGS)
        raw = await self.transport.call_bytes(call, "POST", path, body)
        exact = exact_embeddings(raw, count=facts.input_count, encoding=facts.encoding)
        if exact is not None:
            return exact
        answer = self.transport.parse_object(raw)
        return Answer.of(
            embeddings(answer, model=facts.model, count=facts.input_count, encoding=facts.encoding)
        )

    def endpoint(self, operation: Operation) -> Endpoint:
        endpoint = self.dialect.endpoints.get(operation)
        if endpoint is None:
            raise UnsupportedOperationError(
                f"Provider '{self.spec.name}' does not support {operation}."
            )
        return endpoint

    def _fans_out(self, operation: Operation) -> bool:
        return self.dialect.one_prompt_per_call and operation is Operation.COMPLETIONS

    async def generate(
        self, call: UpstreamCall, operation: Operation, body: Json, facts: RequestFacts
    ) -> Answer:
        if operation is Operation.RESPONSES:
            return await responses.generate(self, call, body, facts)
        endpoint = self.endpoint(operation)
        body = self.supported(body, operation)
        if self._fans_out(operation):
            return Answer.of(await fanout.generate(self, call, endpoint, body, facts))
        return Answer.of(await self.shaped(call, endpoint, body, facts))

    async def shaped(
        self, call: UpstreamCall, endpoint: Endpoint, body: Json, facts: RequestFacts
    ) -> Json:
        """One upstream call for an already supported body, its answer in OpenAI's shape."""
        path = self.dialect.api_prefix + endpoint.path
        answer = await self.transport.call_object(call, "POST", path, body)
        return endpoint.shape(answer, model=facts.model, ident=self.ident(endpoint))

    def ident(self, endpoint: Endpoint) -> str | None:
        """The id the gateway gives the answer, when the upstream's cannot be trusted."""
        return new_id(endpoint.id_prefix) if self.dialect.regenerate_ids else None

    async def stream(
        self, call: UpstreamCall, operation: Operation, body: Json, facts: RequestFacts
    ) -> ChunkStream:
        if operation is Operation.RESPONSES:
            return await responses.stream(self, call, body, facts)
        endpoint = self.endpoint(operation)
        body = self.supported(body, operation)
        if operation in _CHUNKED:
            body = usage_reported(body)
        if self._fans_out(operation):
            return await fanout.stream(self, call, endpoint, body, facts)
        return self.relayed(await self.open_stream(call, endpoint, body), endpoint, facts)

    async def stored_response(self, call: UpstreamCall, method: str, suffix: str) -> Answer:
        return await responses.stored(self, call, method, suffix)

    def relayed(
        self, response: UpstreamResponse, endpoint: Endpoint, facts: RequestFacts
    ) -> ChunkStream:
        normalizer = ChunkNormalizer(
            endpoint.chunks,
            model=facts.model,
            include_usage=facts.include_usage,
            ident=self.ident(endpoint),
        )
        chunks = self.frames(response, normalizer, finish=True)
        return ChunkStream(chunks, response.close, lambda: normalizer.usage)

    async def open_stream(
        self, call: UpstreamCall, endpoint: Endpoint, body: Json
    ) -> UpstreamResponse:
        return await self.transport.open_stream(call, self.dialect.api_prefix + endpoint.path, body)

    def frames(
        self, response: UpstreamResponse, normalizer: ChunkNormalizer, *, finish: bool
    ) -> AsyncGenerator[bytes, None]:
        return relay.frames(
            response, normalizer, label=self.label, redactor=self.transport.redactor, finish=finish
        )
