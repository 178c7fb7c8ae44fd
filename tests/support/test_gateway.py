"""The helpers that build the tests' gateways must not depend on the machine they run on."""

from __future__ import annotations

from pathlib import Path

import pytest

from oai_gateway.config.settings import Settings
from tests.support.gateway import make_config

# A valid, non-default value for every setting, as a developer's shell or `.env` might hold.
# Numbers and switches get one derived from their default; the rest are spelled out.
SPELLED_OUT = {
    "SERVICE_HOST": "0.0.0.0",
    "ALLOWED_API_KEYS": "key-from-the-shell-1,key-from-the-shell-2",
    "LOG_LEVEL": "DEBUG",
    "LOG_FORMAT": "text",
    "CORS_ALLOW_ORIGINS": "https://shell.example",
    "OLLAMA_BASE_URL": "http://10.9.9.9:11434",
    "CEREBRAS_BASE_URL": "http://10.9.9.9/v1",
    "CEREBRAS_API_KEY": "csk-from-the-shell",
    "CUSTOM_BASE_URL": "http://10.9.9.8/v1",
    "CUSTOM_API_KEY": "sk-from-the-shell",
    "PROVIDERS_FILE": "/nowhere/providers.json",
    "STORE_URL": "memory://",
    "ADMIN_API_KEY": "admin-key-from-the-shell-0123456789abcdef",
    "STORE_FAILURE_MODE": "open",
    "ALLOWED_HOSTS": "shell.example",
}


def _derived(default: object) -> str | None:
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, int | float):
        return str(default + 1)  # every numeric setting has a lower bound at most its default
    return None


SHELL = {
    name.upper(): value
    for name, field in Settings.model_fields.items()
    if (value := SPELLED_OUT.get(name.upper()) or _derived(field.default)) is not None
}


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every setting present in the environment and in a `.env` of the working directory."""
    for name, value in SHELL.items():
        monkeypatch.setenv(name, value)
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in SHELL.items()))
    monkeypatch.chdir(tmp_path)


def test_the_shell_sets_every_setting() -> None:
    missing = {name.upper() for name in Settings.model_fields} - set(SHELL)
    assert not missing, f"give these settings a value in SPELLED_OUT: {sorted(missing)}"


@pytest.mark.usefixtures("shell")
def test_the_shell_would_change_every_setting_read_from_the_environment() -> None:
    """The control: the same variables do reach settings that read the environment."""
    from_shell = Settings()
    for name, field in Settings.model_fields.items():
        assert getattr(from_shell, name) != field.default, name


@pytest.mark.usefixtures("shell")
def test_make_config_ignores_the_environment_and_dotenv() -> None:
    config = make_config()
    for name, field in Settings.model_fields.items():
        assert getattr(config.settings, name) == field.default, name
    providers = {p.name: p for p in config.providers}
    assert providers["cerebras"].api_key is None
    assert providers["cerebras"].unconfigured == "set CEREBRAS_API_KEY"
    assert providers["custom"].unconfigured == "set CUSTOM_BASE_URL"
    assert config.secrets() == []


@pytest.mark.usefixtures("shell")
def test_make_config_takes_the_values_it_is_given() -> None:
    config = make_config(allowed_api_keys="given-key-123", request_timeout_s=4)
    assert [k.get_secret_value() for k in config.settings.allowed_api_keys] == ["given-key-123"]
    assert config.settings.request_timeout_s == 4
    assert config.settings.cors_allow_origins == ()
