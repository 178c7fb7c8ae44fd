"""`instructions` and `input` items → chat messages (SPEC §9 translate mode).

Function calls become the assistant's `tool_calls` (consecutive calls, and the assistant text
just before them, share one assistant message, as a chat model produced them) and their outputs
become `tool` messages. Reasoning items have no chat form and are dropped, never turned into
text. Items that need a server-side store or a built-in tool are refused, naming `input`.
"""

from __future__ import annotations

from typing import Any

from oai_gateway.errors import InvalidRequestError, UnsupportedParameterError

Json = dict[str, Any]

_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text"})


def _unsupported(message: str) -> InvalidRequestError:
    return UnsupportedParameterError(message, param="input")


def _invalid(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param="input")


def messages(instructions: Any, items: Any) -> list[Json]:
    """The chat `messages` for a CreateResponse's `instructions` and `input`."""
    out: list[Json] = []
    if isinstance(instructions, str) and instructions:
        out.append({"role": "system", "content": instructions})
    if isinstance(items, str):
        out.append({"role": "user", "content": items})
    elif isinstance(items, list):
        for item in items:
            _append(out, item)
    if not out:
        raise _invalid("'input' must be a string or a non-empty array of input items.")
    return out


def _append(out: list[Json], item: Any) -> None:
    if not isinstance(item, dict):
        raise _invalid("Each input item must be an object.")
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        out.append(_message(item))
    elif kind == "function_call":
        _add_tool_call(out, item)
    elif kind == "function_call_output":
        out.append(_tool_result(item))
    elif kind == "reasoning":
        return  # no chat equivalent; its text must not leak into the conversation
    elif kind == "item_reference":
        raise _unsupported("'item_reference' input items need stored responses; send the item.")
    else:
        raise _unsupported(f"Input items of type '{kind}' cannot be translated to chat messages.")


def _message(item: Json) -> Json:
    role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise _invalid("A message item's 'role' must be user, system, developer or assistant.")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _invalid("A message item's 'content' must be a string or an array of parts.")
    parts = [_part(part) for part in content]
    if role != "user" or all(p["type"] == "text" for p in parts):
        if not all(p["type"] == "text" for p in parts):
            raise _unsupported(f"Only text can be sent in a {item.get('role')} message.")
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _part(part: Any) -> Json:
    if not isinstance(part, dict):
        raise _invalid("Each content part must be an object.")
    kind = part.get("type")
    if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: Json = {"url": part["image_url"]}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        fields = ("file_data", "file_id", "filename")
        return {"type": "file", "file": {k: part[k] for k in fields if part.get(k) is not None}}
    raise _unsupported(f"Content parts of type '{kind}' cannot be translated to chat messages.")


def _add_tool_call(out: list[Json], item: Json) -> None:
    call_id, name = item.get("call_id"), item.get("name")
    arguments = item.get("arguments", "")
    if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, str):
        raise _invalid("A function_call item needs string 'call_id', 'name' and 'arguments'.")
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        return
    out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_result(item: Json) -> Json:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str):
        raise _invalid("A function_call_output item needs a string 'call_id'.")
    if isinstance(output, list):
        parts = [_part(part) for part in output]
        if not all(p["type"] == "text" for p in parts):
            raise _unsupported("Only text can be returned as a function call's output.")
        output = "".join(p["text"] for p in parts)
    if not isinstance(output, str):
        raise _invalid("A function_call_output item's 'output' must be a string or text parts.")
    return {"role": "tool", "tool_call_id": call_id, "content": output}
