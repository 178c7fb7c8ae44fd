"""Route templates, compiled once into what the router looks up per request.

A template is a path with `{name}` for one path segment and `{name:path}` for the rest of the
path (model ids may hold `/` and `:`). Templates whose path has a `/v1/` form a *section* with
everything before it, e.g. `/{provider}/v1/` or `/admin/v1/`: a request under a section's prefix
is authenticated with the section's `Auth` before its route is looked for, so a client without
a key learns nothing of which routes exist there. Other templates (`/healthz`) are matched as
a whole, and authenticated after their method was checked.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from oai_gateway.providers.base import Operation

if TYPE_CHECKING:
    from oai_gateway.api.exchange import Exchange, Services

Handler = Callable[["Services", "Exchange"], Awaitable[None]]

_PARAM = re.compile(r"\{(\w+)(:path)?\}")
_SECTION = "/v1/"
# How many paths `RouteTable.find` remembers; bounded, since a prefix's parameters (the
# provider's name) come from the client.
KNOWN_PATHS = 1024


class Auth(StrEnum):
    """Which credential a route needs; the router holds one authenticator per value."""

    NONE = "none"
    GATEWAY = "gateway"  # a gateway key (ALLOWED_API_KEYS)
    ADMIN = "admin"  # ADMIN_API_KEY (SPEC §10.2)


@dataclass(frozen=True, slots=True)
class Route:
    """One line of the route table. `operation` is set for routes under `/{provider}/v1`: the
    router refuses it for providers that declare it unsupported, and handlers serving several
    operations (chat and legacy completions) read it."""

    method: str
    template: str
    handler: Handler
    operation: Operation | None = None
    auth: Auth = Auth.GATEWAY

    @property
    def label(self) -> str:
        """The template as metrics and logs name it: `/{provider}/v1/models/{model}`."""
        return _PARAM.sub(lambda m: "{" + m[1] + "}", self.template)


def _pattern(template: str, *, whole: bool = True) -> re.Pattern[str]:
    parts: list[str] = []
    position = 0
    for param in _PARAM.finditer(template):
        parts.append(re.escape(template[position : param.start()]))
        parts.append(f"(?P<{param[1]}>{'.+' if param[2] else '[^/]+'})")
        position = param.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts) + (r"\Z" if whole else ""))


@dataclass(slots=True)
class Methods:
    """The routes sharing one template, by method."""

    label: str
    by_method: dict[str, Route] = field(default_factory=dict)

    @property
    def allow(self) -> str:
        return ", ".join(self.by_method)


@dataclass(slots=True)
class Section:
    """Routes sharing one prefix (or, for `prefix=None`, the routes outside every section)."""

    prefix: re.Pattern[str] | None
    auth: Auth | None
    static: dict[str, Methods] = field(default_factory=dict)
    patterns: list[tuple[re.Pattern[str], Methods]] = field(default_factory=list)
    templates: dict[str, Methods] = field(default_factory=dict)

    def add(self, rest: str, route: Route) -> None:
        methods = self.templates.get(rest)
        if methods is None:
            methods = self.templates[rest] = Methods(route.label)
            if _PARAM.search(rest):
                self.patterns.append((_pattern(rest), methods))
            else:
                self.static[rest] = methods
        if route.method in methods.by_method:
            raise ValueError(f"two routes for {route.method} {route.template}")
        methods.by_method[route.method] = route

    def match(self, rest: str) -> tuple[Methods, Mapping[str, str]] | None:
        methods = self.static.get(rest)
        if methods is not None:
            return methods, {}
        for pattern, candidate in self.patterns:
            found = pattern.match(rest)
            if found is not None:
                return candidate, found.groupdict()
        return None


# What `RouteTable.find` gives: the section, the methods of the route (None: no route there),
# and the parameters of the whole path.
Found = tuple[Section, Methods | None, Mapping[str, str]]


class RouteTable:
    """Every route, compiled into sections; see the module docstring for the rules.

    Sections with a literal prefix (`/admin/v1/`) are tried before those with a parameter
    (`/{provider}/v1/`), so a literal prefix is never taken for a provider name.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        self._root = Section(None, None)
        sections: dict[str, Section] = {}
        for route in self.routes:
            prefix, found, rest = route.template.partition(_SECTION)
            if not found:
                self._root.add(route.template, route)
                continue
            section = sections.get(prefix)
            if section is None:
                section = Section(_pattern(prefix + _SECTION, whole=False), route.auth)
                sections[prefix] = section
            elif section.auth is not route.auth:
                raise ValueError(f"{route.template}: the routes under {prefix}/v1 differ in auth")
            section.add(rest, route)
        literal_first = sorted(sections, key=lambda prefix: bool(_PARAM.search(prefix)))
        self._sections = [sections[prefix] for prefix in literal_first]
        self._known: dict[str, Found] = {}

    def locate(self, path: str) -> tuple[Section, str, Mapping[str, str]]:
        """The section a path belongs to, the path within it, and the prefix's parameters."""
        for section in self._sections:
            assert section.prefix is not None
            found = section.prefix.match(path)
            if found is not None:
                return section, path[found.end() :], found.groupdict()
        return self._root, path, {}

    def find(self, path: str) -> Found:
        """`locate`, then the section's `match`. Paths of templates without parameters within
        their section (`/custom/v1/chat/completions`, nearly every request) are remembered, so
        the patterns run once per such path, not once per request."""
        known = self._known.get(path)
        if known is not None:
            return known
        section, rest, params = self.locate(path)
        matched = section.match(rest)
        if matched is None:
            return section, None, params
        methods, more = matched
        found = (section, methods, {**params, **more})
        if not more and len(self._known) < KNOWN_PATHS:
            self._known[path] = found
        return found
