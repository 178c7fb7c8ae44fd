"""What every answer shape shares: ids, the usage object, the envelope, the choices list."""

from __future__ import annotations

import time
import uuid
from typing import Any

from oai_gateway.errors import UpstreamError
from oai_gateway.wire import answer_shapes as shapes
from oai_gateway.wire.answer_shapes import is_int

Json = dict[str, Any]

# The top-level keys of a chat completion, which legacy completions share.
COMPLETION_KEYS = frozenset(
    {"id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier"}
)
_COUNTS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})
_PLAIN_COUNTS: Json = dict.fromkeys(_COUNTS, 0)  # stands for an answer without usage
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


def pick(source: Json, keys: frozenset[str]) -> Json:
    """`source` with only `keys`, in its own order."""
    if source.keys() <= keys:
        return dict(source)  # nothing to drop, as with most upstreams: a copy, made in C
    return {k: v for k, v in source.items() if k in keys}


def usage(value: Any) -> Json | None:
    """A CompletionUsage with its three counts, or None when the upstream sent none usable."""
    if not isinstance(value, dict):
        return None
    counts = pick(value, _USAGE_KEYS)
    prompt = counts.get("prompt_tokens")
    completion = counts.get("completion_tokens", 0)
    if not is_int(prompt) or not is_int(completion):
        return None
    counts["completion_tokens"] = completion
    if not is_int(counts.get("total_tokens")):
        counts["total_tokens"] = prompt + completion
    for key in ("completion_tokens_details", "prompt_tokens_details"):
        if key in counts and not shapes.usage_details(counts[key]):
            del counts[key]
    return counts


def plain_envelope(obj: Json, kind: str) -> Json | None:
    """What `envelope(obj, kind, model, None)` gives, for the usual answer, which needs no repair
    (its own id, model and created time, a valid fingerprint and tier, usage with its three
    counts): the checks inline, `type(...) is` the exact JSON types. None for any other answer,
    for `envelope` to repair: whatever is accepted here, `envelope` would have left as it is."""
    out = pick(obj, COMPLETION_KEYS)
    counts = out.get("usage", _PLAIN_COUNTS)
    tier = out.get("service_tier", "auto")
    if not (
        type(out.get("id")) is str
        and type(out.get("created")) is int
        and type(out.get("model")) is str
        and type(out.get("system_fingerprint", "")) is str
        and type(tier) is str
        and tier in shapes.SERVICE_TIERS
        and type(counts) is dict
        and counts.keys() == _COUNTS
        and type(counts["prompt_tokens"]) is int
        and type(counts["completion_tokens"]) is int
        and type(counts["total_tokens"]) is int
    ):
        return None
    out["object"] = kind
    if "usage" in out:
        out["usage"] = dict(counts)
    return out


def envelope(obj: Json, kind: str, model: str, ident: str | None) -> Json:
    """The top level of a completion: its own kind, an id, a created time, a model, usage."""
    out = pick(obj, COMPLETION_KEYS)
    out["object"] = kind
    if ident is not None or not isinstance(out.get("id"), str):
        out["id"] = ident or new_id("chatcmpl" if kind.startswith("chat") else "cmpl")
    if not is_int(out.get("created")):
        out["created"] = int(time.time())
    if not isinstance(out.get("model"), str):
        out["model"] = model
    if not isinstance(out.get("system_fingerprint", ""), str):
        del out["system_fingerprint"]
    if not shapes.one_of(out.get("service_tier"), shapes.SERVICE_TIERS):
        out.pop("service_tier", None)
    if "usage" in out:
        fixed = usage(out["usage"])
        if fixed is None:
            del out["usage"]
        else:
            out["usage"] = fixed
    return out


def choices(obj: Json) -> list[Json]:
    found = obj.get("choices")
    if not isinstance(found, list) or not all(isinstance(c, dict) for c in found):
        raise UpstreamError("The upstream answer has no valid `choices` list.")
    return found


def index(choice: Json, position: int) -> int:
    """The choice's own index when it is one; clients key choices by it (a dict or set key)."""
    found = choice.get("index")
    return found if is_int(found) else position


def finish_reason(value: Any, *, tool_calls: bool, chat: bool) -> str:
    """The upstream's reason when OpenAI defines it; else what the choice shows it was."""
    if shapes.one_of(value, shapes.FINISH_REASONS if chat else shapes.TEXT_FINISH_REASONS):
        return str(value)
    return "tool_calls" if tool_calls else "stop"


def chunk_finish_reason(value: Any, *, chat: bool) -> str | None:
    """Null until the choice ends, as OpenAI streams it; else as `finish_reason`."""
    return None if value is None else finish_reason(value, tool_calls=False, chat=chat)
