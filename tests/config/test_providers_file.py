"""The TOML providers file (SPEC §3.2): resolution and one clear line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from oai_gateway.config.loader import load_config
from oai_gateway.config.providers_file import read_providers_file
from oai_gateway.config.settings import ConfigError, ProviderSpec

GROQ_SECRET = "gsk-groq-secret-value-123"
LOCAL_SECRET = "sk-local-secret-value-456"
CEREBRAS_SECRET = "csk-file-cerebras-secret-789"

VALID = """
[providers.groq]
kind = "openai"
base_url = "https://api.groq.example/openai/v1/"
api_key_env = "GROQ_TEST_KEY"
models = ["llama-3.1-8b-instant", "mixtral-8x7b"]
timeout_s = 60
headers = { "X-Title" = "my-app", "HTTP-Referer" = "https://my-app.example" }

[providers.gpu-box]
kind = "ollama"
base_url = "http://10.1.2.3:11434/v1"

[providers.fast_cerebras]
kind = "cerebras"
api_key_env = "FILE_CEREBRAS_KEY"
timeout_s = 2.5

[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:8081/v1"
api_key_env = "LOCAL_TEST_KEY"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "PROVIDERS_FILE",
        "REQUEST_TIMEOUT_S",
        "SERVICE_HOST",
        "ALLOWED_API_KEYS",
        "CUSTOM_BASE_URL",
        "CUSTOM_API_KEY",
        "CEREBRAS_API_KEY",
        "OLLAMA_BASE_URL",
        "CEREBRAS_BASE_URL",
        "GROQ_TEST_KEY",
        "LOCAL_TEST_KEY",
        "FILE_CEREBRAS_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "providers.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def resolved(monkeypatch: pytest.MonkeyPatch, path: Path) -> dict[str, ProviderSpec]:
    monkeypatch.setenv("PROVIDERS_FILE", str(path))
    return {p.name: p for p in load_config().providers}


def problems_of(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[str]:
    monkeypatch.setenv("PROVIDERS_FILE", str(path))
    with pytest.raises(ConfigError) as caught:
        load_config()
    return caught.value.problems


def only_problem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> tuple[str, Path]:
    path = write(tmp_path, text)
    problems = problems_of(monkeypatch, path)
    assert len(problems) == 1, problems
    return problems[0], path


# --- a valid file -----------------------------------------------------------------------------


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_TEST_KEY", GROQ_SECRET)
    monkeypatch.setenv("LOCAL_TEST_KEY", LOCAL_SECRET)
    monkeypatch.setenv("FILE_CEREBRAS_KEY", CEREBRAS_SECRET)
    monkeypatch.setenv("REQUEST_TIMEOUT_S", "33")


@pytest.mark.usefixtures("keys")
def test_openai_kind_resolved_with_everything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    groq = resolved(monkeypatch, write(tmp_path, VALID))["groq"]
    assert groq.kind == "openai"
    assert groq.base_url == "https://api.groq.example/openai/v1"
    assert groq.api_key is not None
    assert groq.api_key.get_secret_value() == GROQ_SECRET
    assert groq.api_key_env == "GROQ_TEST_KEY"
    assert groq.models == frozenset({"llama-3.1-8b-instant", "mixtral-8x7b"})
    assert groq.timeout_s == 60.0
    assert dict(groq.headers) == {"X-Title": "my-app", "HTTP-Referer": "https://my-app.example"}
    assert groq.unconfigured is None


@pytest.mark.usefixtures("keys")
def test_ollama_kind_resolved_with_v1_stripped_and_no_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    box = resolved(monkeypatch, write(tmp_path, VALID))["gpu-box"]
    assert box.kind == "ollama"
    assert box.base_url == "http://10.1.2.3:11434"
    assert box.api_key is None
    assert box.models is None
    assert box.timeout_s == 33.0  # REQUEST_TIMEOUT_S when the file gives none
    assert dict(box.headers) == {}


@pytest.mark.usefixtures("keys")
def test_cerebras_kind_resolved_with_default_url_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fast = resolved(monkeypatch, write(tmp_path, VALID))["fast_cerebras"]
    assert fast.kind == "cerebras"
    assert fast.base_url == "https://api.cerebras.ai/v1"
    assert fast.api_key is not None
    assert fast.api_key.get_secret_value() == CEREBRAS_SECRET
    assert fast.timeout_s == 2.5


@pytest.mark.usefixtures("keys")
def test_file_providers_join_the_builtins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    providers = resolved(monkeypatch, write(tmp_path, VALID))
    assert set(providers) == {
        "ollama",
        "cerebras",
        "custom",
        "groq",
        "gpu-box",
        "fast_cerebras",
        "local",
    }
    assert providers["local"].api_key is not None
    assert providers["local"].api_key.get_secret_value() == LOCAL_SECRET
    assert providers["ollama"].kind == "ollama"


def test_a_file_name_overrides_a_builtin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers.ollama]\nkind = "openai"\nbase_url = "http://127.0.0.1:9999/v1"\n'
        'models = ["only-this"]\n',
    )
    providers = resolved(monkeypatch, path)
    ollama = providers["ollama"]
    assert ollama.kind == "openai"
    assert ollama.base_url == "http://127.0.0.1:9999/v1"
    assert ollama.models == frozenset({"only-this"})
    assert [p.name for p in providers.values()].count("ollama") == 1


