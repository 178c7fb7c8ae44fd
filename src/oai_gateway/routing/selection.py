"""How the next upstream is chosen among those that may be tried (SPEC §11 `strategy`)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, Protocol

from oai_gateway.routing.members import Member

StrategyName = Literal["weighted", "least_in_flight"]


class Strategy(Protocol):
    def choose(self, eligible: Sequence[Member]) -> Member:
        """One of `eligible`, which is never empty."""
        ...


class SmoothWeighted:
    """Smooth weighted round robin: every pick adds each weight to its member's running score
    and takes the highest, which then pays back the total. Over any run of picks each member's
    share stays within one total weight of exact, with no bursts on the heaviest member.

    The scores start at random offsets, so gateway processes started together do not send
    their first requests to the same upstream in lockstep.
    """

    __slots__ = ()

    def __init__(self, members: Sequence[Member], rng: random.Random) -> None:
        for member in members:
            member.score = rng.uniform(0, member.weight)

    def choose(self, eligible: Sequence[Member]) -> Member:
        best = eligible[0]
        total = 0
        for member in eligible:
            member.score += member.weight
            total += member.weight
            if member.score > best.score:
                best = member
        best.score -= total
        return best


class LeastInFlight:
    """The member with the fewest requests in flight (a stream counts until it ends); ties are
    broken at random so equal members share the load instead of the first taking it all."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, eligible: Sequence[Member]) -> Member:
        low = min(member.in_flight for member in eligible)
        ties = [member for member in eligible if member.in_flight == low]
        return ties[0] if len(ties) == 1 else self._rng.choice(ties)


def make_strategy(name: StrategyName, members: Sequence[Member], rng: random.Random) -> Strategy:
    if name == "least_in_flight":
        return LeastInFlight(rng)
    return SmoothWeighted(members, rng)
