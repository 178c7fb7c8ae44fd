"""`Exchange`: one request as the router hands it to a handler; `Services`: the long-lived
objects handlers use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oai_gateway.api.render import Responder
from oai_gateway.api.table import Route
from oai_gateway.observability.context import RequestContext
from oai_gateway.observability.metrics import GatewayMetrics
from oai_gateway.providers.base import Provider
from oai_gateway.providers.registry import ProviderRegistry
from oai_gateway.server.asgi import Receive, Scope

if TYPE_CHECKING:
    from oai_gateway.api.enforcement import Enforcement
    from oai_gateway.keys.admin import KeyAdmin


@dataclass(frozen=True, slots=True)
class Services:
    registry: ProviderRegistry
    metrics: GatewayMetrics
    max_body: int
    enforcement: Enforcement
    admin: KeyAdmin | None = None  # the admin API's calls, when a store holds virtual keys


@dataclass(frozen=True, slots=True)
class Exchange:
    """The request's scope and channels, what the router resolved for it, and its responder.

    `principal` is what the route's authenticator returned (None for gateway keys);
    `params` are the template's parameters (`provider`, `model`, …).
    """

    scope: Scope
    receive: Receive
    respond: Responder
    context: RequestContext
    route: Route
    params: Mapping[str, str]
    principal: object
    resolved: Provider | None  # set for routes under /{provider}/v1

    @property
    def provider(self) -> Provider:
        if self.resolved is None:
            raise RuntimeError(f"{self.route.template} is not a provider route")
        return self.resolved
