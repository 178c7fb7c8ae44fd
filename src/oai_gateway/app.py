"""The composition root: `create_app(config)` builds every long-lived object exactly once."""

from __future__ import annotations

import gc
import logging

from oai_gateway.api.exchange import Services
from oai_gateway.api.router import Router
from oai_gateway.api.routes import ROUTES
from oai_gateway.api.table import Auth
from oai_gateway.config.loader import Config, load_config
from oai_gateway.keys.admin import KeyAdmin
from oai_gateway.keys.admin_http import AdminAuthenticator
from oai_gateway.keys.enforcement import KeyEnforcement
from oai_gateway.keys.ledger import Ledger
from oai_gateway.keys.metrics import KeyMetrics
from oai_gateway.keys.recorder import UsageRecorder
from oai_gateway.keys.store import open_store
from oai_gateway.middleware.cors import CORSMiddleware
from oai_gateway.middleware.lifecycle import RequestLifecycleMiddleware
from oai_gateway.middleware.request_gate import RequestGate
from oai_gateway.observability.log import configure_logging
from oai_gateway.observability.metrics import GatewayMetrics
from oai_gateway.observability.model_labels import ModelLabels
from oai_gateway.observability.redact import Redactor
from oai_gateway.observability.routing_metrics import RoutingMetrics
from oai_gateway.observability.tracing import flush as flush_tracing
from oai_gateway.observability.tracing import instrument as instrument_tracing
from oai_gateway.providers.registry import ProviderRegistry
from oai_gateway.server.allocator import keep_large_buffers_in_heap
from oai_gateway.server.asgi import ASGIApp, Receive, Scope, Send

_log = logging.getLogger("oai_gateway")


class GatewayApp:
    """The ASGI application: the middleware stack around the router, plus lifespan."""

    def __init__(self, config: Config) -> None:
        settings = config.settings
        self.config = config
        self.redactor = Redactor(config.secrets())
        self.registry = ProviderRegistry(config.providers, self.redactor)
        allow_lists = {name: p.spec.models for name, p in self.registry.providers.items()}
        self.metrics = GatewayMetrics(ModelLabels(allow_lists))
        routing_metrics = RoutingMetrics(self.metrics.registry)
        fleet = self.registry.fleet
        fleet.observe = routing_metrics.attempt
        self.metrics.before_exposition.append(lambda: routing_metrics.refresh(fleet.members()))
        self.keys = key_enforcement(config, self.metrics)
        store = self.keys.store
        admin = None if store is None else KeyAdmin(store)
        services = Services(
            self.registry, self.metrics, settings.max_request_bytes, self.keys, admin
        )
        admin_key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
        admin_auth = AdminAuthenticator(admin_key, store=store is not None)
        authenticators = {Auth.GATEWAY: self.keys.authenticate, Auth.ADMIN: admin_auth.check}
        app: ASGIApp = Router(ROUTES, services, authenticators)
        keyless = not (settings.allowed_api_keys or settings.store_url)
        app = RequestGate(app, check_host=keyless, allowed_hosts=settings.allowed_hosts)
        if settings.cors_allow_origins:
            app = CORSMiddleware(app, settings.cors_allow_origins)
        # OpenTelemetry only when OTEL_* variables configure it; otherwise `app` is unchanged.
        app = instrument_tracing(app)
        self.ledger = None if self.keys.store is None else Ledger(self.keys.store)
        recorder = None
        if self.ledger is not None:
            recorder = UsageRecorder(self.ledger, {p.name: p for p in config.providers}).observe
        self._app = RequestLifecycleMiddleware(
            app, self.metrics, security_headers=settings.enable_security_headers, on_done=recorder
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self._app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # a store that cannot be opened, for one
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.registry.aclose()
                if self.ledger is not None:
                    await self.ledger.aclose()  # every queued record, before the store closes
                await self.keys.aclose()
                flush_tracing()  # spans still batched, before the process ends
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        await self.registry.start()
        await self.keys.start()
        if self.ledger is not None:
            self.ledger.start()
        keep_large_buffers_in_heap()
        # Everything built so far lives as long as the process: move it out of the collector's
        # reach, so full collections under load only walk what requests allocate.
        gc.freeze()
        settings = self.config.settings
        if not self.keys.authenticator.enabled:
            _log.warning(
                "ALLOWED_API_KEYS is empty: serving without authentication on %s",
                settings.service_host,
            )
        _log.info(
            "providers ready",
            extra={"providers": sorted(self.registry.providers)},
        )


def key_enforcement(config: Config, metrics: GatewayMetrics) -> KeyEnforcement:
    """Static keys always; virtual keys, limits and budgets when STORE_URL names a store."""
    settings = config.settings
    store = open_store(settings.store_url) if settings.store_url else None
    return KeyEnforcement(
        [k.get_secret_value() for k in settings.allowed_api_keys],
        store,
        KeyMetrics(metrics, per_key=settings.metrics_per_key),
        failure_open=settings.store_failure_mode == "open",
        providers={p.name: p for p in config.providers},
    )


def create_app(config: Config) -> GatewayApp:
    return GatewayApp(config)


def app_from_environment() -> GatewayApp:
    """Factory for worker processes, which each read the configuration once at their start."""
    config = load_config()
    redactor = Redactor(config.secrets())
    configure_logging(config.settings.log_level, config.settings.log_format, redactor)
    return create_app(config)
