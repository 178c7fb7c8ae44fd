"""How one provider serves the Responses API (SPEC §9), by its `responses` mode:

- `native`: `POST /responses` (and the stored-response routes) go to the upstream's own
  endpoint; answers and events are put into OpenAI's exact shape where the upstream deviates.
- `translate`: the request becomes a chat completion on the provider's chat endpoint (with the
  kind's own chat quirks applied), the answer a `Response`, the stream Responses events.
- `off`: the router refuses the operation (`Provider.unsupported`).

Usage is reported in the chat form (`prompt_tokens`, …) the access log, metrics and key
accounting read on every route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oai_gateway.errors import RouteNotFoundError
from oai_gateway.providers.base import ChunkStream, Json, Operation, UpstreamCall
from oai_gateway.providers.responses_relay import native_frames, translated_frames
from oai_gateway.wire.answer import Answer
from oai_gateway.wire.normalize.common import usage as chat_usage_counts
from oai_gateway.wire.requests import RequestFacts
from oai_gateway.wire.responses import answer, native, objects, request
from oai_gateway.wire.responses.events import ChatStreamTranslator

if TYPE_CHECKING:
    from oai_gateway.providers.provider import DialectProvider


def chat_usage(usage: Any) -> Json | None:
    """A `ResponseUsage` as the chat usage the gateway counts everywhere."""
    if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
        return None
    inputs, outputs = usage["input_tokens"], usage.get("output_tokens")
    outputs = outputs if isinstance(outputs, int) else 0
    total = usage.get("total_tokens")
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    out: Json = {
        "prompt_tokens": inputs,
        "completion_tokens": outputs,
        "total_tokens": total if isinstance(total, int) else inputs + outputs,
    }
    if isinstance(cached, int):
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def _path(provider: DialectProvider, suffix: str = "") -> str:
    return provider.dialect.api_prefix + "/responses" + suffix


async def generate(
    provider: DialectProvider, call: UpstreamCall, body: Json, facts: RequestFacts
) -> Answer:
    echoed = objects.echoed_fields(body)
    if provider.spec.responses_mode == "native":
        raw = await provider.transport.call_bytes(call, "POST", _path(provider), body)
        shaped = native.answer(raw, model=facts.model, echoed=echoed)
        if isinstance(shaped, Answer):  # already exact: the upstream's bytes
            return Answer(shaped.body, chat_usage(shaped.usage))
        return Answer(Answer.of(shaped).body, chat_usage(shaped.get("usage")))
    chat = _translated(provider, body)
    endpoint = provider.endpoint(Operation.CHAT)
    path = provider.dialect.api_prefix + endpoint.path
    completion = await provider.transport.call_object(call, "POST", path, chat)
    shaped = answer.response(completion, echoed=echoed, model=facts.model)
    return Answer(Answer.of(shaped).body, chat_usage(shaped.get("usage")))


def _translated(provider: DialectProvider, body: Json) -> Json:
    spec = provider.spec
    chat = request.translate(body, drop_unsupported=spec.drop_unsupported_params).chat
    return provider.supported(chat, Operation.CHAT)


async def stream(
    provider: DialectProvider, call: UpstreamCall, body: Json, facts: RequestFacts
) -> ChunkStream:
    echoed = objects.echoed_fields(body)
    transport = provider.transport
    if provider.spec.responses_mode == "native":
        response = await transport.open_stream(call, _path(provider), body)
        normalizer = native.NativeEventNormalizer(model=facts.model, echoed=echoed)
        frames = native_frames(response, normalizer, provider.label)
        return ChunkStream(frames, response.close, lambda: chat_usage(normalizer.usage))
    chat = _translated(provider, body)
    endpoint = provider.endpoint(Operation.CHAT)
    response = await transport.open_stream(call, provider.dialect.api_prefix + endpoint.path, chat)
    translator = ChatStreamTranslator(model=facts.model, echoed=echoed)
    frames = translated_frames(
        response, translator, label=provider.label, redactor=transport.redactor
    )
    return ChunkStream(frames, response.close, lambda: chat_usage_counts(translator.usage))


async def stored(provider: DialectProvider, call: UpstreamCall, method: str, suffix: str) -> Answer:
    """A stored-response route (`GET`/`DELETE /responses/{id}`, `…/cancel`, `…/input_items`):
    relayed as it is in native mode; a translating provider stores nothing to find."""
    if provider.spec.responses_mode != "native":
        raise RouteNotFoundError(
            f"Provider '{provider.spec.name}' translates the Responses API to chat completions "
            "and stores no responses: there is nothing to find by id.",
            param="response_id",
        )
    raw = await provider.transport.call_bytes(call, method, _path(provider, suffix), None)
    return Answer(raw)
