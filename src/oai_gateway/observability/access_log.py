"""One access line per request (SPEC §4.5), written after the response is done."""

from __future__ import annotations

import logging

from oai_gateway.observability.context import RequestContext
from oai_gateway.observability.log import ACCESS_LOGGER, write_access
from oai_gateway.server.asgi import Scope

_log = logging.getLogger(ACCESS_LOGGER)


def _ms(seconds: float) -> float:
    """A duration in milliseconds to three decimals: `round(seconds * 1000, 3)`, for half the cost.

    Microseconds rounded to an integer, over 1000, is the float nearest that three-decimal number,
    which is what round() gives (it rounds through an exact decimal conversion).
    """
    return int(seconds * 1_000_000.0 + 0.5) / 1000


def log_access(scope: Scope, context: RequestContext, status: int) -> None:
    if not _log.isEnabledFor(logging.INFO):
        return
    usage = context.usage or {}
    write_access(
        {
            "method": scope["method"],
            "route": context.route or scope["path"][:200],
            "provider": context.provider,
            "model": context.model,
            "status": status,
            "duration_ms": _ms(context.elapsed_s()),
            "upstream_ms": _ms(context.upstream_s),
            "request_id": context.request_id,
            "key_id": context.key_id,  # public: a virtual key id or static-<n>, never a key
            "stream": context.stream,
            "upstream": context.upstream,
            "attempts": context.attempts or None,
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "total_tokens": usage.get("total_tokens"),
        },
    )
