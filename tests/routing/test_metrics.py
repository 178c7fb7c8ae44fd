"""The routing metrics: attempts by outcome, breaker state and in-flight per upstream."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from oai_gateway.observability.routing_metrics import RoutingMetrics
from tests.routing.clock import FakeClock
from tests.routing.members import target


def test_attempts_states_and_in_flight_are_exposed_per_upstream() -> None:
    registry = CollectorRegistry()
    metrics = RoutingMetrics(registry)
    local = target("local", [1, 1], FakeClock())
    first, second = local.members
    for _ in range(5):
        lease = first.lease()
        lease.failed()
        lease.release()
        metrics.attempt(first, "http_503")
    metrics.attempt(second, "ok")
    metrics.attempt(second, "something-new")
    held = second.lease()
    metrics.refresh(local.members)
    text = generate_latest(registry).decode()
    held.release()
    assert 'oai_gateway_upstream_attempts_total{outcome="http_503",upstream="local/0"} 5.0' in text
    assert 'oai_gateway_upstream_attempts_total{outcome="ok",upstream="local/1"} 1.0' in text
    assert 'oai_gateway_upstream_attempts_total{outcome="other",upstream="local/1"} 1.0' in text
    assert 'oai_gateway_upstream_breaker_state{state="open",upstream="local/0"} 1.0' in text
    assert 'oai_gateway_upstream_breaker_state{state="closed",upstream="local/0"} 0.0' in text
    assert 'oai_gateway_upstream_breaker_state{state="closed",upstream="local/1"} 1.0' in text
    assert 'oai_gateway_upstream_in_flight{upstream="local/1"} 1.0' in text
    assert 'oai_gateway_upstream_in_flight{upstream="local/0"} 0.0' in text
