"""Metrics of SPEC §11: attempts by outcome, breaker state and in-flight requests per upstream.

Upstreams are labelled `provider/index`, never by URL, so the series are bounded by the
configuration. Breaker states and in-flight counts are read from the members when `/metrics`
is scraped, which costs the request path nothing; so are the attempts counted in one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from oai_gateway.observability.metrics import MULTIPROCESS_ENV
from oai_gateway.routing.breaker import BreakerState
from oai_gateway.routing.members import Member

# The outcomes `run_attempts` reports: served, the client's answer, or a §11 failure.
OUTCOMES = frozenset(
    {
        "ok",
        "answered",
        "refused",
        "reset",
        "connect_timeout",
        "ttft_timeout",
        "http_429",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
    }
)


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        target = None if os.environ.get(MULTIPROCESS_ENV) else registry
        self.attempts = Counter(
            "oai_gateway_upstream_attempts",
            "Upstream attempts of routed providers by outcome",
            ["upstream", "outcome"],
            registry=target,
        )
        self.breaker = Gauge(
            "oai_gateway_upstream_breaker_state",
            "1 for each upstream's current breaker state (closed, open, half_open)",
            ["upstream", "state"],
            registry=target,
            multiprocess_mode="liveall",
        )
        self.in_flight = Gauge(
            "oai_gateway_upstream_in_flight",
            "Requests in flight per upstream (streams until they end)",
            ["upstream"],
            registry=target,
            multiprocess_mode="livesum",
        )
        self._children: dict[tuple[str, str], Counter] = {}
        # One process: attempts are counted in a dict and added to the counter when scraped
        # (`refresh`), so an attempt costs a dict update, not the client's checks and lock.
        # Several workers: each writes its own file at once, since any worker may be scraped.
        self._pending: dict[tuple[str, str], int] = {}
        if target is None:
            self.attempt = self._count_now  # type: ignore[method-assign]

    def attempt(self, member: Member, outcome: str) -> None:
        key = (member.label, outcome)
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1

    def _count_now(self, member: Member, outcome: str) -> None:
        self._child(member.label, outcome).inc()

    def _child(self, label: str, outcome: str) -> Counter:
        key = (label, outcome if outcome in OUTCOMES else "other")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.attempts.labels(*key)
        return child

    def refresh(self, members: Iterable[Member]) -> None:
        """Add the attempts counted since the last scrape; copy each member's breaker state and
        in-flight count into the gauges."""
        pending, self._pending = self._pending, {}
        for (label, outcome), count in pending.items():
            self._child(label, outcome).inc(count)
        for member in members:
            state = member.breaker.state
            for each in BreakerState:
                self.breaker.labels(member.label, each.value).set(1 if each is state else 0)
            self.in_flight.labels(member.label).set(member.in_flight)
