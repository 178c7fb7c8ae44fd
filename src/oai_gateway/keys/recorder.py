"""One usage record per data-plane request of a known key, made when the response is done
(SPEC §10.3): the request's context has its final status, its duration and the usage the
upstream reported by then.

A request cut short without usage after its admission reserved tokens (a stream the client or
the upstream broke off, a client that left while waiting) is charged its reservation: the
tokens are counted as output, the most expensive kind, so the ledger never reports less than was
held. An error answered before anything was generated (an upstream 4xx or 5xx) costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from oai_gateway.config.settings import ProviderSpec
from oai_gateway.keys.ledger import Ledger
from oai_gateway.keys.usage import UsageRecord, cost_nanos, usage_tokens
from oai_gateway.observability.context import RequestContext

DATA_PLANE = "/{provider}/v1/"


CLIENT_CLOSED = 499


def _cut(context: RequestContext, status: int) -> bool:
    """Whether the request was broken off after the upstream may have started generating."""
    started = context.response_started and not context.response_complete
    return context.reserved_tokens > 0 and (started or status == CLIENT_CLOSED)


class UsageRecorder:
    def __init__(self, ledger: Ledger, providers: Mapping[str, ProviderSpec]) -> None:
        self.ledger = ledger
        self._prices = {name: spec.prices for name, spec in providers.items()}

    def observe(self, context: RequestContext, status: int) -> None:
        """Record the request if a key made it on a data-plane route."""
        if context.key_id is None or not context.route.startswith(DATA_PLANE):
            return
        input_tokens, output_tokens, cached = usage_tokens(context.usage)
        if context.usage is None and _cut(context, status):
            output_tokens = context.reserved_tokens
        prices = self._prices.get(context.provider or "", {})
        cost, priced = cost_nanos(prices, context.model, input_tokens, output_tokens)
        self.ledger.record(
            UsageRecord(
                key_id=context.key_id,
                route=context.route,
                provider=context.provider,
                model=context.model,
                status=status,
                stream=context.stream,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_tokens=cached,
                cost_nanos=cost,
                priced=priced,
                duration_ms=round(context.elapsed_s() * 1000.0, 3),
                timestamp=time.time(),
                request_id=context.request_id,
            )
        )
