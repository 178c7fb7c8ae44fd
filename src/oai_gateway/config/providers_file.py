"""The TOML providers file (SPEC §3.2): named providers of any kind, without code changes."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from oai_gateway.config.settings import Price, ProviderKind, ProviderSpec, UpstreamSpec, http_url

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RESERVED_HEADERS = frozenset({"authorization", "content-length", "host", "transfer-encoding"})
_DEFAULT_URLS: Mapping[str, str] = {
    "ollama": "http://127.0.0.1:11434",
    "cerebras": "https://api.cerebras.ai/v1",
}


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.fullmatch(value):
        # Not echoed: a value that is no variable name is most likely a pasted key.
        raise ValueError(
            "must be the name of an environment variable (letters, digits and _), "
            "not the key itself"
        )
    return value


def _headers(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header name {name!r} is not allowed")
        if "\r" in text or "\n" in text:
            raise ValueError(f"header {name!r} contains a line break")
    return value


class UpstreamEntry(BaseModel):
    """One `[[providers.NAME.upstreams]]` table (SPEC §11)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    api_key_env: str | None = None
    weight: int = Field(1, ge=1, le=1000)
    headers: dict[str, str] = Field(default_factory=dict)

    _check_env = field_validator("api_key_env")(_env_name)
    _check_headers = field_validator("headers")(_headers)


class PriceEntry(BaseModel):
    """`"model" = { input = 0.10, output = 0.20 }`: USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class ProviderEntry(BaseModel):
    """One `[providers.NAME]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = None
    models: tuple[str, ...] | None = None
    timeout_s: float | None = Field(None, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    drop_unsupported_params: bool = False
    upstreams: tuple[UpstreamEntry, ...] | None = Field(None, min_length=1)
    strategy: Literal["weighted", "least_in_flight"] = "weighted"
    max_attempts: int = Field(3, ge=1, le=10)
    ttft_timeout_s: float | None = Field(None, gt=0)
    fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    prices: dict[str, PriceEntry] = Field(default_factory=dict)

    _check_env = field_validator("api_key_env")(_env_name)
    _check_headers = field_validator("headers")(_headers)

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not all(m.strip() for m in value):
            raise ValueError("model ids must be non-empty strings")
        return value

    @field_validator("fallbacks")
    @classmethod
    def _fallbacks(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for model, targets in value.items():
            for target in targets:
                provider, _, name = target.partition("/")
                if not NAME.fullmatch(provider) or not name.strip():
                    raise ValueError(
                        f"{model!r}: {target!r} is not a provider/model pair "
                        '(e.g. "cerebras/llama3.1-8b")'
                    )
        return value


def _problem(path: Path, name: str, error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden" and str(error["loc"][-1]) == "api_key":
        message = "a literal api_key is not allowed: put the key in an environment variable and "
        message += "name it with api_key_env"
    elif error["type"] == "extra_forbidden":
        message = "unknown key"
    return (
        f"{path}: provider '{name}': {where}: {message}" if where else f"{path}: {name}: {message}"
    )


def _base_url(kind: str, value: str, where: str = "base_url") -> str:
    try:
        return http_url(value, strip_v1=kind == "ollama")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _key(kind: str, env_name: str | None, env: Mapping[str, str], where: str) -> SecretStr | None:
    if env_name is None:
        if kind == "cerebras":
            raise ValueError(f"{where}: required for kind 'cerebras'")
        return None
    key = env.get(env_name) or None
    if key is None:
        raise ValueError(f"{where}: the variable {env_name} is not set")
    return SecretStr(key)


def _upstreams(entry: ProviderEntry, env: Mapping[str, str]) -> tuple[UpstreamSpec, ...]:
    if entry.base_url is not None:
        raise ValueError("base_url: give either base_url or [[upstreams]], not both")
    resolved = []
    for i, upstream in enumerate(entry.upstreams or ()):
        env_name = upstream.api_key_env or entry.api_key_env
        where = f"upstreams.{i}.api_key_env" if upstream.api_key_env else "api_key_env"
        resolved.append(
            UpstreamSpec(
                base_url=_base_url(entry.kind, upstream.base_url, f"upstreams.{i}.base_url"),
                api_key=_key(entry.kind, env_name, env, where),
                api_key_env=env_name,
                weight=upstream.weight,
                headers={**entry.headers, **upstream.headers},
            )
        )
    return tuple(resolved)


def _resolve(
    name: str, entry: ProviderEntry, env: Mapping[str, str], default_timeout: float
) -> ProviderSpec:
    if entry.upstreams:
        upstreams = _upstreams(entry, env)
        first = upstreams[0]
    else:
        base_url = entry.base_url or _DEFAULT_URLS.get(entry.kind)
        if base_url is None:
            raise ValueError("base_url: required for kind 'openai'")
        key = _key(entry.kind, entry.api_key_env, env, "api_key_env")
        upstreams = ()
        first = UpstreamSpec(
            _base_url(entry.kind, base_url), key, entry.api_key_env, 1, dict(entry.headers)
        )
    return ProviderSpec(
        name=name,
        kind=entry.kind,
        base_url=first.base_url,
        api_key=first.api_key,
        api_key_env=first.api_key_env,
        models=frozenset(entry.models) if entry.models is not None else None,
        timeout_s=entry.timeout_s or default_timeout,
        headers=dict(first.headers),
        drop_unsupported_params=entry.drop_unsupported_params,
        upstreams=upstreams,
        strategy=entry.strategy,
        max_attempts=entry.max_attempts,
        ttft_timeout_s=entry.ttft_timeout_s,
        fallbacks=dict(entry.fallbacks),
        prices={m: Price(p.input, p.output) for m, p in entry.prices.items()},
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
            specs.append(_resolve(name, entry, env, default_timeout))
        except ValidationError as exc:
            problems.extend(_problem(path, name, e) for e in exc.errors())
        except ValueError as exc:
            problems.append(f"{path}: provider '{name}': {exc}")
    return specs, problems
