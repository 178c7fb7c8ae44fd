"""Light normalisation of upstream answers to OpenAI's exact shapes (SPEC §6, §7).

Works on parsed dicts, never through a model layer: keep the keys OpenAI defines, fill the
required ones an upstream omits with their null value, drop the extras (`timings`, `time_info`,
`reasoning`, …) that strict clients reject.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any

import msgspec

from oai_gateway.errors import UpstreamError
from oai_gateway.wire.answer import Answer

Json = dict[str, Any]

_CHAT_KEYS = frozenset(
    {"id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier"}
)
_CHAT_CHOICE_KEYS = frozenset({"index", "message", "finish_reason", "logprobs"})
_MESSAGE_KEYS = frozenset(
    {"role", "content", "refusal", "tool_calls", "annotations", "audio", "function_call"}
)
_CHUNK_CHOICE_KEYS = frozenset({"index", "delta", "finish_reason", "logprobs"})
_DELTA_KEYS = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})
_TEXT_CHOICE_KEYS = frozenset({"index", "text", "finish_reason", "logprobs"})
_USAGE_KEYS = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "completion_tokens_details",
        "prompt_tokens_details",
    }
)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _pick(source: Json, keys: frozenset[str]) -> Json:
    return {k: v for k, v in source.items() if k in keys}


def usage(value: Any) -> Json | None:
    """A CompletionUsage with its three counts, or None when the upstream sent none usable."""
    if not isinstance(value, dict):
        return None
    counts = _pick(value, _USAGE_KEYS)
    prompt = counts.get("prompt_tokens")
    completion = counts.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    counts["completion_tokens"] = completion
    if not isinstance(counts.get("total_tokens"), int):
        counts["total_tokens"] = prompt + completion
    return counts


def _envelope(obj: Json, keys: frozenset[str], kind: str, model: str, ident: str | None) -> Json:
    out = _pick(obj, keys)
    out["object"] = kind
    if ident is not None or not isinstance(out.get("id"), str):
        out["id"] = ident or new_id("chatcmpl" if kind.startswith("chat") else "cmpl")
    if not isinstance(out.get("created"), int):
        out["created"] = int(time.time())
    if not isinstance(out.get("model"), str):
        out["model"] = model
    if "usage" in out:
        fixed = usage(out["usage"])
        if fixed is None:
            del out["usage"]
        else:
            out["usage"] = fixed
    return out


def _choices(obj: Json) -> list[Json]:
    choices = obj.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise UpstreamError("The upstream answer has no valid `choices` list.")
    return choices


def _message(message: Any) -> Json:
    out = _pick(message, _MESSAGE_KEYS) if isinstance(message, dict) else {}
    out["role"] = "assistant"
    out.setdefault("content", None)
    out.setdefault("refusal", None)
    return out


def chat_logprobs(value: Any) -> Json | None:
    """`{content, refusal}`, both required by the spec; some servers send only `content`."""
    if not isinstance(value, dict):
        return None
    return {"content": value.get("content"), "refusal": value.get("refusal")}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _alternatives(value: Any) -> dict[str, float] | None:
    """`{token: logprob}` from chat-form `top_logprobs`, skipping entries that are not a pair."""
    if not isinstance(value, list):
        return None
    return {
        a["token"]: a["logprob"]
        for a in value
        if isinstance(a, dict) and isinstance(a.get("token"), str) and _is_number(a.get("logprob"))
    }


def text_logprobs(value: Any) -> Json | None:
    """Legacy completions use `{tokens, token_logprobs, top_logprobs, text_offset}`; servers
    that answer in the chat form (`{content: [{token, logprob, top_logprobs}]}`) are
    translated, since the SDKs read only the legacy keys."""
    if not isinstance(value, dict):
        return None
    entries = value.get("content")
    if "tokens" in value or not isinstance(entries, list):
        return value
    tokens: list[str] = []
    logprobs: list[float | None] = []
    top: list[dict[str, float] | None] = []
    offsets: list[int] = []
    offset = 0
    for entry in entries:
        item = entry if isinstance(entry, dict) else {}
        token = item.get("token")
        token = token if isinstance(token, str) else ""
        logprob = item.get("logprob")
        tokens.append(token)
        logprobs.append(logprob if _is_number(logprob) else None)
        top.append(_alternatives(item.get("top_logprobs")))
        offsets.append(offset)
        offset += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    }


def _index(choice: Json, position: int) -> int:
    """The choice's own index when it is one; clients key choices by it (a dict or set key)."""
    index = choice.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else position


