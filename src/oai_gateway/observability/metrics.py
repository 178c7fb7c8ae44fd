"""Prometheus metrics (SPEC §4.6), one registry per app; correct across `--workers N`.

With several workers, prometheus-client's multiprocess mode keeps each worker's values in files
under PROMETHEUS_MULTIPROC_DIR (the CLI creates it) and `/metrics` adds them up, so a scrape that
lands on any worker sees the whole process group.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from oai_gateway.observability.context import RequestContext
from oai_gateway.observability.model_labels import ModelLabels
from oai_gateway.observability.series import HistogramWriter, Inc, counter_inc

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()


_MAX_CACHED_SERIES = 4096  # provider names come from requests; bound what they can pin


@dataclass(frozen=True, slots=True)
class _Series:
    requests: Inc
    request_seconds: HistogramWriter
    # None for requests that never reached a provider (health, /metrics, 401, unknown paths):
    # creating their children would expose empty upstream histograms for those routes.
    upstream_seconds: HistogramWriter | None
    overhead_seconds: HistogramWriter | None


_STATUS = ["provider", "route", "status"]
_TOKEN_LABELS = ["provider", "model", "kind"]
_TOKEN_KINDS = (("prompt_tokens", "prompt"), ("completion_tokens", "completion"))


def _in_flight(target: CollectorRegistry | None) -> Gauge:
    return Gauge(
        "oai_gateway_requests_in_flight",
        "Requests being served",
        registry=target,
        multiprocess_mode="livesum",
    )


def _counter(
    name: str, documentation: str, labels: list[str], target: CollectorRegistry | None
) -> Counter:
    return Counter(name, documentation, labels, registry=target)


def _histogram(
    name: str,
    documentation: str,
    target: CollectorRegistry | None,
    buckets: Sequence[float] = LATENCY_BUCKETS,
) -> Histogram:
    """A histogram by provider and route."""
    return Histogram(name, documentation, ["provider", "route"], buckets=buckets, registry=target)


def _bounded_put(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) < _MAX_CACHED_SERIES:
        cache[key] = value


class GatewayMetrics:
    def __init__(self, model_labels: ModelLabels | None = None) -> None:
        self.model_labels = model_labels or ModelLabels({})  # clients choose `model`: bounded
        self._cache: dict[tuple[str, str, int], _Series] = {}
        # Bound writers of the children made for earlier requests, by label values.
        self._first_chunk: dict[tuple[str, str], HistogramWriter] = {}
        self._tokens: dict[tuple[str, str, str], Inc] = {}
        # Gauges read from live state when scraped (routing_metrics.py) rather than on each request.
        self.before_exposition: list[Callable[[], None]] = []
        self._multiprocess_dir = os.environ.get(MULTIPROCESS_ENV)
        # In multiprocess mode values live in files, not in a registry of this process.
        self.registry = CollectorRegistry()
        target = None if self._multiprocess_dir else self.registry
        self.requests = _counter(
            "oai_gateway_requests", "Requests by provider, route and status", _STATUS, target
        )
        self.request_seconds = _histogram(
            "oai_gateway_request_duration_seconds", "Whole request time, to the last byte", target
        )
        self.upstream_seconds = _histogram(
            "oai_gateway_upstream_duration_seconds", "Time spent waiting on the upstream", target
        )
        overhead = "oai_gateway_overhead_seconds", "Request time minus upstream time"
        self.overhead_seconds = _histogram(*overhead, target, OVERHEAD_BUCKETS)
        self.first_chunk_seconds = _histogram(
            "oai_gateway_time_to_first_chunk_seconds", "Time to the first streamed chunk", target
        )
        self.tokens = _counter(
            "oai_gateway_tokens", "Tokens reported by upstreams", _TOKEN_LABELS, target
        )
        self.upstream_errors = _counter(
            "oai_gateway_upstream_errors", "Upstream failures by kind", ["provider", "kind"], target
        )
        self.in_flight = _in_flight(target)

    def _series(self, provider: str | None, route: str, status: int) -> _Series:
        # `labels()` takes a lock and builds a key on every call; the children never change.
        key = (provider or "", route, status)
        series = self._cache.get(key)
        if series is None:
            name = provider or ""
            series = _Series(
                counter_inc(self.requests.labels(name, route, str(status))),
                HistogramWriter(self.request_seconds.labels(name, route)),
                None if provider is None else self._histogram(self.upstream_seconds, name, route),
                None if provider is None else self._histogram(self.overhead_seconds, name, route),
            )
            _bounded_put(self._cache, key, series)
        return series

    @staticmethod
    def _histogram(histogram: Histogram, provider: str, route: str) -> HistogramWriter:
        return HistogramWriter(histogram.labels(provider, route))

    def _first_chunk_writer(self, provider: str, route: str) -> HistogramWriter:
        writer = self._first_chunk.get((provider, route))
        if writer is None:
            writer = self._histogram(self.first_chunk_seconds, provider, route)
            _bounded_put(self._first_chunk, (provider, route), writer)
        return writer

    def _token_inc(self, provider: str, model: str, kind: str) -> Inc:
        inc = self._tokens.get((provider, model, kind))
        if inc is None:
            inc = counter_inc(self.tokens.labels(provider, model, kind))
            _bounded_put(self._tokens, (provider, model, kind), inc)
        return inc

    def observe(self, context: RequestContext, status: int) -> None:
        provider = context.provider
        total = context.elapsed_s()
        series = self._series(provider, context.route or "unmatched", status)
        series.requests(1.0)
        series.request_seconds.observe(total)
        if provider is None:
            return
        assert series.upstream_seconds is not None
        assert series.overhead_seconds is not None
        series.upstream_seconds.observe(context.upstream_s)
        series.overhead_seconds.observe(max(total - context.upstream_s, 0.0))
        if context.first_chunk_s is not None:
            # Only streams have a first chunk; non-streaming routes get no empty series.
            self._first_chunk_writer(provider, context.route).observe(context.first_chunk_s)
        if context.upstream_error is not None:
            self.upstream_errors.labels(provider, context.upstream_error).inc()
        usage: Any = context.usage
        if usage and context.model:
            self._count_tokens(provider, context.model, usage)

    def _count_tokens(self, provider: str, model: str, usage: Any) -> None:
        label = self.model_labels.label(provider, model)
        for field, kind in _TOKEN_KINDS:
            count = usage.get(field)
            if isinstance(count, int) and count > 0:
                self._token_inc(provider, label, kind)(count)

    def exposition(self) -> bytes:
        for refresh in self.before_exposition:
            refresh()
        if self._multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
