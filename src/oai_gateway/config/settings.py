"""Every configuration option, in one module: the environment variables (`Settings`), what a
providers-file table may hold (`ProviderEntry`, `UpstreamEntry`, `PriceEntry`), the resolved
`ProviderSpec` both become, and the built-in providers the environment configures.

Adding an option is a change here only; config/providers_file.py reads the file and reports its
problems, config/loader.py puts settings and providers together. Everything is resolved into
plain, frozen values; nothing reads the environment after `load_config` returns.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from oai_gateway.keys.store import ADMIN_KEY_MIN, check_store_url
from oai_gateway.upstream.client import header_problem

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
ResponsesMode = Literal["native", "translate", "off"]


@dataclass(frozen=True, slots=True)
class KindConfig:
    """What configuration needs to know about a provider kind. Each kind's module declares its
    own (on its `Dialect`), so adding a kind changes nothing in config/."""

    responses: ResponsesMode = "native"  # SPEC §9: how /responses is served by default
    default_base_url: str | None = None  # None: a providers-file entry must give base_url
    strip_v1: bool = False  # a trailing /v1 of the base URL is tolerated and dropped
    key_required: bool = False  # a providers-file entry must name api_key_env


def provider_kinds() -> Mapping[str, KindConfig]:
    """Kind name -> its configuration, in registry order: the registry is the one list."""
    # Imported here, not at the top: the providers import this module for ProviderSpec.
    from oai_gateway.providers.registry import KINDS  # noqa: PLC0415

    return {name: dialect.config for name, dialect in KINDS.items()}


def kind_config(kind: str) -> KindConfig:
    return provider_kinds()[kind]


def _kind(value: object) -> object:
    """A kind the registry knows; else the error a Literal of the kinds would give."""
    names = list(provider_kinds())
    if isinstance(value, str) and value in names:
        return value
    quoted = [repr(n) for n in names]
    expected = (
        " or ".join(quoted) if len(quoted) < 3 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    )
    raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})


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
    if parts.username is not None or parts.password is not None:
        # Not echoed, it holds a password. Credentials go in the provider's key or headers.
        raise ValueError(
            "must not contain user:password@; give credentials as the provider's API key or "
            "headers (got a URL with credentials, not shown)"
        )
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
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
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

    @field_validator("allowed_api_keys", "cors_allow_origins", "allowed_hosts", mode="before")
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
    def _upper(cls, value: object, info: ValidationInfo) -> object:
        return cls._one_of(value, value.upper(), info) if isinstance(value, str) else value

    @field_validator("log_format", "store_failure_mode", mode="before")
    @classmethod
    def _lower(cls, value: object, info: ValidationInfo) -> object:
        return cls._one_of(value, value.lower(), info) if isinstance(value, str) else value

    @classmethod
    def _one_of(cls, given: str, normalised: str, info: ValidationInfo) -> str:
        """`normalised` when the field's Literal accepts it; else an error naming the value as
        written, not as normalised (`loud`, not `LOUD`)."""
        assert info.field_name is not None
        accepted: tuple[str, ...] = get_args(cls.model_fields[info.field_name].annotation)
        if normalised not in accepted:
            raise ValueError(f"must be one of {', '.join(map(repr, accepted))} (got {given!r})")
        return normalised

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
    kind: str  # a name in providers/registry.py KINDS
    base_url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    base_url_env: str | None = None  # the variable that set base_url, for error hints
    models: frozenset[str] | None = None
    timeout_s: float = 120.0
    headers: Mapping[str, str] = field(default_factory=dict)
    unconfigured: str | None = None  # why a built-in cannot serve, e.g. "set CEREBRAS_API_KEY"
    drop_unsupported_params: bool = False
    # Kinds that take one prompt per call (Ollama): a legacy completion with several prompts
    # runs at most this many upstream generations at once.
    max_prompts_in_flight: int = 4
    responses: ResponsesMode | None = None  # SPEC §9; None = the kind's default
    # SPEC §11. `upstreams` is empty for a provider with one base_url; the first one otherwise
    # also fills base_url, api_key and headers above.
    upstreams: tuple[UpstreamSpec, ...] = ()
    strategy: Literal["weighted", "least_in_flight"] = "weighted"
    max_attempts: int = 3
    ttft_timeout_s: float | None = None
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)  # model -> price; none = unpriced

    @property
    def responses_mode(self) -> ResponsesMode:
        """How `/responses` is served: relayed, translated to chat, or refused (SPEC §9)."""
        return self.responses or kind_config(self.kind).responses

    @property
    def routed(self) -> bool:
        """Whether §11's attempt loop serves this provider instead of §4.2a's connect retries."""
        return len(self.upstreams) > 1 or bool(self.fallbacks)


# -- the providers file: what a [providers.NAME] table may hold, resolved into a ProviderSpec

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


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
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"header name {name!r} is not allowed")
        problem = header_problem(name, text)
        if problem is not None:
            raise ValueError(problem)
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

    kind: str
    base_url: str | None = None
    api_key_env: str | None = None
    models: tuple[str, ...] | None = None
    timeout_s: float | None = Field(None, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    drop_unsupported_params: bool = False
    max_prompts_in_flight: int = Field(4, ge=1, le=64)
    responses: ResponsesMode | None = None
    upstreams: tuple[UpstreamEntry, ...] | None = Field(None, min_length=1)
    strategy: Literal["weighted", "least_in_flight"] = "weighted"
    max_attempts: int = Field(3, ge=1, le=10)
    ttft_timeout_s: float | None = Field(None, gt=0)
    fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    prices: dict[str, PriceEntry] = Field(default_factory=dict)

    _check_kind = field_validator("kind", mode="before")(_kind)
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


def _base_url(kind: str, value: str, where: str = "base_url") -> str:
    try:
        return http_url(value, strip_v1=kind_config(kind).strip_v1)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _key(kind: str, env_name: str | None, env: Mapping[str, str], where: str) -> SecretStr | None:
    if env_name is None:
        if kind_config(kind).key_required:
            raise ValueError(f"{where}: required for kind {kind!r}")
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


def resolve_entry(
    name: str, entry: ProviderEntry, env: Mapping[str, str], default_timeout: float
) -> ProviderSpec:
    if entry.upstreams:
        upstreams = _upstreams(entry, env)
        first = upstreams[0]
    else:
        base_url = entry.base_url or kind_config(entry.kind).default_base_url
        if base_url is None:
            raise ValueError(f"base_url: required for kind {entry.kind!r}")
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
        max_prompts_in_flight=entry.max_prompts_in_flight,
        responses=entry.responses,
        upstreams=upstreams,
        strategy=entry.strategy,
        max_attempts=entry.max_attempts,
        ttft_timeout_s=entry.ttft_timeout_s,
        fallbacks=dict(entry.fallbacks),
        prices={m: Price(p.input, p.output) for m, p in entry.prices.items()},
    )


# -- the built-in providers, from the environment


def builtin_providers(settings: Settings) -> list[ProviderSpec]:
    timeout = settings.request_timeout_s
    return [
        ProviderSpec(
            "ollama",
            "ollama",
            settings.ollama_base_url,
            base_url_env="OLLAMA_BASE_URL",
            timeout_s=timeout,
        ),
        ProviderSpec(
            "cerebras",
            "cerebras",
            settings.cerebras_base_url,
            api_key=settings.cerebras_api_key,
            api_key_env="CEREBRAS_API_KEY",
            base_url_env="CEREBRAS_BASE_URL",
            timeout_s=timeout,
            unconfigured=None if settings.cerebras_api_key else "set CEREBRAS_API_KEY",
        ),
        ProviderSpec(
            "custom",
            "openai",
            settings.custom_base_url or "",
            api_key=settings.custom_api_key,
            api_key_env="CUSTOM_API_KEY",
            base_url_env="CUSTOM_BASE_URL",
            timeout_s=timeout,
            unconfigured=None if settings.custom_base_url else "set CUSTOM_BASE_URL",
        ),
    ]


# -- reading the environment


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
