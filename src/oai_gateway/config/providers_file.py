"""The TOML providers file (SPEC §3.2): named providers of any kind, without code changes."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from oai_gateway.config.settings import ProviderKind, ProviderSpec, http_url

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RESERVED_HEADERS = frozenset({"authorization", "content-length", "host", "transfer-encoding"})
_DEFAULT_URLS: Mapping[str, str] = {
    "ollama": "http://127.0.0.1:11434",
    "cerebras": "https://api.cerebras.ai/v1",
}


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

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            # Not echoed: a value that is no variable name is most likely a pasted key.
            raise ValueError(
                "must be the name of an environment variable (letters, digits and _), "
                "not the key itself"
            )
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not all(m.strip() for m in value):
            raise ValueError("model ids must be non-empty strings")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name) or name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header name {name!r} is not allowed")
            if "\r" in text or "\n" in text:
                raise ValueError(f"header {name!r} contains a line break")
        return value


def _problem(path: Path, name: str, error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden" and where == "api_key":
        message = "a literal api_key is not allowed: put the key in an environment variable and "
        message += "name it with api_key_env"
    elif error["type"] == "extra_forbidden":
        message = "unknown key"
    return (
        f"{path}: provider '{name}': {where}: {message}" if where else f"{path}: {name}: {message}"
    )


def _resolve(
    name: str, entry: ProviderEntry, env: Mapping[str, str], default_timeout: float
) -> ProviderSpec:
    base_url = entry.base_url or _DEFAULT_URLS.get(entry.kind)
    if base_url is None:
        raise ValueError("base_url: required for kind 'openai'")
    try:
        base_url = http_url(base_url, strip_v1=entry.kind == "ollama")
    except ValueError as exc:
        raise ValueError(f"base_url: {exc}") from None
    key = None
    if entry.api_key_env is not None:
        key = env.get(entry.api_key_env) or None
        if key is None:
            raise ValueError(f"api_key_env: the variable {entry.api_key_env} is not set")
    elif entry.kind == "cerebras":
        raise ValueError("api_key_env: required for kind 'cerebras'")
    return ProviderSpec(
        name=name,
        kind=entry.kind,
        base_url=base_url,
        api_key=SecretStr(key) if key else None,
        api_key_env=entry.api_key_env,
        models=frozenset(entry.models) if entry.models is not None else None,
        timeout_s=entry.timeout_s or default_timeout,
        headers=dict(entry.headers),
        drop_unsupported_params=entry.drop_unsupported_params,
    )


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
