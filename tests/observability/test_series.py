"""The bound writers of observability/series.py write what prometheus-client's own API writes.

They reach into a child's values; a prometheus-client release that renames or reshapes them must
fail here rather than quietly expose different numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from oai_gateway.observability.metrics import LATENCY_BUCKETS
from oai_gateway.observability.series import HistogramWriter, counter_inc

AMOUNTS = (0.0, 0.0005, 0.001, 0.0011, 0.25, 0.3, 7.0, 120.0, 121.0, 1e9)


def _exposition(update: Callable[[Any, Any, Any], None]) -> bytes:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["a"], registry=registry)
    gauge = Gauge("g", "g", registry=registry, multiprocess_mode="livesum")
    histogram = Histogram("h", "h", ["a"], buckets=LATENCY_BUCKETS, registry=registry)
    update(counter.labels("x"), gauge, histogram.labels("x"))
    return b"\n".join(
        line for line in generate_latest(registry).splitlines() if b"_created" not in line
    )


def _public(counter: Any, gauge: Any, histogram: Any) -> None:
    counter.inc()
    counter.inc(41)
    gauge.inc()
    gauge.inc()
    gauge.dec()
    for amount in AMOUNTS:
        histogram.observe(amount)


def _bound(counter: Any, gauge: Any, histogram: Any) -> None:
    inc = counter_inc(counter)
    inc(1.0)
    inc(41)
    add = counter_inc(gauge)
    add(1.0)
    add(1.0)
    add(-1.0)
    writer = HistogramWriter(histogram)
    for amount in AMOUNTS:
        writer.observe(amount)


def test_bound_writers_expose_what_the_public_api_exposes() -> None:
    assert _exposition(_bound) == _exposition(_public)


@pytest.mark.parametrize("amount", [*LATENCY_BUCKETS, float("inf")])
def test_an_amount_on_a_bound_lands_in_that_bucket(amount: float) -> None:
    def public(counter: Any, gauge: Any, histogram: Any) -> None:
        histogram.observe(amount)

    def bound(counter: Any, gauge: Any, histogram: Any) -> None:
        HistogramWriter(histogram).observe(amount)

    assert _exposition(bound) == _exposition(public)


def test_multiprocess_values_keep_their_own_inc(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In multiprocess mode the writers go through the value's `inc`, which writes its file."""
    from prometheus_client import values

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    value_class = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    monkeypatch.setattr(values, "ValueClass", value_class)
    counter = Counter("mp", "mp", ["a"], registry=None)
    histogram = Histogram("mph", "mph", ["a"], registry=None)
    inc = counter_inc(counter.labels("x"))
    writer = HistogramWriter(histogram.labels("x"))
    inc(2.0)
    writer.observe(0.3)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    text = generate_latest(registry).decode()
    assert 'mp_total{a="x"} 2.0' in text
    assert 'mph_bucket{a="x",le="0.5"} 1.0' in text
    assert 'mph_sum{a="x"} 0.3' in text
