"""From one request and its key's record to the store's Admission, and from the real usage
afterwards to the Settlement (SPEC §10.3).

The reservation: input tokens estimated as the body's bytes / 4 (about four bytes of JSON per
token of English text; reconciled afterwards, so the estimate only has to be in the right range)
plus the whole `max_tokens` / `max_completion_tokens` / `max_output_tokens`, or
DEFAULT_OUTPUT_TOKENS when the request sets none.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from oai_gateway.keys.leases import LEASE_TTL_S
from oai_gateway.keys.records import KeyRecord
from oai_gateway.keys.store import Admission, Decision, Settlement

BYTES_PER_TOKEN = 4
DEFAULT_OUTPUT_TOKENS = 1024
OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


class Price(Protocol):
    """USD per million tokens (the providers file's `prices`)."""

    @property
    def input(self) -> float: ...

    @property
    def output(self) -> float: ...


class Estimate(msgspec.Struct, frozen=True):
    input_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def estimate(body: Mapping[str, Any] | None, body_bytes: int, *, generates: bool) -> Estimate:
    output = 0
    if generates:
        output = DEFAULT_OUTPUT_TOKENS
        for name in OUTPUT_FIELDS:
            value = body.get(name) if body is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                output = value
                break
    return Estimate(math.ceil(body_bytes / BYTES_PER_TOKEN), output)


def cost_usd(price: Price | None, input_tokens: int, output_tokens: int) -> float:
    if price is None:
        return 0.0
    return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


class AdmissionIds:
    """Ids unique to each admission across processes and restarts: a random prefix per process
    (a new one after a fork) and a counter. 16 random bytes per request cost a `getrandom`
    call each."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


_IDS = AdmissionIds()


class Plan(msgspec.Struct, frozen=True):
    """An admission and what it reserved, kept until the request settles."""

    admission: Admission
    price: Price | None


def plan(record: KeyRecord, guess: Estimate, price: Price | None) -> Plan | None:
    """The admission for this request, or None when the key has no limits and no budget."""
    if not record.limited:
        return None
    limits, budget = record.limits, record.budget
    admission = Admission(
        request_id=_IDS.next(),
        rpm=limits.rpm,
        tpm=limits.tpm,
        max_parallel=limits.max_parallel,
        tokens=guess.total if limits.tpm is not None or _tokens_budget(record) else 0,
        budget_limit=None if budget is None else budget.limit,
        budget_period="total" if budget is None else budget.period,
        budget_cost=_budget_amount(record, price, guess.input_tokens, guess.output_tokens),
        lease_ttl_s=LEASE_TTL_S,  # refreshed while the request runs (keys/leases.py)
    )
    return Plan(admission, price)


def _tokens_budget(record: KeyRecord) -> bool:
    return record.budget is not None and record.budget.tokens is not None


def _budget_amount(
    record: KeyRecord, price: Price | None, input_tokens: int, output_tokens: int
) -> float:
    if record.budget is None:
        return 0.0
    if record.budget.tokens is not None:
        return float(input_tokens + output_tokens)
    return cost_usd(price, input_tokens, output_tokens)


def used_tokens(usage: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(input, output) from an OpenAI `usage` object (chat, completions, embeddings, responses)."""
    if not usage:
        return None
    return _count(usage, "prompt_tokens", "input_tokens"), _count(
        usage, "completion_tokens", "output_tokens"
    )


def _count(usage: Mapping[str, Any], name: str, other: str) -> int:
    value = usage.get(name)
    if not isinstance(value, int):
        value = usage.get(other)
    return max(int(value), 0) if isinstance(value, int) else 0


def settlement(
    record: KeyRecord, planned: Plan, decision: Decision, usage: Mapping[str, Any] | None
) -> Settlement:
    """Reconcile the reservation with the real usage. Without usage (a cut stream, a failed
    call) the reservation stands: a request is never charged less than it reserved unless the
    upstream said what it used."""
    admission = planned.admission
    used = used_tokens(usage)
    tokens_delta, budget_delta = 0, 0.0
    if used is not None:
        input_tokens, output_tokens = used
        if admission.tpm is not None:
            tokens_delta = input_tokens + output_tokens - admission.tokens
        if admission.budget_limit is not None:
            real = _budget_amount(record, planned.price, input_tokens, output_tokens)
            budget_delta = real - admission.budget_cost
    return Settlement(
        request_id=admission.request_id,
        tokens_delta=tokens_delta,
        budget_delta=budget_delta,
        budget_period=admission.budget_period,
        period=decision.period,
        release_lease=admission.max_parallel is not None,
    )
