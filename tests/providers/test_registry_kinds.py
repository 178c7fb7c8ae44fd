"""A provider kind is one module plus one registry line: configuration takes its kind names and
per-kind defaults from the registry, so a kind added there alone is accepted by providers files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from oai_gateway.config.loader import load_config
from oai_gateway.config.settings import ConfigError, KindConfig, ProviderSpec
from oai_gateway.observability.redact import Redactor
from oai_gateway.providers import registry
from oai_gateway.providers.base import Operation
from oai_gateway.providers.dialect import Dialect
from oai_gateway.providers.provider import DialectProvider

# A throw-away kind, defined only here: every default differs from the `openai` kind's.
ECHO = Dialect(
    kind_label="Echo",
    unsupported=frozenset({Operation.EMBEDDINGS}),
    config=KindConfig(
        responses="translate",
        default_base_url="http://127.0.0.1:9/v1/",
        strip_v1=True,
        key_required=True,
    ),
)


@pytest.fixture(autouse=True)
def echo_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The one registry line, added for this module's tests only."""
    monkeypatch.setitem(registry.KINDS, "echo", ECHO)
    for name in ("PROVIDERS_FILE", "CUSTOM_BASE_URL", "CEREBRAS_API_KEY", "ECHO_TEST_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> dict[str, ProviderSpec]:
    path = tmp_path / "providers.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("PROVIDERS_FILE", str(path))
    return {p.name: p for p in load_config().providers}


def problems(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, tmp_path, text)
    path = str(tmp_path / "providers.toml")
    return [p.replace(path, "FILE") for p in caught.value.problems]


def test_a_kind_added_to_the_registry_alone_is_accepted_with_its_own_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ECHO_TEST_KEY", "echo-secret")
    spec = load(
        monkeypatch, tmp_path, '[providers.mine]\nkind = "echo"\napi_key_env = "ECHO_TEST_KEY"\n'
    )["mine"]
    assert spec.kind == "echo"
    assert spec.base_url == "http://127.0.0.1:9"  # its default URL, its /v1 stripped
    assert spec.responses_mode == "translate"
    assert spec.api_key is not None
    assert spec.api_key.get_secret_value() == "echo-secret"

    providers = registry.ProviderRegistry([spec], Redactor([]))
    provider = providers.get("mine")
    assert isinstance(provider, DialectProvider)
    assert provider.dialect is ECHO
    asyncio.run(providers.aclose())


def test_a_kind_is_validated_with_the_rules_of_its_own_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert problems(monkeypatch, tmp_path, '[providers.mine]\nkind = "echo"\n') == [
        "FILE: provider 'mine': api_key_env: required for kind 'echo'"
    ]
    text = '[providers.mine]\nkind = "echo"\nbase_url = "http://10.0.0.1:8/v1"\napi_key_env = "K"\n'
    monkeypatch.setenv("K", "k")
    assert load(monkeypatch, tmp_path, text)["mine"].base_url == "http://10.0.0.1:8"


def test_the_unknown_kind_message_lists_the_registry_names_and_the_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    found = problems(monkeypatch, tmp_path, '[providers.mine]\nkind = "anthropic"\n')
    assert found == [
        "FILE: provider 'mine': kind: Input should be 'openai', 'ollama', 'cerebras' or 'echo' "
        "(got 'anthropic')"
    ]


def test_without_the_registry_line_the_kind_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delitem(registry.KINDS, "echo")
    found = problems(monkeypatch, tmp_path, '[providers.mine]\nkind = "echo"\n')
    assert found == [
        "FILE: provider 'mine': kind: Input should be 'openai', 'ollama' or 'cerebras' (got 'echo')"
    ]
