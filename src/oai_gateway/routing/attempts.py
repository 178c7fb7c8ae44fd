"""One request's attempts (SPEC §11): which candidate next, one budget for every cause, and
what the answer says about them.

The candidates are the provider's upstreams, each tried at most once and chosen by the
provider's strategy, then the model's fallbacks in order (one attempt each, on an upstream
their own provider chooses). Upstreams whose breaker is open or whose `retry-after` has not
passed are skipped; when that leaves nothing to try at all, the one ready soonest is tried
anyway, so open breakers never turn a request away unanswered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from oai_gateway.errors import GatewayError, UpstreamTimeoutError
from oai_gateway.routing.failures import failure_kind, retry_after_s
from oai_gateway.routing.members import Lease, Member
from oai_gateway.routing.selection import Strategy

T = TypeVar("T")
Observer = Callable[[Member, str], None]  # (member, outcome) once per attempt, for metrics


@dataclass(frozen=True, slots=True)
class Target:
    """A provider the attempts may go to: its upstreams and how one is chosen."""

    name: str
    members: tuple[Member, ...]
    strategy: Strategy

    def first(self) -> Member | None:
        """The strategy's pick among all upstreams when none is paused or open (nearly
        always); None otherwise, for `pick` to choose among those that may be tried."""
        # This runs for every request of a routed provider: one clock reading, no list built.
        now = self.members[0].clock()
        for member in self.members:
            if member.paused_until > now or member.breaker.open:
                return None
        return self.strategy.choose(self.members)

    def pick(self, tried: set[Member]) -> Member | None:
        if not tried and (member := self.first()) is not None:
            return member
        return self._pick_among(tried, self.members[0].clock())

    def _pick_among(self, tried: set[Member], now: float) -> Member | None:
        eligible: list[Member] = []
        probes: list[Member] = []
        for member in self.members:
            if member in tried or member.paused_until > now:
                continue
            breaker = member.breaker
            if not breaker.open:
                eligible.append(member)
            elif breaker.admits():
                probes.append(member)
        # An upstream whose cooldown is over takes the next request as its probe, so it
        # recovers on the first chance instead of whenever the strategy happens to pick it.
        if probes:
            eligible = probes
        elif not eligible:
            return None
        # With one to choose from, every strategy takes it and leaves its state as it was.
        return eligible[0] if len(eligible) == 1 else self.strategy.choose(eligible)


@dataclass(slots=True)
class Candidate:
    target: Target
    member: Member
    model: str | None  # the fallback's own model name; None for the request's model
    forced: bool = False


@dataclass(slots=True)
class AttemptPlan:
    """The candidates of one request, produced one at a time as earlier ones fail."""

    primary: Target
    fallbacks: Sequence[tuple[Target, str]] = ()
    max_attempts: int = 3
    attempts: int = 0
    _tried: set[Member] = field(default_factory=set)  # the provider's own, tried once each
    _next_fallback: int = 0

    def next(self) -> Candidate | None:
        if self.attempts >= self.max_attempts:
            return None
        member = self.primary.pick(self._tried)
        if member is not None:
            self._tried.add(member)
            self.attempts += 1
            return Candidate(self.primary, member, None)
        while self._next_fallback < len(self.fallbacks):
            target, model = self.fallbacks[self._next_fallback]
            self._next_fallback += 1
            member = target.pick(set())
            if member is not None:
                return self._take(Candidate(target, member, model))
        return self._soonest() if self.attempts == 0 else None

    def made(self, member: Member) -> None:
        """Count an attempt on the provider's own `member` made before the plan's first."""
        self._tried.add(member)
        self.attempts += 1

    def _take(self, candidate: Candidate) -> Candidate:
        self.attempts += 1
        return candidate

    def _soonest(self) -> Candidate | None:
        options: list[tuple[Member, Target, str | None]]
        options = [(m, self.primary, None) for m in self.primary.members]
        options += [(m, t, model) for t, model in self.fallbacks for m in t.members]
        member, target, model = min(options, key=lambda option: option[0].ready_at)
        return self._take(Candidate(target, member, model, forced=True))

    @property
    def budget_spent(self) -> bool:
        return self.attempts >= self.max_attempts


class Sink(Protocol):
    """Where the request's log line and response headers read the attempts from."""

    upstream: str | None
    attempts: int


