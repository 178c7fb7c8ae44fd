"""Fill what OpenAI's schema requires in a native upstream's `Response` and its output items.

Every function returns whether it changed anything, so an answer that needed nothing can go
out as the upstream's own bytes.
"""

from __future__ import annotations

import time
from typing import Any

from oai_gateway.wire.responses import objects

Json = dict[str, Any]

_ITEM_STATUS = ("message", "function_call", "reasoning")


def fill(target: Json, name: str, value: Any) -> bool:
    if name in target:
        return False
    target[name] = value
    return True


def part(part: Any) -> bool:
    """An `output_text` part carries `annotations` and `logprobs`, empty when unknown."""
    if not isinstance(part, dict) or part.get("type") != "output_text":
        return False
    changed = fill(part, "annotations", [])
    return fill(part, "logprobs", []) or changed


def item(item: Any, *, status: str = "completed") -> bool:
    """One output item: its status (and a message's parts) as the schema requires."""
    if not isinstance(item, dict):
        return False
    changed = False
    kind = item.get("type")
    if kind in _ITEM_STATUS:
        changed = fill(item, "status", status)
    if kind == "reasoning":
        changed = fill(item, "summary", []) or changed
    if kind == "message":
        changed = fill(item, "role", "assistant") or changed
        for each in item.get("content") or ():
            changed = part(each) or changed
    return changed


def usage(found: Any) -> bool:
    """A `ResponseUsage` with both detail objects, as the schema requires."""
    if not isinstance(found, dict):
        return False
    inputs = found.get("input_tokens_details")
    changed = False
    if not isinstance(inputs, dict):
        found["input_tokens_details"] = inputs = {}
        changed = True
    changed = fill(inputs, "cached_tokens", 0) or changed
    changed = fill(inputs, "cache_write_tokens", 0) or changed
    outputs = found.get("output_tokens_details")
    if not isinstance(outputs, dict):
        found["output_tokens_details"] = outputs = {}
        changed = True
    changed = fill(outputs, "reasoning_tokens", 0) or changed
    if not isinstance(found.get("total_tokens"), int):
        found["total_tokens"] = _count(found, "input_tokens") + _count(found, "output_tokens")
        changed = True
    return changed


def _count(found: Json, name: str) -> int:
    value = found.get(name)
    return value if isinstance(value, int) else 0


def response(response: Json, *, model: str, echoed: Json, created_at: int | None = None) -> bool:
    """A whole `Response`: the required fields the upstream left out, filled."""
    changed = fill(response, "object", "response")
    changed = fill(response, "created_at", created_at or int(time.time())) or changed
    changed = fill(response, "model", model) or changed
    for name in ("error", "incomplete_details"):
        changed = fill(response, name, None) or changed
    for name, value in echoed.items():
        changed = fill(response, name, value) or changed
    if response.get("usage") is None and "usage" in response:
        del response["usage"]  # the schema has no null for it
        changed = True
    changed = usage(response.get("usage")) or changed
    output = response.get("output")
    if isinstance(output, list):
        for each in output:
            changed = item(each) or changed
    return changed


def ensure_id(response: Json) -> None:
    if not isinstance(response.get("id"), str):
        response["id"] = objects.new_id("resp")
