"""Request rewrites several dialects share (`Dialect.rewrites`)."""

from __future__ import annotations

from typing import Any

from oai_gateway.config.settings import ProviderSpec
from oai_gateway.errors import UnsupportedOperationError
from oai_gateway.providers.base import Json


def developer_as_system(body: Json, spec: ProviderSpec) -> Json:
    """Upstreams without the `developer` role get it as `system`, which is what it replaces."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and m.get("role") == "developer" for m in messages
    ):
        return body
    fixed = [
        {**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m
        for m in messages
    ]
    return {**body, "messages": fixed}


def usage_reported(body: Json) -> Json:
    """A stream always asks the upstream for its usage (SPEC §10.3), so the access log, the token
    metrics and the usage ledger count every stream; the usage-only chunk reaches the client
    only when it asked for it (`wire.normalize.ChunkNormalizer`)."""
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body
    kept = options if isinstance(options, dict) else {}
    return {**body, "stream_options": {**kept, "include_usage": True}}


def max_completion_tokens_as_max_tokens(body: Json, spec: ProviderSpec) -> Json:
    """For upstreams that ignore `max_completion_tokens` but honour the older `max_tokens`."""
    if "max_completion_tokens" not in body:
        return body
    body = dict(body)
    limit = body.pop("max_completion_tokens")
    if body.get("max_tokens") is None:
        body["max_tokens"] = limit
    return body


def reject_token_ids(value: Any, param: str, spec: ProviderSpec, kind_label: str) -> None:
    """A clear 400 for token-id input (lists of integers), for upstreams that take only text."""
    if isinstance(value, list) and value and not isinstance(value[0], str):
        raise UnsupportedOperationError(
            f"Provider '{spec.name}' ({kind_label}) does not accept token ids in '{param}'; "
            "send text instead.",
            param=param,
        )