@dataclass(slots=True)
class Report:
    """What the response tells the client: attempts made and the upstream that answered;
    copied to `sink` when the attempts end."""

    attempts: int = 0
    upstream: str | None = None
    budget_spent: bool = False
    sink: Sink | None = None

    def headers(self) -> dict[str, str]:
        headers = {"x-gateway-attempts": str(self.attempts)}
        if self.upstream is not None:
            headers["x-gateway-upstream"] = self.upstream
        if self.budget_spent:
            headers["x-should-retry"] = "false"
        return headers

    def publish(self) -> None:
        sink = self.sink
        if sink is not None:
            sink.upstream = self.upstream
            sink.attempts = self.attempts


Attempt = Callable[[Candidate, Lease], Awaitable[T]]


async def run_attempts(
    plan: AttemptPlan,
    attempt: Attempt[T],
    *,
    report: Report,
    ttft_timeout_s: float | None = None,
    observe: Observer | None = None,
    failure: tuple[Lease, GatewayError] | None = None,
) -> tuple[T, Lease]:
    """The first answer any candidate gives and the lease to release once it is sent (a stream:
    when it ends); else the last error (a failure, or the client's answer), with the headers.
    `failure` is a first attempt on the primary target, made and failed before the loop."""
    error: GatewayError | None = None
    try:
        if failure is not None:
            lease, exc = failure
            plan.made(lease.member)
            report.attempts += 1
            report.upstream = lease.member.label
            error = failed(lease, exc, report, observe)
        while (candidate := plan.next()) is not None:
            report.attempts += 1
            report.upstream = candidate.member.label
            lease = candidate.member.lease(forced=candidate.forced)
            try:
                work = attempt(candidate, lease)
                if ttft_timeout_s is not None:
                    work = timed(work, ttft_timeout_s, candidate.member)
                answer = await work
            except GatewayError as exc:
                error = failed(lease, exc, report, observe)
                continue
            except BaseException:
                lease.release()
                raise
            lease.succeeded()
            if observe is not None:
                observe(lease.member, "ok")
            return answer, lease
        raise _exhausted(plan, error, report)
    finally:
        report.publish()


def _exhausted(plan: AttemptPlan, error: GatewayError | None, report: Report) -> Exception:
    report.budget_spent = plan.budget_spent
    if error is None:  # pragma: no cover - a plan always yields its first candidate
        return RuntimeError("no candidate to attempt")
    return _with_headers(error, report)


async def timed(work: Awaitable[T], timeout_s: float, member: Member) -> T:
    """`work`, failed as a ttft timeout when it gives nothing within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await work
    except TimeoutError:
        error = UpstreamTimeoutError(
            f"Upstream {member.label} sent nothing within ttft_timeout_s ({timeout_s:g} s)."
        )
        error.failure = "ttft_timeout"
        raise error from None


def failed(
    lease: Lease, error: GatewayError, report: Report, observe: Observer | None
) -> GatewayError:
    """The error of a failed attempt, for the next one to replace; raised with the attempt
    headers at once when it is the client's answer (not a failure of the upstream)."""
    kind = _settle(lease, error)
    _observe(observe, lease.member, kind or "answered")
    if kind is None:
        raise _with_headers(error, report) from None
    return error


def _settle(lease: Lease, error: GatewayError) -> str | None:
    """Report a failed attempt to the breaker and pause a rate-limited upstream."""
    kind = failure_kind(error)
    if kind is None:
        lease.succeeded()  # the upstream answered; the request was what it refused
    else:
        lease.failed()
        if kind == "http_429":
            pause = retry_after_s(error.headers)
            if pause is not None:
                lease.member.pause(pause)
    lease.release()
    return kind


def _with_headers(error: GatewayError, report: Report) -> GatewayError:
    error.headers = {**error.headers, **report.headers()}
    return error


def _observe(observe: Observer | None, member: Member, outcome: str) -> None:
    if observe is not None:
        observe(member, outcome)
