"""Checks on the pieces of upstream answers that the normalisers keep as they are.

An upstream is not trusted to send OpenAI's shapes: every piece that reaches the client unchanged
is checked first. The normalisers drop an optional piece that fails (a stray `service_tier`), put
the null value in place of a required nullable one (`logprobs`), and treat a required piece that
fails (a message `content` that is a number, a tool call without a name) as an invalid upstream
answer: 502, never a 500 and never an answer that breaks the client's parser.
"""

from __future__ import annotations

from typing import Any, TypeGuard

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
TEXT_FINISH_REASONS = frozenset({"stop", "length", "content_filter"})
SERVICE_TIERS = frozenset({"auto", "default", "flex", "scale", "priority", "fast"})


def one_of(value: Any, accepted: frozenset[str]) -> bool:
    return isinstance(value, str) and value in accepted


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_text(value: Any) -> TypeGuard[str | None]:
    """A string or null, as `content` and `refusal` are."""
    return value is None or isinstance(value, str)


def _list_of(value: Any, check: Any) -> bool:
    return isinstance(value, list) and all(check(item) for item in value)


def _alternative(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("token"), str)
        and is_number(value.get("logprob"))
        and (value.get("bytes") is None or _list_of(value.get("bytes"), is_int))
    )


def token_logprob(value: Any) -> bool:
    """`ChatCompletionTokenLogprob`: token, logprob, bytes and its alternatives."""
    return (
        _alternative(value)
        and "bytes" in value
        and _list_of(value.get("top_logprobs"), lambda a: _alternative(a) and "bytes" in a)
    )


def legacy_logprobs(value: Any) -> bool:
    """A legacy completion's `{tokens, token_logprobs, top_logprobs, text_offset}`."""
    return isinstance(value, dict) and all(
        value.get(key) is None or _list_of(value[key], check)
        for key, check in (
            ("tokens", lambda t: isinstance(t, str)),
            ("token_logprobs", is_number),
            ("text_offset", is_int),
            ("top_logprobs", lambda m: isinstance(m, dict) and all(map(is_number, m.values()))),
        )
    )


def _function(value: Any, *, complete: bool) -> bool:
    if not isinstance(value, dict):
        return False
    fields = [value.get(k) for k in ("name", "arguments") if complete or k in value]
    return all(isinstance(f, str) for f in fields)


def tool_call(value: Any) -> bool:
    """One whole `tool_calls` entry of an answer's message."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("id"), str)
        and value.get("type") == "function"
        and _function(value.get("function"), complete=True)
    )


def tool_call_chunk(value: Any) -> bool:
    """One `tool_calls` fragment of a stream delta: only `index` is required."""
    return (
        isinstance(value, dict)
        and is_int(value.get("index"))
        and ("id" not in value or isinstance(value["id"], str))
        and value.get("type", "function") == "function"
        and ("function" not in value or _function(value["function"], complete=False))
    )


def function_call(value: Any, *, complete: bool) -> bool:
    return _function(value, complete=complete)


def tool_calls(value: Any, *, chunk: bool) -> bool:
    return _list_of(value, tool_call_chunk if chunk else tool_call)


def usage_details(value: Any) -> bool:
    return isinstance(value, dict) and all(is_int(v) for v in value.values())


def _citation(value: Any) -> bool:
    cited = value.get("url_citation") if isinstance(value, dict) else None
    return (
        value.get("type") == "url_citation"
        and isinstance(cited, dict)
        and all(is_int(cited.get(k)) for k in ("start_index", "end_index"))
        and all(isinstance(cited.get(k), str) for k in ("url", "title"))
    )


def citations(value: Any) -> bool:
    return _list_of(value, _citation)


def audio(value: Any) -> bool:
    return value is None or (
        isinstance(value, dict)
        and all(isinstance(value.get(k), str) for k in ("id", "data", "transcript"))
        and is_int(value.get("expires_at"))
    )
