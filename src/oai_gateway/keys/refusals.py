"""The answers of SPEC §5 for virtual keys: 401 revoked/expired, 403 not allowed, 429 over a
limit or budget, 503 store unavailable; and the `x-ratelimit-*` headers as OpenAI sends them."""

from __future__ import annotations

import math

from oai_gateway.errors import AuthenticationError, GatewayError, InvalidRequestError
from oai_gateway.keys.records import KeyRecord
from oai_gateway.keys.store import Decision

Headers = list[tuple[bytes, bytes]]


class KeyRefusedError(AuthenticationError):
    """A well-formed virtual key that may not be used (any more): unknown, revoked, expired."""


class ModelNotAllowedError(InvalidRequestError):
    status = 403
    default_code = "model_not_allowed"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model")


class StoreUnreachableError(GatewayError):
    status = 503
    default_code = "store_unavailable"


STORE_UNAVAILABLE = (
    "The gateway cannot reach its key store, so it cannot apply this key's limits; retry "
    "shortly (STORE_FAILURE_MODE=closed)."
)


def duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1.5s`, `6m0s`."""
    return _duration(seconds).decode()


def _duration(seconds: float) -> bytes:
    if seconds < 1:
        return b"%dms" % max(round(seconds * 1000), 0)
    if seconds < 60:
        return (b"%.3f" % seconds).rstrip(b"0").rstrip(b".") + b"s"
    minutes, rest = divmod(int(seconds), 60)
    return b"%dm%ds" % (minutes, rest)


def rate_headers(record: KeyRecord, decision: Decision) -> Headers:
    """The `x-ratelimit-*` trio for each of the key's request and token limits."""
    rpm, tpm = record.limits.rpm, record.limits.tpm
    left_requests, left_tokens = decision.remaining_requests, decision.remaining_tokens
    headers: Headers = []
    reset = b""
    if rpm is not None and left_requests is not None:
        reset = _duration(decision.reset_requests_s)
        headers += [
            (b"x-ratelimit-limit-requests", b"%d" % rpm),
            (b"x-ratelimit-remaining-requests", b"%d" % left_requests),
            (b"x-ratelimit-reset-requests", reset),
        ]
    if tpm is not None and left_tokens is not None:
        # One window counts both: the two resets are nearly always equal, formatted once.
        if not reset or decision.reset_tokens_s != decision.reset_requests_s:
            reset = _duration(decision.reset_tokens_s)
        headers += [
            (b"x-ratelimit-limit-tokens", b"%d" % tpm),
            (b"x-ratelimit-remaining-tokens", b"%d" % left_tokens),
            (b"x-ratelimit-reset-tokens", reset),
        ]
    return headers


def refusal(record: KeyRecord, decision: Decision) -> GatewayError:
    """The 429 for a refused admission, carrying retry-after and the rate headers."""
    headers = {k.decode(): v.decode() for k, v in rate_headers(record, decision)}
    if decision.refused == "budget":
        budget = record.budget
        assert budget is not None
        unit = f"${budget.usd:g}" if budget.usd is not None else f"{budget.tokens} tokens"
        return GatewayError(
            f"Key {record.id} has used its budget of {unit} for this {budget.period} period."
            + ("" if budget.period == "total" else " It renews at the next period's start."),
            status=429,
            error_type="insufficient_quota",
            code="insufficient_quota",
            headers={**headers, "x-should-retry": "false"},
        )
    retry = decision.retry_after_s
    headers["retry-after"] = str(max(math.ceil(retry), 1))
    headers["retry-after-ms"] = str(max(math.ceil(retry * 1000), 1))
    return GatewayError(
        f"Rate limit reached for key {record.id}: {_which(record, decision)}. "
        f"Retry in {duration(retry)}.",
        status=429,
        error_type="tokens" if decision.refused == "tokens" else "requests",
        code="rate_limit_exceeded",
        headers=headers,
    )


def _which(record: KeyRecord, decision: Decision) -> str:
    limits = record.limits
    if decision.refused == "requests":
        return f"{limits.rpm} requests per minute"
    if decision.refused == "tokens":
        return f"{limits.tpm} tokens per minute"
    return f"{limits.max_parallel} requests in flight at once"
