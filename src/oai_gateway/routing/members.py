"""An upstream's live state within its provider: load, breaker and `retry-after` pause."""

from __future__ import annotations

from dataclasses import dataclass, field

from oai_gateway.routing.breaker import CircuitBreaker, Clock, Ticket

# An upstream's `retry-after` is honoured up to this long, so one odd header cannot take an
# upstream out of rotation for a day.
MAX_PAUSE_S = 600.0


@dataclass(eq=False, slots=True)
class Member:
    """One upstream of a provider, counted from 0 in the providers file's order."""

    provider: str
    index: int
    weight: int
    breaker: CircuitBreaker
    clock: Clock
    in_flight: int = 0
    paused_until: float = float("-inf")
    score: float = field(default=0.0)  # the smooth weighted strategy's running score
    # How responses, metrics and logs name it: never by its URL, which may hold secrets.
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.label = f"{self.provider}/{self.index}"

    def available(self) -> bool:
        return self.paused_until <= self.clock() and self.breaker.admits()

    @property
    def ready_at(self) -> float:
        return max(self.breaker.ready_at, self.paused_until)

    def pause(self, seconds: float) -> None:
        """Skip this upstream for `seconds` (its `retry-after`); never shortens a longer pause."""
        until = self.clock() + min(max(seconds, 0.0), MAX_PAUSE_S)
        self.paused_until = max(self.paused_until, until)

    def lease(self, *, forced: bool = False) -> Lease:
        breaker = self.breaker
        # A closed breaker lets every attempt through: no call to ask it.
        return Lease(self, breaker.admit(forced=forced) if breaker.open else Ticket.NORMAL)


class Lease:
    """One attempt on a member: counted in flight from the start until `release` (for a stream,
    until the stream ends), and its outcome reported to the breaker exactly once."""

    __slots__ = ("_done", "_released", "member", "ticket")

    def __init__(self, member: Member, ticket: Ticket) -> None:
        self.member = member
        self.ticket = ticket
        self._done = False
        self._released = False
        member.in_flight += 1

    def succeeded(self) -> None:
        if not self._done:
            self._done = True
            self.member.breaker.succeeded(self.ticket)

    def failed(self) -> None:
        self._outcome(failed=True)

    def _outcome(self, *, failed: bool) -> None:
        if not self._done:
            self._done = True
            self.member.breaker.record(self.ticket, failed=failed)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.member.in_flight -= 1
        if not self._done:
            self._done = True
            self.member.breaker.release(self.ticket)
