"""The store's metrics on the gateway's registry: store errors always, per-key counters only
with METRICS_PER_KEY=true (one series per key id: the operator opts into that cardinality)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter

from oai_gateway.keys.limits import used_tokens
from oai_gateway.observability.metrics import MULTIPROCESS_ENV, GatewayMetrics


class KeyMetrics:
    def __init__(self, metrics: GatewayMetrics, *, per_key: bool) -> None:
        target = None if os.environ.get(MULTIPROCESS_ENV) else metrics.registry
        self.store_errors = Counter(
            "oai_gateway_store_errors",
            "Calls to the key store that failed (unreachable, timed out)",
            ["operation"],
            registry=target,
        )
        self._per_key = per_key
        if per_key:
            self.key_requests = Counter(
                "oai_gateway_key_requests",
                "Requests by key id and status",
                ["key_id", "status"],
                registry=target,
            )
            self.key_tokens = Counter(
                "oai_gateway_key_tokens",
                "Tokens by key id",
                ["key_id", "kind"],
                registry=target,
            )

    def store_error(self, operation: str) -> None:
        self.store_errors.labels(operation).inc()

    def request(self, key_id: str, status: int, usage: Mapping[str, Any] | None) -> None:
        if not self._per_key:
            return
        self.key_requests.labels(key_id, str(status)).inc()
        used = used_tokens(usage)
        if used is not None:
            self.key_tokens.labels(key_id, "prompt").inc(used[0])
            self.key_tokens.labels(key_id, "completion").inc(used[1])
