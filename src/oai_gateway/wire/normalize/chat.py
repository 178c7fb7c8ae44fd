"""Chat completions: the whole answer, and each streamed chunk's choices (`CHAT_CHUNKS`)."""

from __future__ import annotations

from typing import Any

from oai_gateway.errors import UpstreamError
from oai_gateway.wire import answer_shapes as shapes
from oai_gateway.wire.answer_shapes import is_text
from oai_gateway.wire.normalize.common import (
    Json,
    choices,
    chunk_finish_reason,
    envelope,
    finish_reason,
    index,
    pick,
    plain_envelope,
)

_CHOICE_KEYS = frozenset({"index", "message", "finish_reason", "logprobs"})
_MESSAGE_KEYS = frozenset(
    {"role", "content", "refusal", "tool_calls", "annotations", "audio", "function_call"}
)
_PLAIN_MESSAGE_KEYS = frozenset({"role", "content", "refusal"})
_CHUNK_CHOICE_KEYS = frozenset({"index", "delta", "finish_reason", "logprobs"})
_DELTA_KEYS = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})
_DELTA_ROLES = frozenset({"developer", "system", "user", "assistant", "tool"})
# What `ChatChunks.exact` accepts as it is: the keys `choice` keeps, all of them present, and a
# delta of text (tool calls and function calls are checked piece by piece, by `choice`).
_EXACT_CHOICE_KEYS = frozenset({"index", "delta", "finish_reason"})
_EXACT_DELTA_KEYS = frozenset({"role", "content", "refusal"})


def _message(message: Any) -> Json:
    out = pick(message, _MESSAGE_KEYS) if isinstance(message, dict) else {}
    out["role"] = "assistant"
    out.setdefault("content", None)
    if not is_text(out["content"]):
        raise UpstreamError("The upstream answer has a message whose content is not text.")
    if not is_text(out.setdefault("refusal", None)):
        out["refusal"] = None
    if "tool_calls" in out and not shapes.tool_calls(out["tool_calls"], chunk=False):
        raise UpstreamError("The upstream answer has malformed tool calls.")
    if "function_call" in out and not shapes.function_call(out["function_call"], complete=True):
        del out["function_call"]
    for key, valid in (("annotations", shapes.citations), ("audio", shapes.audio)):
        if key in out and not valid(out[key]):
            del out[key]
    return out


def _delta(value: Any) -> Json:
    """A stream delta with only OpenAI's keys, each of OpenAI's type."""
    delta = pick(value, _DELTA_KEYS) if isinstance(value, dict) else {}
    if not is_text(delta.get("content")):
        raise UpstreamError("The upstream sent a stream delta whose content is not text.")
    if "tool_calls" in delta and not shapes.tool_calls(delta["tool_calls"], chunk=True):
        raise UpstreamError("The upstream sent malformed tool-call fragments.")
    if not is_text(delta.get("refusal")):
        del delta["refusal"]
    if "role" in delta and not shapes.one_of(delta["role"], _DELTA_ROLES):
        del delta["role"]
    if "function_call" in delta and not shapes.function_call(
        delta["function_call"], complete=False
    ):
        del delta["function_call"]
    return delta


def chat_logprobs(value: Any) -> Json | None:
    """`{content, refusal}`, both required by the spec; some servers send only `content`."""
    if not isinstance(value, dict):
        return None
    return {key: _token_logprobs(value.get(key)) for key in ("content", "refusal")}


def _token_logprobs(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) and all(map(shapes.token_logprob, value)) else None


def _as_sent(obj: Json) -> Json | None:
    """What `_repaired` gives, for the usual answer that needs no repair (text-only messages,
    valid indexes and finish reasons, no logprobs), with the checks inline and `type(...) is`
    the exact JSON types; None for any other answer, which `_repaired` then shapes."""
    out = plain_envelope(obj, "chat.completion")
    found = obj.get("choices")
    if out is None or type(found) is not list:
        return None
    shaped = []
    for choice in found:
        fixed = _plain_choice(choice)
        if fixed is None:
            return None
        shaped.append(fixed)
    out["choices"] = shaped
    return out


def _plain_choice(choice: Any) -> Json | None:
    message = choice.get("message") if type(choice) is dict else None
    if type(message) is not dict or not message.keys() <= _PLAIN_MESSAGE_KEYS:
        return None
    message = dict(message)
    message["role"] = "assistant"
    content = message.setdefault("content", None)
    refusal = message.setdefault("refusal", None)
    reason = choice.get("finish_reason")
    if not (
        (content is None or type(content) is str)
        and (refusal is None or type(refusal) is str)
        and type(choice.get("index")) is int
        and type(reason) is str
        and reason in shapes.FINISH_REASONS
        and choice.get("logprobs") is None
    ):
        return None
    fixed = pick(choice, _CHOICE_KEYS)  # index and finish_reason stay where they are
    fixed["message"] = message
    fixed["logprobs"] = None
    return fixed


def chat_completion(obj: Json, *, model: str, ident: str | None = None) -> Json:
    exact = _as_sent(obj) if ident is None else None
    return _repaired(obj, model, ident) if exact is None else exact


def _repaired(obj: Json, model: str, ident: str | None) -> Json:
    out = envelope(obj, "chat.completion", model, ident)
    shaped = []
    for position, choice in enumerate(choices(obj)):
        fixed = pick(choice, _CHOICE_KEYS)
        fixed["index"] = index(choice, position)
        fixed["message"] = _message(choice.get("message"))
        calls = bool(fixed["message"].get("tool_calls"))
        fixed["finish_reason"] = finish_reason(
            fixed.get("finish_reason"), tool_calls=calls, chat=True
        )
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
        delta = _delta(choice.get("delta"))
        if "role" in delta:
            if at in roles:
                del delta["role"]
            else:
                roles.add(at)
        fixed["delta"] = delta
        fixed["finish_reason"] = chunk_finish_reason(fixed.get("finish_reason"), chat=True)
        if "logprobs" in fixed:
            fixed["logprobs"] = chat_logprobs(fixed["logprobs"])
        return fixed

    def exact(self, choice: Json, roles: set[int]) -> bool:
        if choice.keys() not in (_EXACT_CHOICE_KEYS, _CHUNK_CHOICE_KEYS):
            return False
        at, delta, finish = choice["index"], choice["delta"], choice["finish_reason"]
        if type(at) is not int or type(delta) is not dict or choice.get("logprobs") is not None:
            return False
        if not delta.keys() <= _EXACT_DELTA_KEYS or not (
            finish is None or (type(finish) is str and finish in shapes.FINISH_REASONS)
        ):
            return False
        content, refusal = delta.get("content"), delta.get("refusal")
        if not (content is None or type(content) is str) or not (
            refusal is None or type(refusal) is str
        ):
            return False
        if "role" in delta:
            role = delta["role"]
            if at in roles or type(role) is not str or role not in _DELTA_ROLES:
                return False
            roles.add(at)  # as `choice` does: this role goes out, later ones of `at` do not
        return True


CHAT_CHUNKS = ChatChunks()