def test_overriding_an_unconfigured_builtin_configures_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FILE_CEREBRAS_KEY", CEREBRAS_SECRET)
    path = write(
        tmp_path,
        '[providers.cerebras]\nkind = "cerebras"\napi_key_env = "FILE_CEREBRAS_KEY"\n',
    )
    cerebras = resolved(monkeypatch, path)["cerebras"]
    assert cerebras.unconfigured is None
    assert cerebras.api_key is not None
    assert cerebras.api_key.get_secret_value() == CEREBRAS_SECRET


def test_name_limits_are_inclusive(tmp_path: Path) -> None:
    name = "a" + "b" * 31  # 32 characters: the longest allowed
    path = write(
        tmp_path, f'[providers.{name}]\nkind = "ollama"\n[providers.0-x_y]\nkind = "ollama"\n'
    )
    specs, problems = read_providers_file(path, {}, 120.0)
    assert problems == []
    assert [s.name for s in specs] == [name, "0-x_y"]


def test_read_providers_file_takes_keys_from_the_given_environment(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    env = {"GROQ_TEST_KEY": GROQ_SECRET, "LOCAL_TEST_KEY": "x", "FILE_CEREBRAS_KEY": "y"}
    specs, problems = read_providers_file(path, env, 9.0)
    assert problems == []
    by_name = {s.name: s for s in specs}
    assert by_name["groq"].api_key is not None
    assert by_name["groq"].api_key.get_secret_value() == GROQ_SECRET
    assert by_name["local"].timeout_s == 9.0


# --- invalid files: each line names the file, the provider and the problem ----------------------


def test_unreadable_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "providers.toml"
    problems = problems_of(monkeypatch, missing)
    assert len(problems) == 1
    assert str(missing) in problems[0]
    assert "PROVIDERS_FILE" in problems[0]
    assert "cannot read" in problems[0]


def test_directory_instead_of_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    problems = problems_of(monkeypatch, tmp_path)
    assert len(problems) == 1
    assert str(tmp_path) in problems[0]
    assert "cannot read" in problems[0]


def test_invalid_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    problem, path = only_problem(monkeypatch, tmp_path, '[providers.groq\nkind = "openai"\n')
    assert problem.startswith(f"{path}: ")
    assert "not valid TOML" in problem
    assert "line 1" in problem


def test_not_utf8(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_bytes(b'[providers.groq]\nkind = "\xff\xfe"\n')
    problems = problems_of(monkeypatch, path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: ")
    assert "not valid TOML" in problems[0]


@pytest.mark.parametrize(
    "name", ["Groq", "GROQ", "a" * 33, "-lead", "_lead", "has.dot", "has space", "é"]
)
def test_bad_provider_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    problem, path = only_problem(monkeypatch, tmp_path, f'[providers."{name}"]\nkind = "ollama"\n')
    assert problem.startswith(f"{path}: provider '{name}': ")
    assert "[a-z0-9][a-z0-9_-]{0,31}" in problem


def test_unknown_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    problem, path = only_problem(
        monkeypatch,
        tmp_path,
        '[providers.claude]\nkind = "anthropic"\nbase_url = "https://api.example/v1"\n',
    )
    assert problem.startswith(f"{path}: provider 'claude': kind: ")
    for kind in ("openai", "ollama", "cerebras"):
        assert kind in problem


def test_missing_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    problem, path = only_problem(
        monkeypatch, tmp_path, '[providers.groq]\nbase_url = "https://api.example/v1"\n'
    )
    assert problem.startswith(f"{path}: provider 'groq': kind: ")


def test_openai_kind_needs_base_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    problem, path = only_problem(monkeypatch, tmp_path, '[providers.groq]\nkind = "openai"\n')
    assert problem.startswith(f"{path}: provider 'groq': ")
    assert "base_url" in problem
    assert "required" in problem


def test_cerebras_kind_needs_api_key_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    problem, path = only_problem(monkeypatch, tmp_path, '[providers.cb]\nkind = "cerebras"\n')
    assert problem.startswith(f"{path}: provider 'cb': ")
    assert "api_key_env" in problem


@pytest.mark.parametrize("url", ["ftp://api.example/v1", "api.example/v1", "http://"])
def test_base_url_must_be_http(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str) -> None:
    problem, path = only_problem(
        monkeypatch, tmp_path, f'[providers.groq]\nkind = "openai"\nbase_url = "{url}"\n'
    )
    assert problem.startswith(f"{path}: provider 'groq': base_url: ")
    assert "http://" in problem


def test_literal_api_key_says_to_use_api_key_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    problem, path = only_problem(
        monkeypatch,
        tmp_path,
        '[providers.groq]\nkind = "openai"\nbase_url = "https://api.example/v1"\n'
        f'api_key = "{GROQ_SECRET}"\n',
    )
    assert problem.startswith(f"{path}: provider 'groq': api_key: ")
    assert "api_key_env" in problem
    assert GROQ_SECRET not in problem


def test_api_key_env_naming_an_unset_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    problem, path = only_problem(
        monkeypatch,
        tmp_path,
        '[providers.groq]\nkind = "openai"\nbase_url = "https://api.example/v1"\n'
        'api_key_env = "GROQ_TEST_KEY"\n',
    )
    assert problem.startswith(f"{path}: provider 'groq': api_key_env: ")
    assert "GROQ_TEST_KEY" in problem
    assert "not set" in problem


def test_api_key_env_naming_an_empty_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GROQ_TEST_KEY", "")
    problem, path = only_problem(
        monkeypatch,
        tmp_path,
        '[providers.groq]\nkind = "openai"\nbase_url = "https://api.example/v1"\n'
        'api_key_env = "GROQ_TEST_KEY"\n',
    )
    assert problem.startswith(f"{path}: provider 'groq': api_key_env: ")
    assert "GROQ_TEST_KEY" in problem


def test_key_pasted_into_api_key_env_is_rejected_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    problem, path = only_problem(
        monkeypatch,
        tmp_path,
        '[providers.groq]\nkind = "openai"\nbase_url = "https://api.example/v1"\n'
        f'api_key_env = "{GROQ_SECRET}"\n',
    )
    assert problem.startswith(f"{path}: provider 'groq': api_key_env: ")
    assert GROQ_SECRET not in problem


def test_unknown_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    problem, path = only_problem(
        monkeypatch,
        tmp_path,
        '[providers.groq]\nkind = "openai"\nbase_url = "https://api.example/v1"\ncolour = "red"\n',
    )
    assert problem == f"{path}: provider 'groq': colour: unknown key"


def test_unknown_top_level_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    problem, path = only_problem(
        monkeypatch, tmp_path, 'title = "mine"\n[providers.box]\nkind = "ollama"\n'
    )
    assert problem.startswith(f"{path}: ")
    assert "'title'" in problem


@pytest.mark.parametrize("value", ["0", "-5", "-0.1"])
def test_non_positive_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str) -> None:
    problem, path = only_problem(
        monkeypatch, tmp_path, f'[providers.box]\nkind = "ollama"\ntimeout_s = {value}\n'
    )
    assert problem.startswith(f"{path}: provider 'box': timeout_s: ")
    assert "greater than 0" in problem


@pytest.mark.parametrize("value", ["a\\r\\nX-Injected: 1", "a\\nb", "a\\rb"])
def test_header_value_with_line_break(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    problem, path = only_problem(
        monkeypatch,
        tmp_path,
        f'[providers.box]\nkind = "ollama"\nheaders = {{ "X-Title" = "{value}" }}\n',
    )
    assert problem.startswith(f"{path}: provider 'box': headers: ")
    assert "X-Title" in problem
    assert "line break" in problem


@pytest.mark.parametrize("header", ["Authorization", "host", "Bad Name", "X:Y"])
def test_reserved_or_malformed_header_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, header: str
) -> None:
    problem, path = only_problem(
        monkeypatch,
        tmp_path,
        f'[providers.box]\nkind = "ollama"\nheaders = {{ "{header}" = "v" }}\n',
    )
    assert problem.startswith(f"{path}: provider 'box': headers: ")
    assert header in problem


@pytest.mark.parametrize(
    "text",
    ["", "# nothing\n", "[providers]\n", "providers = 3\n", "[other.box]\nkind = 'ollama'\n"],
)
def test_no_providers_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    problems = problems_of(monkeypatch, path)
    assert problems[-1] == f"{path}: no [providers.NAME] tables found"


def test_provider_that_is_not_a_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    problem, path = only_problem(monkeypatch, tmp_path, '[providers]\nbox = "ollama"\n')
    assert problem.startswith(f"{path}: provider 'box': ")
    assert "table" in problem


def test_every_problem_of_every_provider_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        '[providers.one]\nkind = "openai"\n'
        '[providers.two]\nkind = "ollama"\ntimeout_s = 0\ncolour = "red"\n'
        '[providers.Three]\nkind = "ollama"\n'
        '[providers.fine]\nkind = "ollama"\n',
    )
    problems = problems_of(monkeypatch, path)
    assert len(problems) == 4, problems
    assert all(p.startswith(f"{path}: provider '") for p in problems)
    assert sorted(p.split("'")[1] for p in problems) == ["Three", "one", "two", "two"]


def test_file_problems_and_environment_problems_are_reported_together(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, '[providers.one]\nkind = "openai"\n')
    monkeypatch.setenv("SERVICE_HOST", "0.0.0.0")
    problems = problems_of(monkeypatch, path)
    assert len(problems) == 2
    assert problems[0].startswith(f"{path}: provider 'one': ")
    assert problems[1].startswith("ALLOWED_API_KEYS: ")


def test_file_problems_are_reported_even_when_the_environment_is_invalid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, '[providers.one]\nkind = "openai"\n')
    monkeypatch.setenv("SERVICE_PORT", "0")
    problems = problems_of(monkeypatch, path)
    assert len(problems) == 2
    assert problems[0].startswith("SERVICE_PORT: ")
    assert problems[1].startswith(f"{path}: provider 'one': ")


