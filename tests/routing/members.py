"""Members and targets built for the routing unit tests."""

from __future__ import annotations

import random

from oai_gateway.routing.attempts import Target
from oai_gateway.routing.breaker import CircuitBreaker
from oai_gateway.routing.members import Member
from oai_gateway.routing.selection import StrategyName, make_strategy
from tests.routing.clock import FakeClock


def target(
    name: str,
    weights: list[int],
    clock: FakeClock,
    strategy: StrategyName = "weighted",
    seed: int = 7,
) -> Target:
    members = tuple(
        Member(name, i, weight, CircuitBreaker(clock), clock) for i, weight in enumerate(weights)
    )
    return Target(name, members, make_strategy(strategy, members, random.Random(seed)))
