"""What every answer shape shares: ids, the usage object, the envelope, the choices list."""

from __future__ import annotations

import time
import uuid
from typing import Any

from oai_gateway.errors import UpstreamError

Json = dict[str, Any]

# The top-level keys of a chat completion, which legacy completions share.
COMPLETION_KEYS = frozenset(
    {"id", "object", "created", "model", "choices", "usage", "system_fingerprint", "service_tier"}
)
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
    return {k: v for k, v in source.items() if k in keys}


def usage(value: Any) -> Json | None:
    """A CompletionUsage with its three counts, or None when the upstream sent none usable."""
    if not isinstance(value, dict):
        return None
    counts = pick(value, _USAGE_KEYS)
    prompt = counts.get("prompt_tokens")
    completion = counts.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    counts["completion_tokens"] = completion
    if not isinstance(counts.get("total_tokens"), int):
        counts["total_tokens"] = prompt + completion
    return counts


def envelope(obj: Json, kind: str, model: str, ident: str | None) -> Json:
    """The top level of a completion: its own kind, an id, a created time, a model, usage."""
    out = pick(obj, COMPLETION_KEYS)
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


def choices(obj: Json) -> list[Json]:
    found = obj.get("choices")
    if not isinstance(found, list) or not all(isinstance(c, dict) for c in found):
        raise UpstreamError("The upstream answer has no valid `choices` list.")
    return found


def index(choice: Json, position: int) -> int:
    """The choice's own index when it is one; clients key choices by it (a dict or set key)."""
    found = choice.get("index")
    return found if isinstance(found, int) and not isinstance(found, bool) else position