def test_file_given_as_override_is_checked_when_the_environment_is_invalid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, '[providers.one]\nkind = "openai"\n')
    monkeypatch.setenv("LOG_LEVEL", "loud")
    with pytest.raises(ConfigError) as caught:
        load_config({"providers_file": str(path)})
    assert [p.split(":")[0] for p in caught.value.problems] == ["LOG_LEVEL", str(path)]


@pytest.mark.usefixtures("keys")
def test_responses_mode_defaults_by_kind_and_can_be_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    found = resolved(monkeypatch, write(tmp_path, VALID))
    assert found["fast_cerebras"].responses_mode == "translate"
    assert {found[n].responses_mode for n in found if found[n].kind != "cerebras"} == {"native"}
    text = '[providers.local]\nkind = "openai"\nbase_url = "http://h:1/v1"\nresponses = "off"\n'
    assert resolved(monkeypatch, write(tmp_path, text))["local"].responses_mode == "off"


def test_responses_mode_must_be_one_of_three(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    problem, path = only_problem(
        monkeypatch,
        tmp_path,
        '[providers.local]\nkind = "openai"\nbase_url = "http://h:1/v1"\nresponses = "auto"\n',
    )
    assert problem.startswith(f"{path}: provider 'local': responses: ")
    for mode in ("native", "translate", "off"):
        assert mode in problem
