"""A chat completion → a `Response` (SPEC §9 translate mode, non-streaming).

Output items in the order a Responses model produces them: reasoning (from the
`reasoning_content` or `reasoning` extension some servers add), the assistant message, then one
`function_call` item per tool call. A chat answer cut by its token limit becomes an
`incomplete` Response with `incomplete_details.reason = "max_output_tokens"`.
"""

from __future__ import annotations

from typing import Any

from oai_gateway.errors import UpstreamError
from oai_gateway.wire.responses import objects

Json = dict[str, Any]


def reasoning_text(source: Json) -> str | None:
    """The reasoning text a server put beside the answer, under either name in use."""
    for key in ("reasoning_content", "reasoning"):
        value = source.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def output_items(message: Json, status: str) -> list[Json]:
    items: list[Json] = []
    reasoning = reasoning_text(message)
    if reasoning is not None:
        items.append(objects.reasoning_item(objects.new_id("rs"), reasoning, "completed"))
    parts: list[Json] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        parts.append(objects.text_part(content))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts:
        items.append(objects.message_item(objects.new_id("msg"), parts, status))
    for call in message.get("tool_calls") or ():
        items.append(_function_call(call))
    return items


def _function_call(call: Any) -> Json:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise UpstreamError("The upstream answered with a malformed tool call.")
    arguments = function.get("arguments")
    call_id = call.get("id")
    return objects.function_call_item(
        objects.new_id("fc"),
        call_id if isinstance(call_id, str) and call_id else objects.new_id("call"),
        function["name"],
        arguments if isinstance(arguments, str) else "",
        "completed",
    )


def response(chat: Json, *, echoed: Json, model: str) -> Json:
    """The `Response` for a chat completion answer (already a JSON object)."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise UpstreamError("The upstream answer has no message to turn into a response.")
    reason = objects.incomplete_reason(choice.get("finish_reason"))
    status = "completed" if reason is None else "incomplete"
    created = chat.get("created")
    name = chat.get("model")
    envelope = objects.envelope(
        objects.new_id("resp"),
        name if isinstance(name, str) and name else model,
        echoed,
        created_at=created if isinstance(created, int) else None,
    )
    out = objects.finished(
        envelope,
        output=output_items(choice["message"], "completed" if reason is None else "incomplete"),
        usage=objects.usage(chat.get("usage")),
        status=status,
    )
    if reason is not None:
        out["incomplete_details"] = {"reason": reason}
    return out
