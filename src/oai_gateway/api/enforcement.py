"""The choke point every data-plane request passes (SPEC's per-key limits and usage plug in here).

`admit` runs once per request under `/{provider}/v1`, after authentication, provider
resolution, the body checks and the model allow-list, and before anything is sent upstream:
raising a `GatewayError` there refuses the request with that error. It is given the parsed
request body (None for the model routes); `exchange.respond.add_headers` puts headers on
whatever answer follows. `settle` runs exactly once
for every admitted request when its answer or stream has ended, however it ended (complete,
failed, client gone, shutdown); `exchange.context.usage` then holds the usage the upstream
reported, or None.
"""

from __future__ import annotations

from typing import Protocol

from oai_gateway.api.exchange import Exchange
from oai_gateway.providers.base import Json


class Enforcement(Protocol):
    async def admit(self, exchange: Exchange, body: Json | None) -> None: ...
    async def settle(self, exchange: Exchange) -> None: ...


class NoEnforcement:
    """Admits everything and records nothing: the gateway without per-key policy."""

    async def admit(self, exchange: Exchange, body: Json | None) -> None:
        return None

    async def settle(self, exchange: Exchange) -> None:
        return None
