"""The limiter's decision over one key's current counters, shared by the memory and SQLite
backends (the Redis backend runs the same rules inside its Lua script, store_redis_admit.lua).

Rules: rpm and tpm count what was admitted in the last 60 seconds (`window_s`) (a sliding log: no
burst at window edges); a request is refused when it would not fit, checked in the order
requests, tokens, parallel, budget; a budget admits while spent + reserved < limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import msgspec

from oai_gateway.keys.store import Admission, Decision, Refusal


class Counters(msgspec.Struct, frozen=True):
    """One key's state at `now`, expired window entries and leases already dropped."""

    now: float
    requests: int  # admitted in the window
    tokens: int  # reserved or used in the window
    oldest_at: float | None  # admission time of the oldest entry still in the window
    leases: int
    budget_used: float
    period: int


def decide(
    admission: Admission, counters: Counters, entries: Callable[[], Iterable[tuple[float, int]]]
) -> Decision:
    """The decision for `admission`; `entries` lists (at, tokens) oldest first, on refusal only."""
    oldest_at = counters.oldest_at
    reset = 0.0 if oldest_at is None else max(oldest_at + admission.window_s - counters.now, 0.0)
    refused = _refusal(admission, counters)
    requests, tokens = counters.requests, counters.tokens
    if refused is None:  # nearly always: counted with this request, no retry
        retry = 0.0
        requests += 1
        tokens += admission.tokens
        if oldest_at is None:
            reset = admission.window_s
    elif refused == "tokens":
        retry = max(_tokens_free_in(admission, counters, entries()), 0.0)
    elif refused == "requests":
        retry = reset
    else:
        retry = 1.0 if refused == "parallel" else 0.0
    rpm, tpm = admission.rpm, admission.tpm
    return Decision(
        refused,
        retry,
        None if rpm is None else max(rpm - requests, 0),
        reset,
        None if tpm is None else max(tpm - tokens, 0),
        reset,
        counters.period,
    )


def _refusal(admission: Admission, counters: Counters) -> Refusal | None:
    if admission.rpm is not None and counters.requests >= admission.rpm:
        return "requests"
    if admission.tpm is not None and counters.tokens + _fit(admission) > admission.tpm:
        return "tokens"
    if admission.max_parallel is not None and counters.leases >= admission.max_parallel:
        return "parallel"
    if admission.budget_limit is not None and counters.budget_used >= admission.budget_limit:
        return "budget"
    return None


def _fit(admission: Admission) -> int:
    # A request bigger than the whole tpm still runs once the window is empty, never never.
    return min(admission.tokens, admission.tpm or 0)


def _tokens_free_in(
    admission: Admission, counters: Counters, entries: Iterable[tuple[float, int]]
) -> float:
    """Seconds until enough old entries leave the window for this request to fit."""
    excess = counters.tokens + _fit(admission) - (admission.tpm or 0)
    for at, tokens in entries:
        excess -= tokens
        if excess <= 0:
            return at + admission.window_s - counters.now
    return admission.window_s
