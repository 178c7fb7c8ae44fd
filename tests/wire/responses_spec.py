"""Responses API objects and stream events, checked against OpenAI's OpenAPI document.

`ResponseStreamEvent` is an `anyOf` of some fifty event schemas; an event is checked against
the one its `type` names, so a violation reads as that schema's, not as "matches none of 50".
"""

from __future__ import annotations

from functools import cache
from typing import Any

from tests.support import spec


@cache
def event_schemas() -> dict[str, str]:
    """Event `type` → the name of its component schema."""
    schemas = spec._registry().contents(spec._BASE)["components"]["schemas"]
    found: dict[str, str] = {}
    for option in schemas["ResponseStreamEvent"]["anyOf"]:
        name = option["$ref"].rsplit("/", 1)[-1]
        kind = schemas[name]["properties"]["type"]["enum"][0]
        found[kind] = name
    return found


def event_problems(event: Any) -> list[str]:
    """Every way one stream event breaks OpenAI's schema for its type."""
    kind = event.get("type") if isinstance(event, dict) else None
    name = event_schemas().get(kind) if isinstance(kind, str) else None
    if name is None:
        return [f"not a ResponseStreamEvent type: {kind!r}"]
    return spec.problems(name, event)


def response_problems(response: Any) -> list[str]:
    return spec.problems("Response", response)
