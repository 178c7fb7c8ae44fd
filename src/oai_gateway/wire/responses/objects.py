"""Builders for the Responses API's objects: the `Response` envelope, output items and usage.

Shared by the translated answer, the translated stream and the native normaliser, so a field
that OpenAI's schema requires is filled the same way on every path.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

Json = dict[str, Any]

# Request fields a `Response` reports back, with the value OpenAI reports when the request
# left them out.
ECHOED_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "safety_identifier": None,
    "service_tier": "auto",
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
}
# Reported only when the request set them: OpenAI's schema has no null for these.
ECHOED_WHEN_SET = ("user",)


def new_id(prefix: str) -> str:
    """An id in OpenAI's style for Responses objects: `resp_…`, `msg_…`, `fc_…`, `rs_…`."""
    return f"{prefix}_{uuid.uuid4().hex}"


def echoed_fields(request: Json) -> Json:
    """What a `Response` says about the request that produced it."""
    fields = {
        name: request[name] if request.get(name) is not None else default
        for name, default in ECHOED_DEFAULTS.items()
    }
    fields.update(
        {name: request[name] for name in ECHOED_WHEN_SET if request.get(name) is not None}
    )
    if not isinstance(fields["metadata"], dict):
        fields["metadata"] = {}
    if isinstance(fields["tools"], list):
        fields["tools"] = [_echoed_tool(tool) for tool in fields["tools"]]
    fields["text"] = _text_config(request.get("text"))
    reasoning = request.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, dict) else {}
    fields["reasoning"] = {
        "effort": reasoning.get("effort"),
        "summary": reasoning.get("summary"),
    }
    return fields


def _echoed_tool(tool: Any) -> Any:
    """A function tool as a `Response` reports it: `strict` and `parameters` always present."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return tool
    return {"strict": None, "parameters": None, "description": None, **tool}


def _text_config(text: Any) -> Json:
    text = text if isinstance(text, dict) else {}
    out: Json = {"format": text.get("format") or {"type": "text"}}
    if "verbosity" in text:
        out["verbosity"] = text["verbosity"]
    return out


def envelope(ident: str, model: str, echoed: Json, *, created_at: int | None = None) -> Json:
    """A `Response` in progress, with nothing generated yet."""
    return {
        "id": ident,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        **echoed,
        "store": False,
    }


def finished(response: Json, *, output: list[Json], usage: Json | None, status: str) -> Json:
    """The same `Response` at its end: `completed`, `incomplete` or `failed`."""
    out = {**response, "status": status, "output": output}
    if usage is not None:
        out["usage"] = usage  # the schema has no null for it: left out when unknown
    if status == "completed":
        out["completed_at"] = int(time.time())
    return out


def incomplete_reason(finish_reason: Any) -> str | None:
    """Why a chat answer that ended with this `finish_reason` is an incomplete `Response`."""
    if finish_reason == "length":
        return "max_output_tokens"
    if finish_reason == "content_filter":
        return "content_filter"
    return None


def usage(chat_usage: Any) -> Json | None:
    """A chat `CompletionUsage` as a `ResponseUsage`."""
    if not isinstance(chat_usage, dict):
        return None
    prompt = chat_usage.get("prompt_tokens")
    completion = chat_usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    total = chat_usage.get("total_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _detail(chat_usage, "prompt_tokens_details", "cached_tokens"),
            "cache_write_tokens": _detail(
                chat_usage, "prompt_tokens_details", "cache_write_tokens"
            ),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _detail(chat_usage, "completion_tokens_details", "reasoning_tokens")
        },
        "total_tokens": total if isinstance(total, int) else prompt + completion,
    }


def _detail(source: Json, group: str, name: str) -> int:
    details = source.get(group)
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(ident: str, parts: list[Json], status: str) -> Json:
    return {
        "id": ident,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def function_call_item(ident: str, call_id: str, name: str, arguments: str, status: str) -> Json:
    return {
        "id": ident,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def reasoning_item(ident: str, text: str | None, status: str) -> Json:
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"id": ident, "type": "reasoning", "status": status, "summary": [], "content": content}


def error_code(status: int | None) -> str:
    """The `ResponseErrorCode` for an upstream failure: OpenAI's codes, not the gateway's."""
    return "rate_limit_exceeded" if status == 429 else "server_error"
