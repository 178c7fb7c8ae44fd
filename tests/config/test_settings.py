"""Environment configuration (SPEC §3.1) and the startup rules built on it (§4.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oai_gateway.config.loader import load_config
from oai_gateway.config.settings import ConfigError, Settings, load_settings

VARIABLES = tuple(name.upper() for name in Settings.model_fields)  # every one of §3.1
GW_SECRET = "gw-secret-value-1a2b3c"
CUSTOM_SECRET = "sk-custom-secret-4d5e6f"
CEREBRAS_SECRET = "csk-cerebras-secret-7g8h9i"
ADMIN_SECRET = "adm-secret-value-0123456789abcdef0123"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No variable of §3.1 from the machine, and a working directory without a `.env`."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def problems_for(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_config()
    return caught.value.problems


def secrets(keys: tuple[object, ...]) -> list[str]:
    return [k.get_secret_value() for k in keys]  # type: ignore[attr-defined]


# --- defaults -------------------------------------------------------------------------------


DEFAULTS: dict[str, object] = {
    "service_host": "127.0.0.1",
    "service_port": 8000,
    "allowed_api_keys": (),
    "allow_unauthenticated": False,
    "log_level": "INFO",
    "log_format": "json",
    "request_timeout_s": 120.0,
    "max_request_bytes": 10_485_760,
    "shutdown_grace_s": 30.0,
    "enable_security_headers": True,
    "cors_allow_origins": (),
    "ollama_base_url": "http://127.0.0.1:11434",
    "cerebras_base_url": "https://api.cerebras.ai/v1",
    "cerebras_api_key": None,
    "custom_base_url": None,
    "custom_api_key": None,
    "providers_file": None,
    "server_head_timeout_s": 10.0,
    "server_max_head_bytes": 65_536,
    "server_max_connections": 1000,
    "server_keepalive_s": 5.0,
    "store_url": None,
    "admin_api_key": None,
    "store_failure_mode": "closed",
    "metrics_per_key": False,
    "allowed_hosts": (),
}


def test_every_variable_has_its_documented_default() -> None:
    settings = load_settings()
    assert {name: getattr(settings, name) for name in Settings.model_fields} == DEFAULTS


def test_defaults_hold_without_any_env_file() -> None:
    settings = Settings(_env_file=None)
    assert (settings.service_host, settings.service_port) == ("127.0.0.1", 8000)
    assert settings.log_level == "INFO"


def test_default_providers_leave_cerebras_and_custom_unconfigured_naming_the_variable() -> None:
    providers = {p.name: p for p in load_config().providers}
    assert set(providers) == {"ollama", "cerebras", "custom"}
    assert providers["ollama"].unconfigured is None
    assert providers["ollama"].base_url == "http://127.0.0.1:11434"
    assert providers["cerebras"].unconfigured == "set CEREBRAS_API_KEY"
    assert providers["custom"].unconfigured == "set CUSTOM_BASE_URL"


def test_every_variable_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {
        "SERVICE_HOST": "0.0.0.0",
        "SERVICE_PORT": "9001",
        "ALLOWED_API_KEYS": GW_SECRET,
        "ALLOW_UNAUTHENTICATED": "true",
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "text",
        "REQUEST_TIMEOUT_S": "2.5",
        "MAX_REQUEST_BYTES": "2048",
        "SHUTDOWN_GRACE_S": "4.5",
        "ENABLE_SECURITY_HEADERS": "false",
        "CORS_ALLOW_ORIGINS": "https://app.example",
        "OLLAMA_BASE_URL": "http://10.0.0.2:11434",
        "CEREBRAS_BASE_URL": "https://cerebras.example/v1",
        "CEREBRAS_API_KEY": CEREBRAS_SECRET,
        "CUSTOM_BASE_URL": "http://10.0.0.3:8080/v1",
        "CUSTOM_API_KEY": CUSTOM_SECRET,
        "PROVIDERS_FILE": str(tmp_path / "providers.toml"),
        "SERVER_HEAD_TIMEOUT_S": "20",
        "SERVER_MAX_HEAD_BYTES": "131072",
        "SERVER_MAX_CONNECTIONS": "50",
        "SERVER_KEEPALIVE_S": "7.5",
        "STORE_URL": "memory://",
        "ADMIN_API_KEY": ADMIN_SECRET,
        "STORE_FAILURE_MODE": "open",
        "METRICS_PER_KEY": "true",
        "ALLOWED_HOSTS": "gateway.internal, proxy.example",
    }
    assert set(values) == set(VARIABLES), "a new setting needs a value here"
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.service_host == "0.0.0.0"
    assert settings.service_port == 9001
    assert secrets(settings.allowed_api_keys) == [GW_SECRET]
    assert settings.allow_unauthenticated is True
    assert settings.log_level == "WARNING"
    assert settings.log_format == "text"
    assert settings.request_timeout_s == 2.5
    assert settings.max_request_bytes == 2048
    assert settings.shutdown_grace_s == 4.5
    assert settings.enable_security_headers is False
    assert settings.cors_allow_origins == ("https://app.example",)
    assert settings.allowed_hosts == ("gateway.internal", "proxy.example")
    assert settings.ollama_base_url == "http://10.0.0.2:11434"
    assert settings.cerebras_base_url == "https://cerebras.example/v1"
    assert settings.cerebras_api_key is not None
    assert settings.cerebras_api_key.get_secret_value() == CEREBRAS_SECRET
    assert settings.custom_base_url == "http://10.0.0.3:8080/v1"
    assert settings.custom_api_key is not None
    assert settings.custom_api_key.get_secret_value() == CUSTOM_SECRET
    assert settings.providers_file == tmp_path / "providers.toml"
    assert settings.server_head_timeout_s == 20
    assert settings.server_max_head_bytes == 131_072
    assert settings.server_max_connections == 50
    assert settings.server_keepalive_s == 7.5
    assert settings.store_url == "memory://"
    assert settings.admin_api_key is not None
    assert settings.admin_api_key.get_secret_value() == ADMIN_SECRET
    assert settings.store_failure_mode == "open"
    assert settings.metrics_per_key is True


def test_request_timeout_is_the_builtin_providers_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUEST_TIMEOUT_S", "7")
    monkeypatch.setenv("CUSTOM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("CEREBRAS_API_KEY", CEREBRAS_SECRET)
    providers = load_config().providers
    assert {p.name: p.timeout_s for p in providers} == {
        "ollama": 7.0,
        "cerebras": 7.0,
        "custom": 7.0,
    }
    assert all(p.unconfigured is None for p in providers)


# --- lists: ALLOWED_API_KEYS and CORS_ALLOW_ORIGINS ----------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("k1,k2", ["k1", "k2"]),
        (" k1 , k2 ", ["k1", "k2"]),
        ("k1,,k2,", ["k1", "k2"]),
        (",", []),
        ('["k1","k2"]', ["k1", "k2"]),
        ('  [" k1 ", "", "k2  "]', ["k1", "k2"]),
        ("[]", []),
        ("single", ["single"]),
    ],
)
def test_allowed_api_keys_csv_or_json_trimmed_without_empty_entries(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("ALLOWED_API_KEYS", raw)
    assert secrets(load_settings().allowed_api_keys) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://a.example,http://b.example:3000", ("https://a.example", "http://b.example:3000")),
        (" https://a.example , , ", ("https://a.example",)),
        (
            '["https://a.example", " ", " http://b.example "]',
            ("https://a.example", "http://b.example"),
        ),
        ("*", ("*",)),
        ('["*"]', ("*",)),
    ],
)
def test_cors_origins_csv_or_json_trimmed_without_empty_entries(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: tuple[str, ...]
) -> None:
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", raw)
    assert load_settings().cors_allow_origins == expected


@pytest.mark.parametrize("variable", ["ALLOWED_API_KEYS", "CORS_ALLOW_ORIGINS"])
@pytest.mark.parametrize(
    "raw",
    ['["https://a.example", ', "[https://a.example]", '["https://a.example", 3]', '[["x"]]'],
)
def test_list_variables_reject_invalid_json_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str
) -> None:
    problems = problems_for(monkeypatch, **{variable: raw})
    assert len(problems) == 1
    assert problems[0].startswith(f"{variable}: ")
    assert "JSON array" in problems[0]


def test_cors_origin_that_is_not_a_url_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = problems_for(monkeypatch, CORS_ALLOW_ORIGINS="https://ok.example,app.example")
    assert len(problems) == 1
    assert problems[0].startswith("CORS_ALLOW_ORIGINS: ")
    assert "app.example" in problems[0]


# --- LOG_LEVEL / LOG_FORMAT -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("debug", "DEBUG"),
        ("Info", "INFO"),
        ("WARNING", "WARNING"),
        ("error", "ERROR"),
        ("cRiTiCaL", "CRITICAL"),
    ],
)
def test_log_level_accepted_in_any_case(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: str
) -> None:
    monkeypatch.setenv("LOG_LEVEL", raw)
    assert load_settings().log_level == expected


@pytest.mark.parametrize("raw", ["verbose", "TRACE", "warn", "10", "info,debug"])
def test_log_level_other_values_are_a_startup_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    problems = problems_for(monkeypatch, LOG_LEVEL=raw)
    assert len(problems) == 1
    assert problems[0].startswith("LOG_LEVEL: ")
    # The message says what is accepted, not only that the value is wrong.
    for level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        assert level in problems[0]


@pytest.mark.parametrize(
    ("raw", "expected"), [("json", "json"), ("text", "text"), ("TEXT", "text")]
)
def test_log_format_json_or_text(monkeypatch: pytest.MonkeyPatch, raw: str, expected: str) -> None:
    monkeypatch.setenv("LOG_FORMAT", raw)
    assert load_settings().log_format == expected


def test_log_format_other_values_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = problems_for(monkeypatch, LOG_FORMAT="xml")
    assert len(problems) == 1
    assert problems[0].startswith("LOG_FORMAT: ")
    assert "'json'" in problems[0]
    assert "'text'" in problems[0]


# --- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("65535", 65535), (" 8080 ", 8080)])
def test_service_port_bounds_accepted(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: int
) -> None:
    monkeypatch.setenv("SERVICE_PORT", raw)
    assert load_settings().service_port == expected


@pytest.mark.parametrize("raw", ["0", "65536", "-1", "http", "80.5", "8o8o"])
def test_service_port_out_of_range_or_not_a_number_rejected(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    problems = problems_for(monkeypatch, SERVICE_PORT=raw)
    assert len(problems) == 1
    assert problems[0].startswith("SERVICE_PORT: ")
    assert repr(raw) in problems[0]


def test_service_port_override_is_validated_too() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"service_port": 70000})
    assert [p.split(":")[0] for p in caught.value.problems] == ["SERVICE_PORT"]


@pytest.mark.parametrize("raw", ["0", "-1", "-0.5", "soon"])
def test_request_timeout_must_be_positive(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    problems = problems_for(monkeypatch, REQUEST_TIMEOUT_S=raw)
    assert len(problems) == 1
    assert problems[0].startswith("REQUEST_TIMEOUT_S: ")


def test_request_timeout_fraction_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUEST_TIMEOUT_S", "0.25")
    assert load_settings().request_timeout_s == 0.25


@pytest.mark.parametrize("raw", ["0", "-5", "10MB"])
def test_max_request_bytes_must_be_a_positive_integer(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    problems = problems_for(monkeypatch, MAX_REQUEST_BYTES=raw)
    assert len(problems) == 1
    assert problems[0].startswith("MAX_REQUEST_BYTES: ")


@pytest.mark.parametrize("variable", ["ALLOW_UNAUTHENTICATED", "ENABLE_SECURITY_HEADERS"])
def test_booleans_reject_non_boolean_words(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    problems = problems_for(monkeypatch, **{variable: "sometimes"})
    assert len(problems) == 1
    assert problems[0].startswith(f"{variable}: ")


# --- base URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://ollama.local:11434", "http://ollama.local:11434"),
        ("http://ollama.local:11434/", "http://ollama.local:11434"),
        ("http://ollama.local:11434/v1", "http://ollama.local:11434"),
        ("http://ollama.local:11434/v1/", "http://ollama.local:11434"),
        ("https://gpu.example/ollama/v1", "https://gpu.example/ollama"),
    ],
)
def test_ollama_base_url_tolerates_trailing_slash_and_v1(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: str
) -> None:
    monkeypatch.setenv("OLLAMA_BASE_URL", raw)
    assert load_settings().ollama_base_url == expected


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("CEREBRAS_BASE_URL", "https://api.cerebras.ai/v1/", "https://api.cerebras.ai/v1"),
        ("CEREBRAS_BASE_URL", "http://127.0.0.1:9000/v1", "http://127.0.0.1:9000/v1"),
        ("CUSTOM_BASE_URL", "http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1"),
        ("CUSTOM_BASE_URL", "https://api.openai.com/v1", "https://api.openai.com/v1"),
    ],
)
def test_openai_style_base_urls_lose_only_the_trailing_slash(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, expected: str
) -> None:
    monkeypatch.setenv(variable, raw)
    assert getattr(load_settings(), variable.lower()) == expected


@pytest.mark.parametrize("variable", ["OLLAMA_BASE_URL", "CEREBRAS_BASE_URL", "CUSTOM_BASE_URL"])
@pytest.mark.parametrize(
    "raw", ["ftp://files.example/v1", "localhost:8080/v1", "api.example.com", "http://"]
)
def test_base_urls_must_be_http(monkeypatch: pytest.MonkeyPatch, variable: str, raw: str) -> None:
    problems = problems_for(monkeypatch, **{variable: raw})
    assert len(problems) == 1
    assert problems[0].startswith(f"{variable}: ")
    assert "http://" in problems[0]


def test_custom_base_url_creates_the_custom_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOM_BASE_URL", "http://127.0.0.1:8080/v1/")
    monkeypatch.setenv("CUSTOM_API_KEY", CUSTOM_SECRET)
    custom = {p.name: p for p in load_config().providers}["custom"]
    assert custom.unconfigured is None
    assert custom.kind == "openai"
    assert custom.base_url == "http://127.0.0.1:8080/v1"
    assert custom.api_key is not None
    assert custom.api_key.get_secret_value() == CUSTOM_SECRET


# --- .env -------------------------------------------------------------------------------------


def test_dotenv_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "SERVICE_PORT=9123\n"
        "LOG_LEVEL=debug\n"
        f"ALLOWED_API_KEYS={GW_SECRET},second\n"
        "CUSTOM_BASE_URL=http://127.0.0.1:8080/v1/\n",
        encoding="utf-8",
    )
    settings = load_settings()
    assert settings.service_port == 9123
    assert settings.log_level == "DEBUG"
    assert secrets(settings.allowed_api_keys) == [GW_SECRET, "second"]
    assert settings.custom_base_url == "http://127.0.0.1:8080/v1"


def test_process_environment_wins_over_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("SERVICE_PORT=9123\nLOG_FORMAT=text\n", encoding="utf-8")
    monkeypatch.setenv("SERVICE_PORT", "9555")
    settings = load_settings()
    assert settings.service_port == 9555
    assert settings.log_format == "text"


def test_invalid_value_in_dotenv_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REQUEST_TIMEOUT_S=0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("REQUEST_TIMEOUT_S: ")


def test_dotenv_supplies_providers_file_and_its_key_variables(tmp_path: Path) -> None:
    (tmp_path / "providers.toml").write_text(
        '[providers.groq]\nkind = "openai"\nbase_url = "https://api.groq.example/openai/v1"\n'
        'api_key_env = "GROQ_TEST_KEY"\n',
        encoding="utf-8",
    )
    (tmp_path / ".env").write_text(
        "PROVIDERS_FILE=providers.toml\nGROQ_TEST_KEY=gsk-from-dotenv-123\n", encoding="utf-8"
    )
    groq = {p.name: p for p in load_config().providers}["groq"]
    assert groq.api_key is not None
    assert groq.api_key.get_secret_value() == "gsk-from-dotenv-123"


def test_dotenv_outside_working_directory_is_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("SERVICE_PORT=9123\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_settings().service_port == 8000


# --- problem lines ----------------------------------------------------------------------------


def test_every_problem_is_reported_on_its_own_line_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invalid = {
        "SERVICE_PORT": "0",
        "LOG_LEVEL": "loud",
        "LOG_FORMAT": "yaml",
        "REQUEST_TIMEOUT_S": "-3",
        "MAX_REQUEST_BYTES": "lots",
        "ALLOW_UNAUTHENTICATED": "perhaps",
        "ENABLE_SECURITY_HEADERS": "perhaps",
        "CORS_ALLOW_ORIGINS": "[",
        "ALLOWED_API_KEYS": "[1, 2]",
        "OLLAMA_BASE_URL": "ollama:11434",
        "CEREBRAS_BASE_URL": "cerebras",
        "CUSTOM_BASE_URL": "ftp://custom",
    }
    problems = problems_for(monkeypatch, **invalid)
    assert sorted(p.split(": ", 1)[0] for p in problems) == sorted(invalid)
    assert all("\n" not in p for p in problems)


def test_no_secret_value_appears_in_any_problem_line(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = problems_for(
        monkeypatch,
        ALLOWED_API_KEYS=f'["{GW_SECRET}", 42]',
        CEREBRAS_API_KEY=CEREBRAS_SECRET,
        CUSTOM_API_KEY=CUSTOM_SECRET,
        CUSTOM_BASE_URL="not a url",
        SERVICE_PORT="none",
    )
    assert len(problems) == 3
    text = "\n".join(problems)
    for secret in (GW_SECRET, CEREBRAS_SECRET, CUSTOM_SECRET):
        assert secret not in text


@pytest.mark.parametrize("raw", [f'["{GW_SECRET}"', f"[{GW_SECRET}]", f'["{GW_SECRET}", null]'])
def test_invalid_key_list_does_not_echo_the_keys(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    problems = problems_for(monkeypatch, ALLOWED_API_KEYS=raw)
    assert len(problems) == 1
    assert problems[0].startswith("ALLOWED_API_KEYS: ")
    assert GW_SECRET not in problems[0]


# --- the no-keys rule (§4.1) ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "gateway.internal"])
def test_non_loopback_host_without_keys_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    problems = problems_for(monkeypatch, SERVICE_HOST=host)
    assert len(problems) == 1
    assert problems[0].startswith("ALLOWED_API_KEYS: ")
    assert host in problems[0]
    assert "ALLOW_UNAUTHENTICATED=true" in problems[0]


@pytest.mark.parametrize("host", ["0.0.0.0", "gateway.internal"])
def test_allow_unauthenticated_lifts_the_no_keys_rule(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setenv("SERVICE_HOST", host)
    monkeypatch.setenv("ALLOW_UNAUTHENTICATED", "true")
    config = load_config()
    assert config.settings.service_host == host
    assert config.settings.allowed_api_keys == ()


def test_keys_satisfy_the_no_keys_rule_on_any_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_HOST", "0.0.0.0")
    monkeypatch.setenv("ALLOWED_API_KEYS", GW_SECRET)
    config = load_config()
    assert secrets(config.settings.allowed_api_keys) == [GW_SECRET]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.10.0.5", "::1", "localhost"])
def test_loopback_without_keys_is_fine(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("SERVICE_HOST", host)
    assert load_config().settings.service_host == host


def test_host_override_is_subject_to_the_no_keys_rule() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"service_host": "0.0.0.0"})
    assert caught.value.problems[0].startswith("ALLOWED_API_KEYS: ")
