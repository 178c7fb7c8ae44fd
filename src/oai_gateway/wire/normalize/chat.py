"""Chat completions: the whole answer, and each streamed chunk's choices (`CHAT_CHUNKS`)."""

from __future__ import annotations

from typing import Any

from oai_gateway.wire.normalize.common import Json, choices, envelope, index, pick

_CHOICE_KEYS = frozenset({"index", "message", "finish_reason", "logprobs"})
_MESSAGE_KEYS = frozenset(
    {"role", "content", "refusal", "tool_calls", "annotations", "audio", "function_call"}
)
_CHUNK_CHOICE_KEYS = frozenset({"index", "delta", "finish_reason", "logprobs"})
_DELTA_KEYS = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})


def _message(message: Any) -> Json:
    out = pick(message, _MESSAGE_KEYS) if isinstance(message, dict) else {}
    out["role"] = "assistant"
    out.setdefault("content", None)
    out.setdefault("refusal", None)
    return out


def chat_logprobs(value: Any) -> Json | None:
    """`{content, refusal}`, both required by the spec; some servers send only `content`."""
    if not isinstance(value, dict):
        return None
    return {"content": value.get("content"), "refusal": value.get("refusal")}


def chat_completion(obj: Json, *, model: str, ident: str | None = None) -> Json:
    out = envelope(obj, "chat.completion", model, ident)
    shaped = []
    for position, choice in enumerate(choices(obj)):
        fixed = pick(choice, _CHOICE_KEYS)
        fixed["index"] = index(choice, position)
        fixed["message"] = _message(choice.get("message"))
        if fixed.get("finish_reason") is None:
            fixed["finish_reason"] = "tool_calls" if fixed["message"].get("tool_calls") else "stop"
        fixed["logprobs"] = chat_logprobs(fixed.get("logprobs"))
        shaped.append(fixed)
    out["choices"] = shaped
    return out


class ChatChunks:
    """The chunk strategy of chat streams: deltas, the role only in each choice's first one."""

    object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl"
    # With include_usage, OpenAI sends `usage: null` on every chat chunk before the last.
    null_usage = True

    def choice(self, choice: Json, position: int, roles: set[int]) -> Json:
        fixed = pick(choice, _CHUNK_CHOICE_KEYS)
        at = fixed["index"] = index(choice, position)
        delta = choice.get("delta")
        delta = pick(delta, _DELTA_KEYS) if isinstance(delta, dict) else {}
        if "role" in delta:
            if at in roles:
                del delta["role"]
            else:
                roles.add(at)
        fixed["delta"] = delta
        fixed.setdefault("finish_reason", None)
        if "logprobs" in fixed:
            fixed["logprobs"] = chat_logprobs(fixed["logprobs"])
        return fixed


CHAT_CHUNKS = ChatChunks()
