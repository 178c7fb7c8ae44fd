"""The whole configuration: settings plus the resolved providers, built once at startup."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from oai_gateway.config.providers_file import fallback_problems, read_providers_file
from oai_gateway.config.settings import (
    ConfigError,
    ProviderSpec,
    Settings,
    builtin_providers,
    load_settings,
)


@dataclass(frozen=True, slots=True)
class Config:
    settings: Settings
    providers: tuple[ProviderSpec, ...]

    def secrets(self) -> list[str]:
        values = [k.get_secret_value() for k in self.settings.allowed_api_keys]
        values += [p.api_key.get_secret_value() for p in self.providers if p.api_key]
        if self.settings.admin_api_key is not None:
            values.append(self.settings.admin_api_key.get_secret_value())
        if self.settings.store_url and (password := urlsplit(self.settings.store_url).password):
            values.append(password)
        # A configured header value may be a credential too (an API key under another name);
        # short ones cannot be, and redacting them would mangle ordinary text.
        values += [v for p in self.providers for v in p.headers.values() if len(v) >= 8]
        return values


def environment(env_file: str | os.PathLike[str] = ".env") -> dict[str, str]:
    """The process environment over `.env`, for the variables a providers file names."""
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    values.update(os.environ)
    return values


def _providers_file_problems(overrides: Mapping[str, object] | None) -> list[str]:
    env = environment()
    path = (overrides or {}).get("providers_file") or env.get("PROVIDERS_FILE")
    if not path:
        return []
    # Only the problems are wanted here, so any valid default timeout will do.
    return read_providers_file(Path(str(path)), env, 120.0)[1]


def load_config(overrides: Mapping[str, object] | None = None) -> Config:
    """Settings plus the resolved providers, or ConfigError with every problem found."""
    try:
        settings = load_settings(overrides)
    except ConfigError as exc:
        # The providers file is checked too, so one run lists everything there is to fix.
        raise ConfigError(exc.problems + _providers_file_problems(overrides)) from None
    providers = {p.name: p for p in builtin_providers(settings)}
    problems: list[str] = []
    if settings.providers_file is not None:
        named, problems = read_providers_file(
            settings.providers_file, environment(), settings.request_timeout_s
        )
        providers.update((p.name, p) for p in named)
        problems += fallback_problems(settings.providers_file, providers)
    keyed = settings.allowed_api_keys or settings.store_url
    if not (keyed or settings.on_loopback or settings.allow_unauthenticated):
        problems.append(
            f"ALLOWED_API_KEYS: empty while SERVICE_HOST={settings.service_host} is not a "
            "loopback address; set keys, bind to 127.0.0.1, or set ALLOW_UNAUTHENTICATED=true"
        )
    if problems:
        raise ConfigError(problems)
    return Config(settings, tuple(providers.values()))