def chat_completion(obj: Json, *, model: str, ident: str | None = None) -> Json:
    out = _envelope(obj, _CHAT_KEYS, "chat.completion", model, ident)
    choices = []
    for position, choice in enumerate(_choices(obj)):
        fixed = _pick(choice, _CHAT_CHOICE_KEYS)
        fixed["index"] = _index(choice, position)
        fixed["message"] = _message(choice.get("message"))
        if fixed.get("finish_reason") is None:
            fixed["finish_reason"] = "tool_calls" if fixed["message"].get("tool_calls") else "stop"
        fixed["logprobs"] = chat_logprobs(fixed.get("logprobs"))
        choices.append(fixed)
    out["choices"] = choices
    return out


def text_completion(obj: Json, *, model: str, ident: str | None = None) -> Json:
    out = _envelope(obj, _CHAT_KEYS, "text_completion", model, ident)
    choices = []
    for position, choice in enumerate(_choices(obj)):
        fixed = _pick(choice, _TEXT_CHOICE_KEYS)
        fixed["index"] = _index(choice, position)
        if not isinstance(fixed.get("text"), str):
            fixed["text"] = ""
        if fixed.get("finish_reason") is None:
            fixed["finish_reason"] = "stop"
        fixed["logprobs"] = text_logprobs(fixed.get("logprobs"))
        choices.append(fixed)
    out["choices"] = choices
    return out


class ChunkNormalizer:
    """Re-shapes one stream's chunks: a stable id and created time, the role only in the first
    delta of each choice, `finish_reason` always present, extras dropped, and usage held back for
    one final `choices: []` chunk that is sent only when the client asked for it."""

    __slots__ = (
        "_chat",
        "_choice_index",
        "_created",
        "_id",
        "_include_usage",
        "_model",
        "_roles",
        "usage",
    )

    def __init__(
        self,
        *,
        chat: bool,
        model: str,
        include_usage: bool,
        ident: str | None = None,
        choice_index: int | None = None,
    ) -> None:
        self._chat = chat
        self._choice_index = choice_index  # forces every choice's index (merged streams)
        self._model = model
        self._include_usage = include_usage
        self._id = ident
        self._created: int | None = None
        self._roles: set[int] = set()
        self.usage: Json | None = None

    def chunk(self, obj: Json) -> Json | None:
        """The chunk to send for an upstream chunk, or None when nothing is left of it."""
        if obj.get("error"):
            raise UpstreamStreamError(obj["error"])
        found = usage(obj.get("usage"))
        if found is not None:
            self.usage = found
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            return None
        if self._id is None:
            upstream_id = obj.get("id")
            self._id = upstream_id if isinstance(upstream_id, str) else new_id("chatcmpl")
        if self._created is None:
            created = obj.get("created")
            self._created = created if isinstance(created, int) else int(time.time())
        model = obj.get("model")
        if isinstance(model, str) and model:
            self._model = model  # the final usage chunk names the model the chunks named
        out: Json = {
            "id": self._id,
            "object": "chat.completion.chunk" if self._chat else "text_completion",
            "created": self._created,
            "model": self._model,
            "choices": [self._choice(c, i) for i, c in enumerate(choices) if isinstance(c, dict)],
        }
        fingerprint = obj.get("system_fingerprint")
        if isinstance(fingerprint, str):
            out["system_fingerprint"] = fingerprint
        if self._include_usage and self._chat:
            out["usage"] = None
        return out

    def _choice(self, choice: Json, position: int) -> Json:
        if self._choice_index is not None:
            choice = {**choice, "index": self._choice_index}
        if not self._chat:
            fixed = _pick(choice, _TEXT_CHOICE_KEYS)
            fixed["index"] = _index(choice, position)
            if not isinstance(fixed.get("text"), str):
                fixed["text"] = ""
            fixed["logprobs"] = text_logprobs(fixed.get("logprobs"))
            fixed.setdefault("finish_reason", None)
            return fixed
        fixed = _pick(choice, _CHUNK_CHOICE_KEYS)
        index = fixed["index"] = _index(choice, position)
        delta = choice.get("delta")
        delta = _pick(delta, _DELTA_KEYS) if isinstance(delta, dict) else {}
        if "role" in delta:
            if index in self._roles:
                del delta["role"]
            else:
                self._roles.add(index)
        fixed["delta"] = delta
        fixed.setdefault("finish_reason", None)
        if "logprobs" in fixed:
            fixed["logprobs"] = chat_logprobs(fixed["logprobs"])
        return fixed

    def usage_chunk(self) -> Json | None:
        """The final usage-only chunk, when the client asked for it and the upstream reported it."""
        if not self._include_usage or self.usage is None:
            return None
        return {
            "id": self._id or new_id("chatcmpl" if self._chat else "cmpl"),
            "object": "chat.completion.chunk" if self._chat else "text_completion",
            "created": self._created or int(time.time()),
            "model": self._model,
            "choices": [],
            "usage": self.usage,
        }


