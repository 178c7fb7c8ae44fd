"""Legacy (text) completions: the whole answer, its logprobs, and streamed choices
(`TEXT_CHUNKS`)."""

from __future__ import annotations

from typing import Any

from oai_gateway.wire import answer_shapes as shapes
from oai_gateway.wire.answer_shapes import is_number
from oai_gateway.wire.normalize.common import (
    Json,
    choices,
    chunk_finish_reason,
    envelope,
    finish_reason,
    index,
    pick,
)

_CHOICE_KEYS = frozenset({"index", "text", "finish_reason", "logprobs"})


def _alternatives(value: Any) -> dict[str, float]:
    """`{token: logprob}` from chat-form `top_logprobs`, skipping entries that are not a pair."""
    if not isinstance(value, list):
        return {}
    return {
        a["token"]: a["logprob"]
        for a in value
        if isinstance(a, dict) and isinstance(a.get("token"), str) and is_number(a.get("logprob"))
    }


def _legacy(value: Json) -> Json | None:
    """Legacy logprobs as sent, without the keys some servers send as null (the spec has them
    as arrays); None when a key holds something else."""
    if not shapes.legacy_logprobs(value):
        return None
    if None in value.values():
        return {k: v for k, v in value.items() if v is not None}
    return value


def text_logprobs(value: Any) -> Json | None:
    """Legacy completions use `{tokens, token_logprobs, top_logprobs, text_offset}`; servers
    that answer in the chat form (`{content: [{token, logprob, top_logprobs}]}`) are
    translated, since the SDKs read only the legacy keys."""
    if not isinstance(value, dict):
        return None
    entries = value.get("content")
    if "tokens" in value or not isinstance(entries, list):
        return _legacy(value)
    tokens: list[str] = []
    logprobs: list[float] = []
    top: list[dict[str, float]] = []
    offsets: list[int] = []
    offset = 0
    for entry in entries:
        item = entry if isinstance(entry, dict) else {}
        token = item.get("token")
        token = token if isinstance(token, str) else ""
        logprob = item.get("logprob")
        if not is_number(logprob):
            return None  # the legacy form has no place for a missing logprob
        tokens.append(token)
        logprobs.append(logprob)
        top.append(_alternatives(item.get("top_logprobs")))
        offsets.append(offset)
        offset += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    }


def text_completion(obj: Json, *, model: str, ident: str | None = None) -> Json:
    out = envelope(obj, "text_completion", model, ident)
    shaped = []
    for position, choice in enumerate(choices(obj)):
        fixed = pick(choice, _CHOICE_KEYS)
        fixed["index"] = index(choice, position)
        if not isinstance(fixed.get("text"), str):
            fixed["text"] = ""
        fixed["finish_reason"] = finish_reason(
            fixed.get("finish_reason"), tool_calls=False, chat=False
        )
        fixed["logprobs"] = text_logprobs(fixed.get("logprobs"))
        shaped.append(fixed)
    out["choices"] = shaped
    return out


class TextChunks:
    """The chunk strategy of legacy completion streams: text choices, no roles."""

    object_name = "text_completion"
    id_prefix = "cmpl"
    null_usage = False

    def choice(self, choice: Json, position: int, roles: set[int]) -> Json:
        fixed = pick(choice, _CHOICE_KEYS)
        fixed["index"] = index(choice, position)
        if not isinstance(fixed.get("text"), str):
            fixed["text"] = ""
        fixed["logprobs"] = text_logprobs(fixed.get("logprobs"))
        fixed["finish_reason"] = chunk_finish_reason(fixed.get("finish_reason"), chat=False)
        return fixed

    def exact(self, choice: Json, roles: set[int]) -> bool:
        return False  # legacy completion streams are rare: every chunk goes through `choice`


TEXT_CHUNKS = TextChunks()
