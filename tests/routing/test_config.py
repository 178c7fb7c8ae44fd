"""The providers-file keys of SPEC §11: upstreams, strategy, max_attempts, ttft_timeout_s,
fallbacks; one line per problem, and check-config's view with secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from oai_gateway.cli import main
from oai_gateway.config.loader import load_config
from oai_gateway.config.settings import ConfigError, ProviderSpec

KEY_A = "sk-gpu-one-0123456789abcdef"
KEY_B = "sk-gpu-two-0123456789abcdef"

ROUTED = """
[providers.local]
kind = "openai"
api_key_env = "GPU_SHARED_KEY"
headers = { "X-Team" = "ml" }
strategy = "least_in_flight"
max_attempts = 4
ttft_timeout_s = 2.5
[[providers.local.upstreams]]
base_url = "http://127.0.0.1:9001/v1/"
api_key_env = "GPU_ONE_KEY"
weight = 3
headers = { "X-Box" = "one" }
[[providers.local.upstreams]]
base_url = "http://127.0.0.1:9002/v1"
[providers.local.fallbacks]
"llama-3.1-8b" = ["spare/llama3.1-8b", "local/llama-3.2-1b"]

[providers.spare]
kind = "openai"
base_url = "http://127.0.0.1:9003/v1"
models = ["llama3.1-8b"]
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("PROVIDERS_FILE", "SERVICE_HOST", "ALLOWED_API_KEYS", "CUSTOM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GPU_ONE_KEY", KEY_A)
    monkeypatch.setenv("GPU_SHARED_KEY", KEY_B)
    monkeypatch.chdir(tmp_path)


def providers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str
) -> dict[str, ProviderSpec]:
    path = tmp_path / "providers.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("PROVIDERS_FILE", str(path))
    return {p.name: p for p in load_config().providers}


