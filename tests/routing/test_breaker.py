"""The circuit breaker's thresholds, cooldowns and single probe (SPEC §11), on a hand clock."""

from __future__ import annotations

import pytest

from oai_gateway.routing.breaker import BreakerState, CircuitBreaker, Ticket
from tests.routing.clock import FakeClock


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record(breaker.admit(), failed=True)


def test_opens_after_five_consecutive_failures_not_four() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock)
    _fail(breaker, 4)
    assert breaker.state.value == "closed"
    assert breaker.admits()
    _fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.admits()


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker(FakeClock())
    _fail(breaker, 4)
    breaker.record(breaker.admit(), failed=False)
    _fail(breaker, 4)
    assert breaker.state.value == "closed"


def test_opens_at_half_of_twenty_attempts_within_the_window() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock)
    # Alternating failures never reach 5 in a row; the 20th attempt makes it 10 of 20.
    for i in range(19):
        breaker.record(breaker.admit(), failed=i % 2 == 0)
        clock.advance(1)
    assert breaker.state.value == "closed"  # 10 failures of 19: too few attempts
    breaker.record(breaker.admit(), failed=False)
    assert breaker.state is BreakerState.OPEN


def test_the_ratio_only_counts_the_last_thirty_seconds() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock)
    _fail(breaker, 4)
    breaker.record(breaker.admit(), failed=False)
    _fail(breaker, 4)
    clock.advance(31)  # those nine attempts (eight failed) leave the window
    for i in range(20):
        breaker.record(breaker.admit(), failed=i % 3 == 1)
    # 7 failures of the 20 in the window; with the old ones it would be 15 of 29.
    assert breaker.state.value == "closed"


def test_half_open_after_the_cooldown_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock)
    _fail(breaker, 5)
    clock.advance(4.9)
    assert not breaker.admits()
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admits()
    assert breaker.admit() is Ticket.PROBE
    assert not breaker.admits()  # the probe is in flight: nobody else
    with pytest.raises(RuntimeError):
        breaker.admit()


def test_a_successful_probe_closes_and_resets_the_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock)
    _fail(breaker, 5)
    clock.advance(5)
    breaker.record(breaker.admit(), failed=False)
    assert breaker.state.value == "closed"
    _fail(breaker, 5)
    assert breaker.ready_at == clock.now + 5  # back to the first cooldown


def test_failed_probes_double_the_cooldown_up_to_sixty_seconds() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock)
    _fail(breaker, 5)
    waits = []
    for _ in range(6):
        wait = breaker.ready_at - clock.now
        waits.append(wait)
        clock.advance(wait)
        breaker.record(breaker.admit(), failed=True)
    assert waits == [5, 10, 20, 40, 60, 60]


def test_a_probe_that_ended_without_an_outcome_frees_the_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock)
    _fail(breaker, 5)
    clock.advance(5)
    ticket = breaker.admit()
    breaker.release(ticket)
    assert breaker.admits()
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_forced_attempt_closes_on_success_and_keeps_the_deadline_on_failure() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock)
    _fail(breaker, 5)
    deadline = breaker.ready_at
    breaker.record(breaker.admit(forced=True), failed=True)
    assert breaker.ready_at == deadline
    breaker.record(breaker.admit(forced=True), failed=False)
    assert breaker.state.value == "closed"


def test_late_outcomes_of_attempts_started_while_closed_change_nothing_once_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock)
    early = breaker.admit()
    _fail(breaker, 5)
    deadline = breaker.ready_at
    breaker.record(early, failed=False)
    assert breaker.state is BreakerState.OPEN
    assert breaker.ready_at == deadline
