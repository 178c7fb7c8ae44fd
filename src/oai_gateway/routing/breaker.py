"""One upstream's circuit breaker (SPEC §11): closed, open, half-open with a single probe.

Time comes from an injected clock, so the thresholds and cooldowns are tested without sleeping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Ticket(Enum):
    """How an attempt was let through, which decides what its outcome does to the breaker."""

    NORMAL = "normal"  # the breaker was closed
    PROBE = "probe"  # the single half-open probe: its outcome closes or reopens the breaker
    FORCED = "forced"  # every candidate was open and this one's cooldown ended first


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    consecutive_failures: int = 5
    window_s: float = 30.0
    window_min_attempts: int = 20
    failure_ratio: float = 0.5
    cooldown_s: float = 5.0
    max_cooldown_s: float = 60.0


class CircuitBreaker:
    __slots__ = (
        "_clock",
        "_consecutive",
        "_cooldown_s",
        "_failures",
        "_policy",
        "_probing",
        "_reopen_at",
        "_window",
        "open",
    )

    def __init__(self, clock: Clock, policy: BreakerPolicy | None = None) -> None:
        self._clock = clock
        self._policy = policy or BreakerPolicy()
        # Public, so the request path reads a closed breaker without a call.
        self.open = False
        self._probing = False
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()
        self._failures = 0
        self._cooldown_s = self._policy.cooldown_s
        self._reopen_at = 0.0

    @property
    def closed(self) -> bool:
        return not self.open

    @property
    def state(self) -> BreakerState:
        if not self.open:
            return BreakerState.CLOSED
        if self._probing or self._clock() >= self._reopen_at:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def ready_at(self) -> float:
        """When this breaker next lets an attempt through (now or earlier when it does)."""
        return self._reopen_at if self.open else float("-inf")

    def admits(self) -> bool:
        """Whether an attempt may go through now without bypassing the breaker."""
        if not self.open:
            return True
        return not self._probing and self._clock() >= self._reopen_at

    def admit(self, *, forced: bool = False) -> Ticket:
        """Let one attempt through; the caller checked `admits()` unless `forced`."""
        if not self.open:
            return Ticket.NORMAL
        if not self._probing and self._clock() >= self._reopen_at:
            self._probing = True
            return Ticket.PROBE
        if not forced:
            raise RuntimeError("the breaker is open; check admits() first")
        return Ticket.FORCED

    def record(self, ticket: Ticket, *, failed: bool) -> None:
        """The outcome of an attempt this breaker let through."""
        if ticket is Ticket.PROBE:
            self._probing = False
            if failed:
                self._reopen(longer=True)
            else:
                self._close()
        elif ticket is Ticket.FORCED:
            # Evidence the upstream works again; a failure changes nothing, so a deadline is
            # never moved earlier by traffic that had to bypass the breaker.
            if not failed:
                self._close()
        elif not self.open:
            self._count(failed)

    def succeeded(self, ticket: Ticket) -> None:
        """`record(ticket, failed=False)`, the outcome of nearly every attempt, made cheap."""
        if ticket is Ticket.NORMAL and not self.open and not self._failures:
            # No failure in the window: a success cannot trip either rule, so it is only
            # remembered for the failure ratio of the next 30 s.
            now = self._clock()
            window = self._window
            window.append((now, False))
            horizon = now - self._policy.window_s
            while window[0][0] <= horizon:
                window.popleft()
            self._consecutive = 0
        else:
            self.record(ticket, failed=False)

    def release(self, ticket: Ticket) -> None:
        """An attempt that ended without an outcome (the client left): free the probe slot."""
        if ticket is Ticket.PROBE:
            self._probing = False

    def _count(self, failed: bool) -> None:
        policy = self._policy
        now = self._clock()
        window = self._window
        window.append((now, failed))
        self._failures += failed
        while window and window[0][0] <= now - policy.window_s:
            self._failures -= window.popleft()[1]
        self._consecutive = self._consecutive + 1 if failed else 0
        over_ratio = len(
            window
        ) >= policy.window_min_attempts and self._failures >= policy.failure_ratio * len(window)
        if self._consecutive >= policy.consecutive_failures or over_ratio:
            self._reopen(longer=False)

    def _reopen(self, *, longer: bool) -> None:
        if longer:
            self._cooldown_s = min(self._cooldown_s * 2, self._policy.max_cooldown_s)
        self.open = True
        self._reopen_at = self._clock() + self._cooldown_s

    def _close(self) -> None:
        self.open = False
        self._probing = False
        self._consecutive = 0
        self._window.clear()
        self._failures = 0
        self._cooldown_s = self._policy.cooldown_s
