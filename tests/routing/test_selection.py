"""The selection strategies: weighted shares and least-in-flight (SPEC §11)."""

from __future__ import annotations

from collections import Counter

import pytest

from oai_gateway.routing.members import Member
from tests.routing.clock import FakeClock
from tests.routing.members import target


@pytest.mark.parametrize("seed", range(20))
def test_weighted_shares_are_within_one_total_weight_of_exact(seed: int) -> None:
    clock = FakeClock()
    local = target("local", [5, 3, 2], clock, seed=seed)
    picks = Counter(local.pick(set()).index for _ in range(400))  # type: ignore[union-attr]
    assert all(abs(picks[i] - 400 * w / 10) <= 10 for i, w in enumerate([5, 3, 2])), picks


def test_weighted_is_smooth_no_member_gets_a_burst() -> None:
    local = target("local", [1, 1, 1, 1], FakeClock())
    order = [local.pick(set()).index for _ in range(40)]  # type: ignore[union-attr]
    for start in range(0, 40, 4):
        assert sorted(order[start : start + 4]) == [0, 1, 2, 3]


def test_weighted_spreads_over_the_members_left_when_one_is_excluded() -> None:
    local = target("local", [2, 1, 1], FakeClock())
    skip = {local.members[0]}
    picks = Counter(local.pick(skip).index for _ in range(100))  # type: ignore[union-attr]
    assert picks == {1: 50, 2: 50}


def test_different_seeds_start_in_different_places() -> None:
    firsts = {
        target("local", [1, 1, 1], FakeClock(), seed=s).pick(set()).index  # type: ignore[union-attr]
        for s in range(30)
    }
    assert firsts == {0, 1, 2}


def test_least_in_flight_takes_the_idle_member() -> None:
    local = target("local", [1, 1, 1], FakeClock(), "least_in_flight")
    local.members[0].in_flight = 3
    local.members[2].in_flight = 1
    assert all(local.pick(set()) is local.members[1] for _ in range(20))


def test_least_in_flight_ties_are_random_not_the_first() -> None:
    local = target("local", [1, 1, 1], FakeClock(), "least_in_flight")
    local.members[1].in_flight = 2
    picks = Counter(local.pick(set()).index for _ in range(300))  # type: ignore[union-attr]
    assert set(picks) == {0, 2}
    assert min(picks.values()) > 90  # a fair coin gives 150 ± 26 (3 sigma) per side


def test_a_lease_holds_the_in_flight_count_until_released() -> None:
    local = target("local", [1, 1], FakeClock(), "least_in_flight")
    held = local.members[0].lease()
    assert local.pick(set()) is local.members[1]
    held.release()
    held.release()  # idempotent
    assert local.members[0].in_flight == 0


def test_unavailable_members_are_not_picked() -> None:
    clock = FakeClock()
    local = target("local", [1, 1], clock)
    local.members[0].pause(30)
    assert all(local.pick(set()) is local.members[1] for _ in range(5))
    local.members[1].pause(30)
    assert local.pick(set()) is None
    clock.advance(30)
    assert local.pick(set()) is not None


def test_a_pause_is_bounded_and_never_shortened() -> None:
    clock = FakeClock()
    member: Member = target("local", [1], clock).members[0]
    member.pause(10**9)
    assert member.paused_until == clock.now + 600
    member.pause(1)
    assert member.paused_until == clock.now + 600