class UpstreamStreamError(Exception):
    """The upstream reported an error inside its stream."""

    def __init__(self, payload: Any) -> None:
        message = payload.get("message") if isinstance(payload, dict) else payload
        super().__init__(str(message or "the upstream reported an error mid-stream"))


def encode_base64(vector: list[float]) -> str:
    """OpenAI's base64 embedding: packed little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def decode_base64(text: str) -> list[float]:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error: not base64
        raise UpstreamError("The upstream returned an embedding that is not base64.") from None
    if len(raw) % 4:
        raise UpstreamError("The upstream returned a base64 embedding of partial float32 values.")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


class _ExactUsage(msgspec.Struct, forbid_unknown_fields=True):
    prompt_tokens: int
    total_tokens: int


class _ExactEmbedding(msgspec.Struct, forbid_unknown_fields=True):
    object: str
    index: int
    embedding: msgspec.Raw  # located and syntax-checked, never converted


class _ExactEmbeddingList(msgspec.Struct, forbid_unknown_fields=True):
    object: str
    data: list[_ExactEmbedding]
    model: str
    usage: _ExactUsage


_EXACT_EMBEDDINGS = msgspec.json.Decoder(_ExactEmbeddingList)


def exact_embeddings(raw: bytes, *, count: int, encoding: str) -> Answer | None:
    """The upstream's answer as it is, when `embeddings()` would change nothing in it.

    A megabyte of float vectors costs several milliseconds to parse into Python floats and as
    much again to serialise; this check reads the structure and skips over the vectors, so an
    answer already in OpenAI's exact shape goes out as received. None means: normalise it.
    """
    try:
        answer = _EXACT_EMBEDDINGS.decode(raw)
    except msgspec.DecodeError:  # not exact (or not JSON): the full path decides what it is
        return None
    opener = b"[" if encoding == "float" else b'"'
    exact = (
        answer.object == "list"
        and bool(answer.model)
        and len(answer.data) == count
        and all(
            item.object == "embedding"
            and item.index == position
            and memoryview(item.embedding)[:1] == opener
            for position, item in enumerate(answer.data)
        )
    )
    if not exact:
        return None
    usage = answer.usage
    return Answer(raw, {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens})


def embeddings(obj: Json, *, model: str, count: int, encoding: str) -> Json:
    """One embedding per input in input order, in the encoding the client asked for."""
    data = obj.get("data")
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else 0
        raise UpstreamError(f"The upstream returned {got} embeddings for {count} inputs.")
    items: list[Json] = []
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise UpstreamError("The upstream returned a malformed embedding.")
        vector = item.get("embedding")
        if encoding == "base64" and isinstance(vector, list):
            vector = encode_base64(vector)
        elif encoding == "float" and isinstance(vector, str):
            vector = decode_base64(vector)
        elif not isinstance(vector, list | str):
            raise UpstreamError("The upstream returned a malformed embedding.")
        index = item.get("index")
        items.append(
            {
                "object": "embedding",
                "index": index if isinstance(index, int) else position,
                "embedding": vector,
            }
        )
    items.sort(key=lambda i: i["index"])
    found = obj.get("usage")
    tokens = found.get("prompt_tokens") if isinstance(found, dict) else None
    tokens = tokens if isinstance(tokens, int) else 0
    total = found.get("total_tokens") if isinstance(found, dict) else None
    name = obj.get("model")
    return {
        "object": "list",
        "data": items,
        "model": name if isinstance(name, str) and name else model,
        "usage": {
            "prompt_tokens": tokens,
            "total_tokens": total if isinstance(total, int) else tokens,
        },
    }


def model_object(obj: Any, *, owner: str) -> Json | None:
    """An OpenAI Model, or None for an entry without an id."""
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not obj["id"]:
        return None
    created = obj.get("created")
    owned_by = obj.get("owned_by")
    return {
        "id": obj["id"],
        "object": "model",
        "created": created if isinstance(created, int) else 0,
        "owned_by": owned_by if isinstance(owned_by, str) and owned_by else owner,
    }
