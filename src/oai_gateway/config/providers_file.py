"""The TOML providers file (SPEC §3.2): reading it and reporting its problems, one line each.

What a `[providers.NAME]` table may hold, and what it resolves to, is in config/settings.py.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from oai_gateway.config.settings import NAME, ProviderEntry, ProviderSpec, resolve_entry

# Where a value may be a credential (a key pasted in the wrong place, a token header), it is
# never repeated in a problem; an unknown key's value is not echoed for the same reason.
_UNECHOED = frozenset({"api_key_env", "headers"})


def _got(error: Mapping[str, Any]) -> str:
    """` (got 'anthropic')`: the offending value, for scalar values that cannot be secrets."""
    value = error.get("input")
    if error["type"] in ("extra_forbidden", "value_error") or not error["loc"]:
        return ""
    if _UNECHOED.intersection(map(str, error["loc"])) or not isinstance(
        value, str | int | float | bool
    ):
        return ""
    return f" (got {value!r})"


def _problem(path: Path, name: str, error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden" and str(error["loc"][-1]) == "api_key":
        message = "a literal api_key is not allowed: put the key in an environment variable and "
        message += "name it with api_key_env"
    elif error["type"] == "extra_forbidden":
        message = "unknown key"
    message += _got(error)
    return (
        f"{path}: provider '{name}': {where}: {message}" if where else f"{path}: {name}: {message}"
    )


def fallback_problems(path: Path, providers: Mapping[str, ProviderSpec]) -> list[str]:
    """Fallbacks must name a configured provider whose allow-list has the model (SPEC §11)."""
    problems = []
    for spec in providers.values():
        for model, targets in spec.fallbacks.items():
            for target in targets:
                name, _, fallback_model = target.partition("/")
                other = providers.get(name)
                why = None
                if other is None:
                    why = f"there is no provider '{name}'"
                elif other.unconfigured is not None:
                    why = f"provider '{name}' is not configured ({other.unconfigured})"
                elif other.models is not None and fallback_model not in other.models:
                    why = f"'{fallback_model}' is not in the models of provider '{name}'"
                if why is not None:
                    where = f"provider '{spec.name}': fallbacks.{model}"
                    problems.append(f"{path}: {where}: '{target}': {why}")
    return problems


def read_providers_file(
    path: Path, env: Mapping[str, str], default_timeout: float
) -> tuple[list[ProviderSpec], list[str]]:
    """Parse and resolve the file; returns the providers and one line per problem."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [], [f"PROVIDERS_FILE: cannot read {path}: {exc.strerror or exc}"]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return [], [f"{path}: not valid TOML: {exc}"]
    unknown = sorted(set(document) - {"providers"})
    problems = [f"{path}: unknown top-level key '{key}'" for key in unknown]
    tables = document.get("providers", {})
    if not isinstance(tables, dict) or not tables:
        return [], [*problems, f"{path}: no [providers.NAME] tables found"]
    specs: list[ProviderSpec] = []
    for name, table in tables.items():
        if not NAME.fullmatch(name):
            problems.append(
                f"{path}: provider '{name}': name must match [a-z0-9][a-z0-9_-]{{0,31}}"
            )
            continue
        if not isinstance(table, dict):
            problems.append(f"{path}: provider '{name}': must be a table")
            continue
        try:
            entry = ProviderEntry.model_validate(table)
            specs.append(resolve_entry(name, entry, env, default_timeout))
        except ValidationError as exc:
            problems.extend(_problem(path, name, e) for e in exc.errors())
        except ValueError as exc:
            problems.append(f"{path}: provider '{name}': {exc}")
    return specs, problems
