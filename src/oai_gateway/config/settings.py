"""Configuration: environment (and `.env`) plus the providers file, validated once at startup.

Everything the running gateway needs is resolved here into plain, frozen values; nothing reads the
environment after `load_config` returns.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from oai_gateway.keys.store import ADMIN_KEY_MIN, check_store_url

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
ProviderKind = Literal["openai", "ollama", "cerebras"]


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def split_list(value: object) -> object:
    """Accept a CSV string or a JSON array; trim entries and drop empty ones (SPEC §3.1)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            items = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"is not a valid JSON array ({exc})") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError("must be a JSON array of strings")
    else:
        items = text.split(",")
    return tuple(s for i in items if (s := i.strip()))


def http_url(value: str, *, strip_v1: bool = False) -> str:
    """Validate an http(s) base URL and drop a trailing `/` (and `/v1` where tolerated)."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
    if parts.query or parts.fragment:
        raise ValueError(f"must not contain a query or fragment (got {value!r})")
    url = value.strip().rstrip("/")
    if strip_v1 and url.endswith("/v1"):
        url = url[:-3]
    return url


class Settings(BaseSettings):
    """The environment variables of SPEC §3.1."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    service_host: str = "127.0.0.1"
    service_port: int = Field(8000, ge=1, le=65535)
    allowed_api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    allow_unauthenticated: bool = False
    log_level: LogLevel = "INFO"
    log_format: Literal["json", "text"] = "json"
    request_timeout_s: float = Field(120.0, gt=0)
    max_request_bytes: int = Field(10_485_760, gt=0)
    shutdown_grace_s: float = Field(30.0, gt=0)
    enable_security_headers: bool = True
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = ()
    ollama_base_url: str = "http://127.0.0.1:11434"
    cerebras_base_url: str = "https://api.cerebras.ai/v1"
    cerebras_api_key: SecretStr | None = None
    custom_base_url: str | None = None
    custom_api_key: SecretStr | None = None
    providers_file: Path | None = None
    # The server edge: what one client connection may cost (docs/configuration.md).
    server_head_timeout_s: float = Field(10.0, gt=0)
    server_max_head_bytes: int = Field(65_536, ge=1024)
    server_max_connections: int = Field(1000, ge=1)
    server_keepalive_s: float = Field(5.0, gt=0)
    # Virtual keys (SPEC §10): the store, the admin key, what happens when the store is away.
    store_url: str | None = None
    admin_api_key: SecretStr | None = None
    store_failure_mode: Literal["closed", "open"] = "closed"
    metrics_per_key: bool = False

    @field_validator("allowed_api_keys", "cors_allow_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_list(value)

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        return None if value is None else check_store_url(value.strip())

    @field_validator("admin_api_key")
    @classmethod
    def _admin_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < ADMIN_KEY_MIN:
            raise ValueError(f"must be at least {ADMIN_KEY_MIN} characters")
        return value

    @model_validator(mode="after")
    def _admin_key_not_on_data_plane(self) -> Settings:
        admin = self.admin_api_key
        if admin and admin in self.allowed_api_keys:
            raise ValueError(
                "ADMIN_API_KEY: is also in ALLOWED_API_KEYS; the admin key is never valid on the "
                "data plane, so use a different one"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", "store_failure_mode", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("ollama_base_url")
    @classmethod
    def _ollama_url(cls, value: str) -> str:
        return http_url(value, strip_v1=True)

    @field_validator("cerebras_base_url", "custom_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value)

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*":
                http_url(origin)
        return value

    @property
    def on_loopback(self) -> bool:
        if self.service_host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.service_host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """One of several upstreams of a provider (SPEC §11), its headers merged with the provider's."""

    base_url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    weight: int = 1
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens, from a provider's `prices` table (SPEC §3.2, §10.3)."""

    input: float
    output: float


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One resolved provider: everything its module needs, secrets still wrapped."""

    name: str
    kind: ProviderKind
    base_url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    base_url_env: str | None = None  # the variable that set base_url, for error hints
    models: frozenset[str] | None = None
    timeout_s: float = 120.0
    headers: Mapping[str, str] = field(default_factory=dict)
    unconfigured: str | None = None  # why a built-in cannot serve, e.g. "set CEREBRAS_API_KEY"
    drop_unsupported_params: bool = False
    # SPEC §11. `upstreams` is empty for a provider with one base_url; the first one otherwise
    # also fills base_url, api_key and headers above.
    upstreams: tuple[UpstreamSpec, ...] = ()
    strategy: Literal["weighted", "least_in_flight"] = "weighted"
    max_attempts: int = 3
    ttft_timeout_s: float | None = None
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)  # model -> price; none = unpriced

    @property
    def routed(self) -> bool:
        """Whether §11's attempt loop serves this provider instead of §4.2a's connect retries."""
        return len(self.upstreams) > 1 or bool(self.fallbacks)


def _describe(error: Mapping[str, Any]) -> str:
    name = "_".join(str(p) for p in error["loc"]).upper() or "configuration"
    message = str(error["msg"]).removeprefix("Value error, ")
    secret = "KEY" in name
    value = error.get("input")
    got = "" if secret or isinstance(value, dict) or value is None else f" (got {value!r})"
    if "got " in message:
        got = ""
    return f"{name}: {message}{got}"


def load_settings(overrides: Mapping[str, object] | None = None) -> Settings:
    """Read the environment and `.env`; flags in `overrides` win. Raises ConfigError."""
    try:
        values: dict[str, Any] = {k: v for k, v in (overrides or {}).items() if v is not None}
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError([_describe(e) for e in exc.errors()]) from None