def problems(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        providers(monkeypatch, tmp_path, text)
    return caught.value.problems


def test_upstreams_are_resolved_in_file_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    local = providers(monkeypatch, tmp_path, ROUTED)["local"]
    assert local.routed
    one, two = local.upstreams
    assert one.base_url == "http://127.0.0.1:9001/v1"
    assert one.api_key is not None
    assert one.api_key.get_secret_value() == KEY_A
    assert one.weight == 3
    assert dict(one.headers) == {"X-Team": "ml", "X-Box": "one"}
    assert two.api_key is not None
    assert two.api_key.get_secret_value() == KEY_B
    assert two.weight == 1
    assert dict(two.headers) == {"X-Team": "ml"}
    assert local.base_url == one.base_url  # labels and hints name the first
    assert (local.strategy, local.max_attempts, local.ttft_timeout_s) == ("least_in_flight", 4, 2.5)
    assert local.fallbacks == {"llama-3.1-8b": ("spare/llama3.1-8b", "local/llama-3.2-1b")}


def test_defaults_and_a_single_base_url_stay_unrouted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spare = providers(monkeypatch, tmp_path, ROUTED)["spare"]
    assert not spare.routed
    assert spare.upstreams == ()
    assert (spare.strategy, spare.max_attempts, spare.ttft_timeout_s) == ("weighted", 3, None)


def test_one_upstream_is_not_routed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = '[providers.one]\nkind = "ollama"\n[[providers.one.upstreams]]\nbase_url = "http://127.0.0.1:9/v1"\n'
    one = providers(monkeypatch, tmp_path, text)["one"]
    assert not one.routed
    assert one.base_url == "http://127.0.0.1:9"  # ollama's /v1 tolerated as for base_url


@pytest.mark.parametrize(
    ("hunk", "expected"),
    [
        ('base_url = "http://x:1/v1"\n', "local': base_url: give either base_url or [[upstreams]]"),
        (
            'strategy = "fastest"\n',
            "local': strategy: Input should be 'weighted' or 'least_in_flight'",
        ),
        ("max_attempts = 0\n", "local': max_attempts: Input should be greater than or equal to 1"),
        ("ttft_timeout_s = 0\n", "local': ttft_timeout_s: Input should be greater than 0"),
    ],
)
def test_one_line_per_problem_in_the_provider_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hunk: str, expected: str
) -> None:
    text = ROUTED.replace('strategy = "least_in_flight"\n', "").replace("max_attempts = 4\n", "")
    text = text.replace("ttft_timeout_s = 2.5\n", "")
    text = text.replace('kind = "openai"\napi_key_env', f'kind = "openai"\n{hunk}api_key_env', 1)
    found = problems(monkeypatch, tmp_path, text)
    assert len(found) == 1, found
    assert expected in found[0], found


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ('base_url = "ftp://x"', "upstreams.1.base_url: must be an http:// or https:// URL"),
        ('base_url = "http://x:1"\nweight = 0', "upstreams.1.weight: Input should be greater"),
        (
            'base_url = "http://x:1"\napi_key = "sk-literal"',
            "upstreams.1.api_key: a literal api_key is not allowed",
        ),
        (
            'base_url = "http://x:1"\napi_key_env = "NOT_SET_ANYWHERE"',
            "upstreams.1.api_key_env: the variable NOT_SET_ANYWHERE is not set",
        ),
        (
            'base_url = "http://x:1"\napi_key_env = "sk-abc def"',
            "upstreams.1.api_key_env: must be the name of an environment variable",
        ),
        (
            'base_url = "http://x:1"\nheaders = { "Host" = "x" }',
            "upstreams.1.headers: header 'Host' is set by the gateway and cannot be configured",
        ),
        ('base_url = "http://x:1"\nprice = 1', "upstreams.1.price: unknown key"),
        ("weight = 2", "upstreams.1.base_url: Field required"),
    ],
)
def test_one_line_per_problem_in_an_upstream(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, upstream: str, expected: str
) -> None:
    text = ROUTED.replace('base_url = "http://127.0.0.1:9002/v1"', upstream)
    found = problems(monkeypatch, tmp_path, text)
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'providers.toml'}: provider 'local': ")
    assert expected in found[0], found
    assert "sk-literal" not in found[0]
    assert "sk-abc" not in found[0]


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        ('"nowhere/m"', "'nowhere/m': there is no provider 'nowhere'"),
        ('"spare/other"', "'spare/other': 'other' is not in the models of provider 'spare'"),
        ('"cerebras/llama3.1-8b"', "provider 'cerebras' is not configured (set CEREBRAS_API_KEY)"),
        ('"no-model-here"', "is not a provider/model pair"),
        ('"spare/"', "is not a provider/model pair"),
    ],
)
def test_fallbacks_must_resolve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pair: str, expected: str
) -> None:
    monkeypatch.delenv("CEREBRAS_API_KEY", raising=False)
    text = ROUTED.replace('"spare/llama3.1-8b", ', f"{pair}, ")
    found = problems(monkeypatch, tmp_path, text)
    assert len(found) == 1, found
    assert "provider 'local': fallbacks" in found[0]
    assert expected in found[0], found


def test_check_config_prints_the_resolved_upstreams_with_keys_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(ROUTED, encoding="utf-8")
    assert main(["check-config", "--providers-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert KEY_A not in out
    assert KEY_B not in out
    lines = [line.strip() for line in out.splitlines()]
    assert "routing: strategy=least_in_flight max_attempts=4 ttft_timeout_s=2.5" in lines
    assert "upstream local/0: base_url=http://127.0.0.1:9001/v1 key=sk-…ef weight=3" in lines
    assert "upstream local/1: base_url=http://127.0.0.1:9002/v1 key=sk-…ef weight=1" in lines
    assert "fallbacks llama-3.1-8b: spare/llama3.1-8b, local/llama-3.2-1b" in lines
    spare = next(line for line in lines if line.startswith("provider spare:"))
    assert "routing" not in out.split(spare)[1].split("provider")[0]


def test_an_empty_upstream_list_is_a_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = '[providers.local]\nkind = "openai"\nupstreams = []\n'
    found = problems(monkeypatch, tmp_path, text)
    assert len(found) == 1, found
    assert "provider 'local': upstreams: Tuple should have at least 1 item" in found[0]
