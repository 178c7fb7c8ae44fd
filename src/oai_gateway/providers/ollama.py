"""Ollama (kind `ollama`): its OpenAI layer at /v1, corrected where it differs from OpenAI.

- the model list comes from the native /api/tags, with real `created` times and owners;
- `max_completion_tokens` (ignored by Ollama) becomes `max_tokens`; `developer` becomes `system`;
- ids are regenerated (Ollama's are `chatcmpl-<0..998>`, not unique);
- several prompts in one legacy completion become one upstream call each, merged back;
- embeddings are always fetched as floats and encoded here, since older servers lack base64;
- token-id inputs, which Ollama cannot take, get a clear 400 instead of its opaque one;
- fields its OpenAI layer silently ignores (reference/ollama.md §4.1, §4.3) are listed below and
  answered with a 400 (or dropped when configured) rather than producing a quietly wrong answer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, ClassVar

from oai_gateway.errors import GatewayError, UnsupportedOperationError
from oai_gateway.providers.base import CallContext, ChunkStream, Json, Operation
from oai_gateway.providers.openai_compat import OpenAICompatProvider, developer_as_system
from oai_gateway.providers.quirks import Fate, FieldRule, Quirks
from oai_gateway.wire import normalize
from oai_gateway.wire.requests import RequestFacts
from oai_gateway.wire.sse import DONE_EVENT, frame

_IGNORED = FieldRule(Fate.IGNORED)

CHAT_RULES: dict[str, FieldRule] = {
    "n": FieldRule(Fate.IGNORED, defaults=(1,), consequence="it always returns one choice"),
    "tool_choice": FieldRule(
        Fate.IGNORED, defaults=("auto",), consequence="the model alone decides on tool calls"
    ),
    "parallel_tool_calls": FieldRule(Fate.IGNORED, defaults=(True,)),
    "logit_bias": FieldRule(Fate.IGNORED, defaults=({},)),
    "user": _IGNORED,
    "metadata": FieldRule(Fate.IGNORED, defaults=({},)),
    "store": FieldRule(Fate.IGNORED, defaults=(False,)),
    "service_tier": FieldRule(Fate.IGNORED, defaults=("auto", "default")),
    "prediction": _IGNORED,
    "modalities": FieldRule(Fate.IGNORED, defaults=(["text"],)),
    "audio": _IGNORED,
    "web_search_options": _IGNORED,
    "functions": _IGNORED,
    "function_call": FieldRule(Fate.IGNORED, defaults=("auto",)),
    "prompt_cache_key": _IGNORED,
    "safety_identifier": _IGNORED,
    "verbosity": FieldRule(Fate.IGNORED, defaults=("medium",)),
}

COMPLETION_RULES: dict[str, FieldRule] = {
    "n": FieldRule(Fate.IGNORED, defaults=(1,), consequence="it always returns one choice"),
    "best_of": FieldRule(Fate.IGNORED, defaults=(1,)),
    "echo": FieldRule(Fate.IGNORED, defaults=(False,), consequence="the prompt is not echoed"),
    "logit_bias": FieldRule(Fate.IGNORED, defaults=({},)),
    "user": _IGNORED,
}

_FRACTION = re.compile(r"(\.\d{6})\d+")


def _timestamp(value: Any) -> int:
    """Ollama's RFC 3339 times carry nanoseconds, which `fromisoformat` does not take."""
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.fromisoformat(_FRACTION.sub(r"\1", value)).timestamp())
    except ValueError:
        return 0


def _model(entry: Any) -> Json | None:
    if not isinstance(entry, dict):
        return None
    name = entry.get("model") or entry.get("name")
    if not isinstance(name, str) or not name:
        return None
    owner, _, _ = name.rpartition("/")
    return {
        "id": name,
        "object": "model",
        "created": _timestamp(entry.get("modified_at")),
        "owned_by": owner or "library",
    }


def _add_usage(total: Json | None, part: Json | None) -> Json | None:
    if part is None:
        return total
    if total is None:
        return dict(part)
    return {
        k: total.get(k, 0) + part.get(k, 0)
        for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    }


