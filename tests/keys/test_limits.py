"""Reservations, reconciliation and the 429 shapes (SPEC §10.3), as pure functions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from oai_gateway.keys.limits import (
    DEFAULT_OUTPUT_TOKENS,
    AdmissionIds,
    Estimate,
    estimate,
    plan,
    settlement,
    used_tokens,
)
from oai_gateway.keys.records import Budget, Limits
from oai_gateway.keys.refusals import duration, rate_headers, refusal
from oai_gateway.keys.store import Decision
from tests.keys.contract import record


@dataclass(frozen=True)
class FlatPrice:
    input: float
    output: float


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "max_output_tokens"])
def test_the_estimate_reserves_the_whole_output_allowance(field: str) -> None:
    assert estimate({field: 300}, 400, generates=True) == Estimate(100, 300)


def test_without_an_output_allowance_the_default_is_reserved() -> None:
    assert estimate({"max_tokens": True}, 1, generates=True) == Estimate(1, DEFAULT_OUTPUT_TOKENS)
    assert estimate(None, 8, generates=False) == Estimate(2, 0)


def test_keys_without_limits_need_no_admission() -> None:
    assert plan(record(), Estimate(10, 10), None) is None


def test_the_plan_reserves_tokens_and_cost() -> None:
    key = record(limits=Limits(rpm=5, tpm=1000), budget=Budget(period="day", usd=1.0))
    planned = plan(key, Estimate(1000, 500), FlatPrice(input=1.0, output=2.0))
    assert planned is not None
    admission = planned.admission
    assert (admission.rpm, admission.tpm, admission.max_parallel) == (5, 1000, None)
    assert admission.tokens == 1500
    assert admission.budget_cost == pytest.approx(0.002)
    assert (admission.budget_limit, admission.budget_period) == (1.0, "day")


def test_settlement_charges_the_real_usage_or_keeps_the_reservation() -> None:
    key = record(limits=Limits(tpm=1000, max_parallel=1), budget=Budget(period="week", tokens=9))
    planned = plan(key, Estimate(100, 400), None)
    assert planned is not None
    decision = Decision(refused=None, period=7)
    real = settlement(key, planned, decision, {"prompt_tokens": 80, "completion_tokens": 20})
    assert (real.tokens_delta, real.budget_delta) == (-400, -400.0)
    assert (real.period, real.release_lease) == (7, True)
    cut = settlement(key, planned, decision, None)
    assert (cut.tokens_delta, cut.budget_delta, cut.release_lease) == (0, 0.0, True)


def test_usage_is_read_from_every_usage_shape() -> None:
    assert used_tokens({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}) == (3, 4)
    assert used_tokens({"input_tokens": 5, "output_tokens": 6}) == (5, 6)
    assert used_tokens({"prompt_tokens": 9, "total_tokens": 9}) == (9, 0)
    assert used_tokens(None) is None


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (1.5, "1.5s"), (17.498, "17.498s"), (360, "6m0s")]
)
def test_resets_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_rate_headers_name_the_limits_the_key_has() -> None:
    key = record(limits=Limits(rpm=60, tpm=1000))
    decision = Decision(
        refused=None,
        remaining_requests=59,
        reset_requests_s=1.0,
        remaining_tokens=900,
        reset_tokens_s=0.5,
    )
    assert dict(rate_headers(key, decision)) == {
        b"x-ratelimit-limit-requests": b"60",
        b"x-ratelimit-remaining-requests": b"59",
        b"x-ratelimit-reset-requests": b"1s",
        b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"900",
        b"x-ratelimit-reset-tokens": b"500ms",
    }
    assert rate_headers(record(limits=Limits(max_parallel=2)), decision) == []


def test_a_refused_request_gets_openais_429() -> None:
    key = record(limits=Limits(rpm=1, tpm=10))
    decision = Decision(
        refused="tokens", retry_after_s=2.2, remaining_requests=0, remaining_tokens=1
    )
    error = refusal(key, decision)
    assert (error.http_status, error.type, error.code) == (429, "tokens", "rate_limit_exceeded")
    assert error.headers["retry-after"] == "3"
    assert error.headers["retry-after-ms"] == "2200"
    assert error.headers["x-ratelimit-remaining-tokens"] == "1"
    assert "10 tokens per minute" in error.message
    parallel = refusal(record(limits=Limits(max_parallel=2)), Decision(refused="parallel"))
    assert (parallel.type, parallel.code) == ("requests", "rate_limit_exceeded")
    assert "2 requests in flight" in parallel.message


def test_an_exhausted_budget_says_not_to_retry() -> None:
    key = record(budget=Budget(period="month", usd=5.0))
    error = refusal(key, Decision(refused="budget"))
    assert (error.http_status, error.type, error.code) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )
    assert error.headers["x-should-retry"] == "false"
    assert "$5" in error.message


def test_an_rpm_only_key_has_nothing_to_settle() -> None:
    key = record(limits=Limits(rpm=10))
    planned = plan(key, Estimate(100, 400), None)
    assert planned is not None
    done = settlement(key, planned, Decision(refused=None), {"prompt_tokens": 7})
    assert (done.tokens_delta, done.budget_delta, done.changes_anything) == (0, 0.0, False)
    leased = record(limits=Limits(rpm=10, max_parallel=1))
    planned = plan(leased, Estimate(1, 1), None)
    assert planned is not None
    assert settlement(leased, planned, Decision(refused=None), None).changes_anything


def test_admission_ids_are_unique_and_renewed_in_a_forked_child() -> None:
    ids = AdmissionIds()
    seen = {ids.next() for _ in range(1000)}
    assert len(seen) == 1000
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id must not be one the parent could make
        os.write(writer, ids.next().encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    assert child not in seen
    assert child[:16] != next(iter(seen))[:16]
