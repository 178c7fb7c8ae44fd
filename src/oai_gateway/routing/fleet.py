"""Every upstream the attempt loop may call, built once from the configuration: one provider
(and so one connection pool) and one `Member` per upstream, grouped into targets by provider."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from oai_gateway.config.settings import ProviderSpec, UpstreamSpec
from oai_gateway.providers.base import Operation, Provider
from oai_gateway.routing.attempts import Observer, Target
from oai_gateway.routing.breaker import CircuitBreaker, Clock
from oai_gateway.routing.members import Member
from oai_gateway.routing.provider import RoutedProvider
from oai_gateway.routing.selection import make_strategy

# Builds the provider for one upstream, whose client must not retry connections itself: a
# refused connection moves on to the next candidate instead (SPEC §11).
MemberFactory = Callable[[ProviderSpec], Provider]


@dataclass(slots=True)
class Fleet:
    targets: dict[str, Target] = field(default_factory=dict)
    callees: dict[Member, Provider] = field(default_factory=dict)
    observe: Observer | None = None

    def members(self) -> list[Member]:
        return [member for target in self.targets.values() for member in target.members]

    def callee(self, member: Member) -> Provider:
        return self.callees[member]

    def fallbacks(
        self, spec: ProviderSpec, model: str, operation: Operation
    ) -> Sequence[tuple[Target, str]]:
        """The model's fallbacks able to serve the operation, in the file's order."""
        if not spec.fallbacks:
            return ()
        chosen = []
        for pair in spec.fallbacks.get(model, ()):
            name, _, fallback_model = pair.partition("/")
            target = self.targets[name]
            if operation not in self.callee(target.members[0]).unsupported:
                chosen.append((target, fallback_model))
        return chosen

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.callees.values()))

    async def aclose(self) -> None:
        await asyncio.gather(*(p.aclose() for p in self.callees.values()))


def member_spec(spec: ProviderSpec, upstream: UpstreamSpec) -> ProviderSpec:
    """The spec of one upstream of `spec`, as a provider with one base_url."""
    return replace(
        spec,
        base_url=upstream.base_url,
        api_key=upstream.api_key,
        api_key_env=upstream.api_key_env,
        headers=upstream.headers,
        upstreams=(),
        fallbacks={},
    )


def _upstreams(spec: ProviderSpec) -> tuple[UpstreamSpec, ...]:
    if spec.upstreams:
        return spec.upstreams
    return (UpstreamSpec(spec.base_url, spec.api_key, spec.api_key_env, 1, spec.headers),)


def build_fleet(
    specs: Iterable[ProviderSpec],
    make_member: MemberFactory,
    *,
    clock: Clock = time.monotonic,
    rng: random.Random | None = None,
) -> tuple[Fleet, dict[str, RoutedProvider]]:
    """The fleet of every routed provider and every provider a fallback names, and the routed
    providers that replace the plain ones of those names."""
    rng = rng or random.Random()
    by_name = {spec.name: spec for spec in specs if spec.unconfigured is None}
    routed = [spec for spec in by_name.values() if spec.routed]
    needed = {spec.name for spec in routed}
    needed |= {
        pair.partition("/")[0]
        for spec in routed
        for pairs in spec.fallbacks.values()
        for pair in pairs
    }
    fleet = Fleet()
    for name in sorted(needed):
        spec = by_name[name]
        members = tuple(
            Member(name, i, upstream.weight, CircuitBreaker(clock), clock)
            for i, upstream in enumerate(_upstreams(spec))
        )
        for member, upstream in zip(members, _upstreams(spec), strict=True):
            fleet.callees[member] = make_member(member_spec(spec, upstream))
        fleet.targets[name] = Target(name, members, make_strategy(spec.strategy, members, rng))
    return fleet, {spec.name: RoutedProvider(spec, fleet) for spec in routed}
