"""A configuration error names the value that is wrong, not only what would have been accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from oai_gateway.config.providers_file import read_providers_file
from oai_gateway.config.settings import ConfigError, load_settings


def problems_of(tmp_path: Path, table: str) -> list[str]:
    path = tmp_path / "providers.toml"
    path.write_text(f'[providers.p]\nbase_url = "https://api.example/v1"\n{table}\n')
    specs, problems = read_providers_file(path, {"K": "secret-value-123"}, 30.0)
    assert not specs
    return problems


@pytest.mark.parametrize(
    ("table", "offending"),
    [
        ('kind = "anthropic"', "'anthropic'"),
        ('kind = "OpenAI"', "'OpenAI'"),
        ("kind = 3", "3"),
        ('kind = "openai"\ndrop_unsupported_params = "maybe"', "'maybe'"),
        ('kind = "openai"\ntimeout_s = "soon"', "'soon'"),
        ('kind = "openai"\ntimeout_s = -1', "-1"),
    ],
)
def test_providers_file_problem_names_the_value(tmp_path: Path, table: str, offending: str) -> None:
    [problem] = problems_of(tmp_path, table)
    assert f"(got {offending})" in problem, problem


def test_unknown_kind_also_says_what_is_accepted(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, 'kind = "anthropic"')
    assert "anthropic" in problem
    for kind in ("openai", "ollama", "cerebras"):
        assert kind in problem


@pytest.mark.parametrize(
    "table",
    [
        'kind = "openai"\napi_key_env = "sk-live-0123456789abcdef"',
        'kind = "openai"\napikey = "sk-live-0123456789abcdef"',
        'kind = "openai"\nheaders = { "X-Token" = 5 }',
    ],
)
def test_values_that_may_be_secrets_are_never_echoed(tmp_path: Path, table: str) -> None:
    [problem] = problems_of(tmp_path, table)
    assert "got" not in problem, problem
    assert "sk-live" not in problem


@pytest.mark.parametrize(
    ("setting", "value"),
    [("log_level", "loud"), ("log_format", "xml"), ("enable_security_headers", "maybe")],
)
def test_settings_problem_names_the_value(setting: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({setting: value})
    [problem] = raised.value.problems
    assert problem.startswith(setting.upper()), problem
    assert f"(got '{value}')" in problem, problem
