"""The provider registry: built once from configuration at the composition root.

Adding a provider kind is one module building a `Dialect` plus one entry in `KINDS`; the
configuration takes the kind names and each kind's `KindConfig` from here (config/settings.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from oai_gateway.config.settings import ProviderSpec
from oai_gateway.errors import ModelNotFoundError, ProviderNotFoundError
from oai_gateway.observability.redact import Redactor
from oai_gateway.providers import cerebras, ollama, openai_compat
from oai_gateway.providers.base import Provider
from oai_gateway.providers.dialect import Dialect
from oai_gateway.providers.provider import DialectProvider
from oai_gateway.routing.fleet import build_fleet
from oai_gateway.routing.provider import RoutedProvider

KINDS: Mapping[str, Dialect] = {
    "openai": openai_compat.DIALECT,
    "ollama": ollama.DIALECT,
    "cerebras": cerebras.DIALECT,
}


class ProviderRegistry:
    """Provider name -> provider; built-ins left unconfigured are remembered with the reason."""

    def __init__(self, specs: Iterable[ProviderSpec], redactor: Redactor) -> None:
        self._providers: dict[str, Provider] = {}
        self._unconfigured: dict[str, str] = {}
        specs = list(specs)
        for spec in specs:
            if spec.unconfigured is not None:
                self._unconfigured[spec.name] = spec.unconfigured
            elif not spec.routed:
                self._providers[spec.name] = DialectProvider(spec, redactor, KINDS[spec.kind])
        # Providers with several upstreams or fallbacks (SPEC §11): one pool per upstream.
        self.fleet, routed = build_fleet(specs, lambda spec: upstream_provider(spec, redactor))
        self._providers.update(routed)

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self._providers

    def get(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is not None:
            return provider
        reason = self._unconfigured.get(name)
        if reason is not None:
            raise ProviderNotFoundError(
                f"The provider '{name}' is not configured on this gateway: {reason}."
            )
        raise ProviderNotFoundError(
            f"Unknown provider '{name}'. Configured providers are served at /{{provider}}/v1."
        )

    async def start(self) -> None:
        await asyncio.gather(self.fleet.start(), *(p.start() for p in self._providers.values()))

    async def aclose(self) -> None:
        await asyncio.gather(self.fleet.aclose(), *(p.aclose() for p in self._providers.values()))

    async def readiness(self) -> dict[str, str | None]:
        """Each provider's problem (None when it answers); unconfigured ones with their reason."""
        names = list(self._providers)
        results = await asyncio.gather(*(self._providers[n].check_ready() for n in names))
        status: dict[str, str | None] = dict(zip(names, results, strict=True))
        status.update((name, f"not configured: {why}") for name, why in self._unconfigured.items())
        return status


def upstream_readiness(registry: ProviderRegistry) -> dict[str, dict[str, dict[str, object]]]:
    """Per routed provider, what its last readiness check found for each upstream."""
    return {
        name: provider.upstreams_ready
        for name, provider in registry.providers.items()
        if isinstance(provider, RoutedProvider)
    }


def upstream_provider(spec: ProviderSpec, redactor: Redactor) -> Provider:
    """The provider of one upstream of a routed provider: a refused connection moves on to the
    next candidate (SPEC §11) instead of §4.2a's retries of the same upstream."""
    provider = DialectProvider(spec, redactor, KINDS[spec.kind])
    provider.transport.client.connect_retries = 0
    return provider


def ensure_model_allowed(provider: Provider, model: str) -> None:
    """The provider's allow-list, enforced the same way on every endpoint."""
    allowed = provider.spec.models
    if allowed is not None and model not in allowed:
        raise ModelNotFoundError(
            f"The model '{model}' is not available through provider '{provider.spec.name}'."
        )
