"""What a provider's configuration may send upstream, checked once at startup and by check-config.

Base URLs carry no credentials or query, configured header values are latin-1 and never shadow a
header the gateway sets, case variants replace a default instead of doubling it, and header values
are secrets as far as the logs are concerned.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from oai_gateway.config.loader import Config
from oai_gateway.config.providers_file import read_providers_file
from oai_gateway.config.settings import ConfigError, Settings, load_settings
from oai_gateway.upstream.client import UpstreamClient, json_headers


def providers_file(tmp_path: Path, headers: str, base_url: str = "http://127.0.0.1:9/v1") -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(
        f'[providers.acme]\nkind = "openai"\nbase_url = "{base_url}"\n'
        f"[providers.acme.headers]\n{headers}\n",
        encoding="utf-8",
    )
    return path


def problems(tmp_path: Path, headers: str, base_url: str = "http://127.0.0.1:9/v1") -> list[str]:
    _, found = read_providers_file(providers_file(tmp_path, headers, base_url), {}, 30.0)
    return found


def test_userinfo_in_a_base_url_is_a_configuration_error_that_hides_the_password(
    tmp_path: Path,
) -> None:
    found = problems(tmp_path, "", base_url="https://user:hunter22@api.example/v1")
    assert len(found) == 1
    assert "user:password@" in found[0]
    assert "hunter22" not in found[0]
    with pytest.raises(ConfigError) as raised:
        load_settings({"custom_base_url": "https://u:hunter22@api.example/v1"})
    assert "hunter22" not in str(raised.value)
    with pytest.raises(ValueError, match="user:password@"):
        UpstreamClient(
            base_url="http://u:p@127.0.0.1:1",
            headers={},
            timeout_s=1,
            label="l",
            unreachable_hint="h",
        )


@pytest.mark.parametrize(
    "name", ["connection", "TE", "Expect", "upgrade", "X-Request-ID", "Host", "Content-Type"]
)
def test_headers_the_gateway_sets_cannot_be_configured(name: str, tmp_path: Path) -> None:
    found = problems(tmp_path, f'"{name}" = "x"')
    assert len(found) == 1
    assert "set by the gateway" in found[0], found


def test_a_header_value_that_is_not_latin_1_is_refused_at_startup(tmp_path: Path) -> None:
    found = problems(tmp_path, '"x-team" = "équipe 東京"')
    assert len(found) == 1
    assert "latin-1" in found[0]


def test_check_config_refuses_a_non_latin_1_header_value(tmp_path: Path) -> None:
    path = providers_file(tmp_path, '"x-team" = "東京"')
    result = subprocess.run(
        [sys.executable, "-m", "oai_gateway", "check-config", "--providers-file", str(path)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "latin-1" in result.stderr


def test_a_case_variant_replaces_a_default_header_instead_of_doubling_it() -> None:
    headers = json_headers("key", {"Accept": "text/plain", "User-Agent": "mine"})
    assert headers["accept"] == "text/plain"
    assert headers["user-agent"] == "mine"
    assert [n for n in headers if n.lower() == "accept"] == ["accept"]


def test_configured_header_values_are_secrets_for_the_logs(tmp_path: Path) -> None:
    specs, found = read_providers_file(
        providers_file(tmp_path, '"x-api-token" = "tok-0123456789abcdef"\n"x-tier" = "gold"'),
        {},
        30.0,
    )
    assert not found
    config = Config(Settings(_env_file=None), tuple(specs))
    assert "tok-0123456789abcdef" in config.secrets()
    assert "gold" not in config.secrets()  # too short to be a credential; would mangle text
