"""Which OpenAI request fields an upstream kind cannot honour, as data, and the one function
that applies them.

An upstream that silently ignores a field (Ollama and `n: 3`) gives the client a plausible but
wrong answer; one that rejects it (Cerebras and `store`) gives an opaque 400 in its own format.
Either way the client is better served by a clear 400 naming the field before anything is sent
upstream, or, when the operator opted in with `drop_unsupported_params = true`, by the field
being dropped. A field set to its OpenAI default asks for nothing the upstream lacks, so it is
never an error; it is only dropped when the upstream would reject its mere presence.

Only fields OpenAI defines are listed: unknown fields pass through untouched (SPEC §5).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from oai_gateway.errors import InvalidRequestError
from oai_gateway.providers.base import Json, Operation

logger = logging.getLogger(__name__)


class Fate(StrEnum):
    """What the upstream does with the field when it is sent."""

    IGNORED = "ignored"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class FieldRule:
    fate: Fate
    # Values that ask for OpenAI's default behaviour; `null` always does.
    defaults: tuple[Any, ...] = ()
    # Why it matters, for the error message ("would return one choice").
    consequence: str = ""

    def is_default(self, value: Any) -> bool:
        # `type(...)` too, so that `True` never passes for the default `1` or `0` for `False`.
        return value is None or any(value == d and type(value) is type(d) for d in self.defaults)


# Field name (or `parent.child` for one level of nesting) -> rule.
FieldRules = Mapping[str, FieldRule]


@dataclass(frozen=True, slots=True)
class Quirks:
    """A provider kind's rules per operation; the empty default forwards everything."""

    by_operation: Mapping[Operation, FieldRules] = field(default_factory=dict)

    def rules(self, operation: Operation) -> FieldRules:
        return self.by_operation.get(operation, {})


NO_QUIRKS = Quirks()


class UnsupportedParameterError(InvalidRequestError):
    default_code = "unsupported_parameter"


def _lookup(body: Json, name: str) -> tuple[Json, str] | None:
    """The object holding `name` (possibly nested one level) and its key there, if present."""
    parent, _, child = name.partition(".")
    if not child:
        return (body, name) if name in body else None
    holder = body.get(parent)
    if isinstance(holder, dict) and child in holder:
        return holder, child
    return None


def apply_quirks(
    body: Json,
    rules: FieldRules,
    *,
    provider: str,
    kind_label: str,
    drop_unsupported: bool,
) -> Json:
    """`body` with the fields the upstream cannot honour dropped, or a 400 for the first one.

    The caller's body is never changed: a copy is made only when something is dropped.
    """
    result = body
    for name, rule in rules.items():
        found = _lookup(result, name)
        if found is None:
            continue
        holder, key = found
        value = holder[key]
        default = rule.is_default(value)
        if default and rule.fate is Fate.IGNORED:
            continue  # forwarding it changes nothing
        if not default and not drop_unsupported:
            raise UnsupportedParameterError(
                _message(name, value, rule, provider, kind_label), param=name.partition(".")[0]
            )
        if not default:
            _log_drop(name, provider, kind_label, rule)
        result = _without(result, name)
    return result


def _log_drop(name: str, provider: str, kind_label: str, rule: FieldRule) -> None:
    logger.debug(
        "dropped unsupported parameter '%s' for provider '%s' (%s %s it)",
        name,
        provider,
        kind_label,
        rule.fate.value,
    )


def _without(body: Json, name: str) -> Json:
    parent, _, child = name.partition(".")
    if not child:
        return {k: v for k, v in body.items() if k != name}
    holder = body[parent]
    return {**body, parent: {k: v for k, v in holder.items() if k != child}}


def _message(name: str, value: Any, rule: FieldRule, provider: str, kind_label: str) -> str:
    shown = repr(value) if isinstance(value, bool | int | float | str) else "this value"
    if rule.fate is Fate.IGNORED:
        what = f"{kind_label} silently ignores '{name}'"
        if rule.consequence:
            what += f" ({rule.consequence})"
    else:
        what = f"{kind_label} rejects '{name}'"
    return (
        f"Unsupported parameter '{name}' (= {shown}) for provider '{provider}': {what}. "
        "Remove it, or set drop_unsupported_params = true for this provider in the providers "
        "file to have the gateway drop it."
    )
