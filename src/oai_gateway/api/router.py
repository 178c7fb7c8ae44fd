"""The ASGI application at the bottom of the middleware stack: finds the route in the table,
authenticates, resolves the provider, and hands an `Exchange` to the route's handler.

Every error, wherever it is raised below, is rendered here the same way.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping

from oai_gateway.api.exchange import Exchange, Services
from oai_gateway.api.render import Responder
from oai_gateway.api.table import Auth, Route, RouteTable
from oai_gateway.errors import (
    INTERNAL_ERROR,
    ClientDisconnectedError,
    GatewayError,
    MethodNotAllowedError,
    RouteNotFoundError,
    UnsupportedOperationError,
    UpstreamError,
)
from oai_gateway.observability.context import RequestContext, request_context
from oai_gateway.providers.base import Provider
from oai_gateway.server.asgi import Receive, Scope, Send

_log = logging.getLogger("oai_gateway")

# Raises AuthenticationError for a request without the credential; returns who it is. May be
# a coroutine function: a virtual key's record can need a store lookup.
Authenticate = Callable[[Scope], object]


def _nobody(scope: Scope) -> object:
    return None


async def _identify(authenticate: Authenticate, scope: Scope) -> object:
    principal = authenticate(scope)
    return await principal if inspect.isawaitable(principal) else principal


class Router:
    def __init__(
        self,
        table: RouteTable,
        services: Services,
        authenticators: Mapping[Auth, Authenticate],
    ) -> None:
        self._table = table
        self._services = services
        self._authenticators = {Auth.NONE: _nobody, **authenticators}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        context = request_context(scope)
        respond = Responder(send, context)
        try:
            exchange = await self._resolve(scope, receive, respond, context)
            await exchange.route.handler(self._services, exchange)
        except GatewayError as exc:
            _note_upstream_error(context, exc)
            await respond.error(exc)
        except ClientDisconnectedError:
            respond.client_left()
        except Exception:
            _log.exception("unexpected error", extra={"request_id": context.request_id})
            await respond.error(INTERNAL_ERROR)

    async def _resolve(
        self, scope: Scope, receive: Receive, respond: Responder, context: RequestContext
    ) -> Exchange:
        path: str = scope["path"]
        method: str = scope["method"]
        section, methods, params = self._table.find(path)
        principal = None
        if section.auth is not None:
            principal = await _identify(self._authenticators[section.auth], scope)
        if methods is None:
            raise RouteNotFoundError(f"Unknown path: {method} {path[:200]}.")
        context.route = methods.label
        route = methods.by_method.get(method)
        if route is None:
            raise MethodNotAllowedError(
                f"{methods.label} accepts {methods.allow}, not {method}.",
                headers={"allow": methods.allow},
            )
        if section.auth is None:
            principal = await _identify(self._authenticators[route.auth], scope)
        provider = self._provider(route, params, context)
        return Exchange(scope, receive, respond, context, route, params, principal, provider)

    def _provider(
        self, route: Route, params: Mapping[str, str], context: RequestContext
    ) -> Provider | None:
        name = params.get("provider")
        if name is None:
            return None
        provider = self._services.registry.get(name)
        # Only configured names become metric labels: a URL must not mint new series.
        context.provider = name
        if route.operation in provider.unsupported:
            raise UnsupportedOperationError(
                f"Provider '{name}' does not support {route.operation}.",
            )
        return provider


def _note_upstream_error(context: RequestContext, exc: GatewayError) -> None:
    if isinstance(exc, UpstreamError):
        context.upstream_error = exc.code
    elif exc.upstream_status is not None:
        context.upstream_error = f"http_{exc.upstream_status}"