class OllamaProvider(OpenAICompatProvider):
    kind_label: ClassVar[str] = "Ollama"
    api_prefix: ClassVar[str] = "/v1"
    regenerate_ids: ClassVar[bool] = True
    quirks: ClassVar[Quirks] = Quirks(
        {Operation.CHAT: CHAT_RULES, Operation.COMPLETIONS: COMPLETION_RULES}
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.label = f"Ollama at {self.spec.base_url}"
        self.client.label = self.label

    async def check_ready(self) -> str | None:
        try:
            await self._call(self._ready_context(), "GET", "/api/version", None)
        except GatewayError as exc:
            return exc.message
        return None

    async def list_models_raw(self, ctx: CallContext) -> list[Json]:
        answer = await self._call_object(ctx, "GET", "/api/tags", None)
        entries = answer.get("models") or []
        if not isinstance(entries, list):
            entries = []
        return [m for entry in entries if (m := _model(entry)) is not None]

    async def retrieve_model(self, ctx: CallContext, model_id: str) -> Json:
        # `llama3.2` and `llama3.2:latest` name the same model in Ollama.
        models = {m["id"]: m for m in await self.list_models(ctx)}
        found = models.get(model_id) or (
            None if ":" in model_id else models.get(model_id + ":latest")
        )
        return found if found is not None else await super().retrieve_model(ctx, model_id)

    def prepare_chat(self, body: Json) -> Json:
        body = developer_as_system(body)
        if "max_completion_tokens" in body:
            body = dict(body)
            limit = body.pop("max_completion_tokens")
            if body.get("max_tokens") is None:
                body["max_tokens"] = limit
        return body

    def prepare_embeddings(self, body: Json, facts: RequestFacts) -> Json:
        self._reject_tokens(body.get("input"), "input")
        fixed = dict(body)
        fixed.pop("encoding_format", None)
        return fixed

    def _reject_tokens(self, value: Any, param: str) -> None:
        if isinstance(value, list) and value and not isinstance(value[0], str):
            raise UnsupportedOperationError(
                f"Provider '{self.spec.name}' (Ollama) does not accept token ids in '{param}'; "
                "send text instead.",
                param=param,
            )

    def _prompts(self, body: Json) -> list[str]:
        prompt = body["prompt"]
        self._reject_tokens(prompt, "prompt")
        return [prompt] if isinstance(prompt, str) else list(prompt)

    async def create_completion(self, ctx: CallContext, body: Json, facts: RequestFacts) -> Json:
        # Judged once, before the prompts fan out into several upstream calls.
        body = self.supported(body, Operation.COMPLETIONS)
        prompts = self._prompts(body)
        if len(prompts) == 1:
            return await super().create_completion(ctx, {**body, "prompt": prompts[0]}, facts)
        answers = await asyncio.gather(
            *(
                super(OllamaProvider, self).create_completion(ctx, {**body, "prompt": p}, facts)
                for p in prompts
            )
        )
        # Built apart from answers[0], which is both the template and one of the parts.
        choices: list[Json] = []
        total: Json | None = None
        for position, answer in enumerate(answers):
            choices.extend({**choice, "index": position} for choice in answer["choices"])
            total = _add_usage(total, answer.get("usage"))
        merged = answers[0]
        merged["choices"] = choices
        if total is not None:
            merged["usage"] = total
        return merged

    async def stream_completion(
        self, ctx: CallContext, body: Json, facts: RequestFacts
    ) -> ChunkStream:
        body = self.supported(body, Operation.COMPLETIONS)
        prompts = self._prompts(body)
        if len(prompts) == 1:
            return await super().stream_completion(ctx, {**body, "prompt": prompts[0]}, facts)
        # Ollama takes one prompt per call: stream them one after another, choice by choice.
        path = self.api_prefix + "/completions"
        first = await self._open_stream(ctx, path, {**body, "prompt": prompts[0]})
        ident = normalize.new_id("cmpl")
        final = normalize.ChunkNormalizer(
            chat=False, model=facts.model, include_usage=facts.include_usage, ident=ident
        )

        async def chunks() -> AsyncIterator[bytes]:
            response = first
            for position, prompt in enumerate(prompts):
                if position:
                    response = await self._open_stream(ctx, path, {**body, "prompt": prompt})
                part = normalize.ChunkNormalizer(
                    chat=False,
                    model=facts.model,
                    include_usage=False,
                    ident=ident,
                    choice_index=position,
                )
                relay = self._relay(response, part, finish=False)
                try:
                    async for batch in relay:
                        yield batch
                finally:
                    await relay.aclose()
                final.usage = _add_usage(final.usage, part.usage)
            last = final.usage_chunk()
            yield (frame(last) if last is not None else b"") + DONE_EVENT

        return ChunkStream(chunks(), first.close, final)
