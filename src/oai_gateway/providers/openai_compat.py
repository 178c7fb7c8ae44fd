"""Any OpenAI-compatible server (vLLM, llama.cpp, LM Studio, OpenAI, Groq, …): kind `openai`.

The other kinds build on this one and override only the hooks where their upstream differs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any, ClassVar

import orjson

from oai_gateway.config.settings import ProviderSpec
from oai_gateway.errors import (
    GatewayError,
    ModelNotFoundError,
    UpstreamError,
    upstream_status_error,
)
from oai_gateway.observability.redact import Redactor
from oai_gateway.providers.base import CallContext, ChunkStream, Json, Operation
from oai_gateway.providers.quirks import NO_QUIRKS, Quirks, apply_quirks
from oai_gateway.upstream.client import UpstreamClient, UpstreamResponse, json_headers
from oai_gateway.wire import normalize
from oai_gateway.wire.requests import RequestFacts
from oai_gateway.wire.sse import DONE, DONE_EVENT, SSEParser, SSEProtocolError, frame

READY_TIMEOUT_S = 5.0


class _NullTimer:
    """Readiness checks are not part of any request's timing."""

    upstream_s = 0.0


class OpenAICompatProvider:
    """Forwards requests faithfully and normalises answers to OpenAI's exact shapes."""

    kind_label: ClassVar[str] = "OpenAI-compatible upstream"
    api_prefix: ClassVar[str] = ""  # the spec's base URL already ends in /v1
    unsupported: frozenset[Operation] = frozenset()
    regenerate_ids: ClassVar[bool] = False
    # The generic pass-through: whatever the client sends is the upstream's to judge.
    quirks: ClassVar[Quirks] = NO_QUIRKS

    def __init__(self, spec: ProviderSpec, redactor: Redactor) -> None:
        self.spec = spec
        self._redactor = redactor
        self.label = f"{self.kind_label} '{spec.name}' at {spec.base_url}"
        key = spec.api_key.get_secret_value() if spec.api_key else None
        self.client = UpstreamClient(
            base_url=spec.base_url,
            headers=json_headers(key, spec.headers),
            timeout_s=spec.timeout_s,
            label=self.label,
            unreachable_hint=self._unreachable_hint(),
        )

    def _unreachable_hint(self) -> str:
        if self.spec.base_url_env:
            return f"start it or set {self.spec.base_url_env}"
        return f"start it or fix base_url of provider '{self.spec.name}' in the providers file"

    def _key_hint(self) -> str:
        if self.spec.api_key_env and self.spec.api_key:
            return f"check the key in {self.spec.api_key_env}"
        if self.spec.api_key_env:
            return f"set {self.spec.api_key_env}"
        return f"give provider '{self.spec.name}' a key with api_key_env in the providers file"

    async def start(self) -> None:
        await self.client.start()

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- upstream calls -------------------------------------------------------------------

    def _status_error(self, response: UpstreamResponse, body: bytes) -> GatewayError:
        return upstream_status_error(
            label=self.label,
            key_hint=self._key_hint(),
            status=response.status,
            body=body,
            headers=response.headers,
            redactor=self._redactor,
        )

    async def _call(self, ctx: CallContext, method: str, path: str, body: Json | None) -> Any:
        return self._parse(await self._call_bytes(ctx, method, path, body))

    async def _call_bytes(
        self, ctx: CallContext, method: str, path: str, body: Json | None
    ) -> bytes:
        """The body of a successful upstream answer, as it came."""
        response = await self.client.request(
            method,
            path,
            body=None if body is None else orjson.dumps(body),
            request_id=ctx.request_id,
            timer=ctx.timer,
            deadline=ctx.deadline,
        )
        raw = await response.read()
        if response.status >= 400:
            raise self._status_error(response, raw)
        return raw

    def _parse(self, raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{self.label} sent a response that is not valid JSON.") from None

    async def _call_object(
        self, ctx: CallContext, method: str, path: str, body: Json | None
    ) -> Json:
        answer = await self._call(ctx, method, path, body)
        if not isinstance(answer, dict):
            raise UpstreamError(f"{self.label} sent JSON that is not an object.")
        return answer

    async def _open_stream(self, ctx: CallContext, path: str, body: Json) -> UpstreamResponse:
        response = await self.client.request(
            "POST",
            path,
            body=orjson.dumps(body),
            request_id=ctx.request_id,
            timer=ctx.timer,
            stream=True,
        )
        if response.status >= 400:
            raise self._status_error(response, await response.read())
        if response.content_type != "text/event-stream":
            response.close()
            raise UpstreamError(
                f"{self.label} answered a streaming request with {response.content_type or 'no'} "
                "content instead of an event stream."
            )
        return response

    async def _relay(
        self,
        response: UpstreamResponse,
        normalizer: normalize.ChunkNormalizer,
        *,
        finish: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        """Upstream SSE to normalised, framed events, one batch per upstream read.

        Events that arrived together leave together (one write instead of one per event), and
        nothing waits for more input. With `finish`, the usage chunk and `data: [DONE]` end the
        last batch. A stream without `[DONE]` is an error.
        """
        parser = SSEParser()
        try:
            async for part in response.chunks():
                batch: list[bytes] = []
                failure: UpstreamError | None = None
                complete = False
                try:
                    for event, data in parser.feed(part):
                        if data == DONE:
                            complete = True
                            break
                        shaped = normalizer.chunk(self._event_object(event, data))
                        if shaped is not None:
                            batch.append(frame(shaped))
                except (normalize.UpstreamStreamError, SSEProtocolError, UpstreamError) as exc:
                    failure = self._stream_failure(exc)
                if complete and finish:
                    final = normalizer.usage_chunk()
                    if final is not None:
                        batch.append(frame(final))
                    batch.append(DONE_EVENT)
                if batch:
                    yield b"".join(batch)
                if failure is not None:
                    raise failure
                if complete:
                    return
        finally:
            response.close()
        raise UpstreamError(f"{self.label} ended the stream before it was complete.")

    def _stream_failure(self, exc: Exception) -> UpstreamError:
        if isinstance(exc, UpstreamError):
            return exc
        if isinstance(exc, SSEProtocolError):
            return UpstreamError(f"{self.label} sent an invalid event stream: {exc}.")
        message = self._redactor.redact(str(exc))
        return UpstreamError(f"{self.label} failed mid-stream: {message}")

    def _event_object(self, event: bytes, data: bytes) -> Json:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{self.label} sent a stream event that is not JSON.") from None
        if not isinstance(chunk, dict):
            raise UpstreamError(f"{self.label} sent a stream event that is not an object.")
        if event == b"error" and "error" not in chunk:
            chunk = {"error": chunk}
        return chunk

    async def _stream(
        self, ctx: CallContext, path: str, body: Json, facts: RequestFacts, *, chat: bool
    ) -> ChunkStream:
        response = await self._open_stream(ctx, path, body)
        normalizer = normalize.ChunkNormalizer(
            chat=chat,
            model=facts.model,
            include_usage=facts.include_usage,
            ident=self._ident(chat),
        )
        return ChunkStream(self._relay(response, normalizer), response.close, normalizer)

    def _ident(self, chat: bool) -> str | None:
        return normalize.new_id("chatcmpl" if chat else "cmpl") if self.regenerate_ids else None

    # -- hooks for kinds whose upstream differs ---------------------------------------------

    def supported(self, body: Json, operation: Operation) -> Json:
        """The body without what the upstream cannot honour, or a 400 before any upstream call."""
        return apply_quirks(
            body,
            self.quirks.rules(operation),
            provider=self.spec.name,
            kind_label=self.kind_label,
            drop_unsupported=self.spec.drop_unsupported_params,
        )

    def prepare_chat(self, body: Json) -> Json:
        return body

    def prepare_completion(self, body: Json) -> Json:
        return body

    def prepare_embeddings(self, body: Json, facts: RequestFacts) -> Json:
        return body

    # -- the Provider protocol --------------------------------------------------------------

    async def check_ready(self) -> str | None:
        try:
            await self.list_models_raw(self._ready_context())
        except GatewayError as exc:
            return exc.message
        return None

    def _ready_context(self) -> CallContext:
        return CallContext("readiness-check", time.monotonic() + READY_TIMEOUT_S, _NullTimer())

    async def list_models_raw(self, ctx: CallContext) -> list[Json]:
        answer = await self._call_object(ctx, "GET", self.api_prefix + "/models", None)
        data = answer.get("data") or []
        if not isinstance(data, list):
            raise UpstreamError(f"{self.label} sent a model list without a `data` array.")
        owner = self.spec.name
        return [m for raw in data if (m := normalize.model_object(raw, owner=owner)) is not None]

    async def list_models(self, ctx: CallContext) -> list[Json]:
        return await self.list_models_raw(ctx)

    async def retrieve_model(self, ctx: CallContext, model_id: str) -> Json:
        # Looked up in the list rather than at /models/{id}: ids may hold `/` and `:`, and a
        # crafted id must never become a different upstream path.
        for model in await self.list_models(ctx):
            if model["id"] == model_id:
                return model
        raise ModelNotFoundError(
            f"The model '{model_id}' does not exist at provider '{self.spec.name}'."
        )

    async def create_embeddings(self, ctx: CallContext, body: Json, facts: RequestFacts) -> Json:
        path = self.api_prefix + "/embeddings"
        body = self.prepare_embeddings(self.supported(body, Operation.EMBEDDINGS), facts)
        raw = await self._call_bytes(ctx, "POST", path, body)
        exact = normalize.exact_embeddings(raw, count=facts.input_count, encoding=facts.encoding)
        if exact is not None:
            return exact
        answer = self._parse(raw)
        if not isinstance(answer, dict):
            raise UpstreamError(f"{self.label} sent JSON that is not an object.")
        return normalize.embeddings(
            answer, model=facts.model, count=facts.input_count, encoding=facts.encoding
        )

    async def create_completion(self, ctx: CallContext, body: Json, facts: RequestFacts) -> Json:
        path = self.api_prefix + "/completions"
        body = self.prepare_completion(self.supported(body, Operation.COMPLETIONS))
        answer = await self._call_object(ctx, "POST", path, body)
        return normalize.text_completion(answer, model=facts.model, ident=self._ident(False))

    async def stream_completion(
        self, ctx: CallContext, body: Json, facts: RequestFacts
    ) -> ChunkStream:
        path = self.api_prefix + "/completions"
        body = self.prepare_completion(self.supported(body, Operation.COMPLETIONS))
        return await self._stream(ctx, path, body, facts, chat=False)

    async def create_chat_completion(
        self, ctx: CallContext, body: Json, facts: RequestFacts
    ) -> Json:
        path = self.api_prefix + "/chat/completions"
        body = self.prepare_chat(self.supported(body, Operation.CHAT))
        answer = await self._call_object(ctx, "POST", path, body)
        return normalize.chat_completion(answer, model=facts.model, ident=self._ident(True))

    async def stream_chat_completion(
        self, ctx: CallContext, body: Json, facts: RequestFacts
    ) -> ChunkStream:
        path = self.api_prefix + "/chat/completions"
        body = self.prepare_chat(self.supported(body, Operation.CHAT))
        return await self._stream(ctx, path, body, facts, chat=True)


def developer_as_system(body: Json) -> Json:
    """Upstreams without the `developer` role get it as `system`, which is what it replaces."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and m.get("role") == "developer" for m in messages
    ):
        return body
    fixed = [
        {**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m
        for m in messages
    ]
    return {**body, "messages": fixed}
