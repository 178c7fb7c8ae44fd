"""What counts as a failed attempt (SPEC §11), and an upstream's `retry-after`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from oai_gateway.errors import GatewayError

# Answers that say "not now" rather than "not this request": another upstream may serve it.
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# Transport failures before any answer head (set by the upstream client), and our own timeout.
RETRIED_TRANSPORT = frozenset({"refused", "reset", "connect_timeout", "ttft_timeout"})


def failure_kind(error: GatewayError) -> str | None:
    """The failure's name when the attempt failed in §11's sense, else None (the client's
    answer, returned as it is)."""
    status = error.upstream_status
    if status is not None:
        return f"http_{status}" if status in RETRIED_STATUSES else None
    return error.failure if error.failure in RETRIED_TRANSPORT else None


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds an upstream asked us to wait (`retry-after-ms`, `retry-after` seconds or date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(float(milliseconds) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None
