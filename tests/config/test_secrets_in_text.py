"""Key values never show in the text form of the configuration objects (SPEC §4.5).

Anything may end up formatted into a log line or an exception message; the session-wide guard in
tests/support/log_guard.py checks the records actually emitted, this checks the objects themselves.
"""

from __future__ import annotations

from pathlib import Path

from oai_gateway.config.loader import Config
from tests.conftest import CEREBRAS_KEY, CUSTOM_KEY, GATEWAY_KEY
from tests.support.gateway import make_config

FILE_KEY = "gsk-reliability-file-secret-31337"
SECRETS = (GATEWAY_KEY, CUSTOM_KEY, CEREBRAS_KEY, FILE_KEY)


def full_config(tmp_path: Path) -> Config:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        '[providers.groq]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'api_key_env = "GROQ_RELIABILITY_KEY"\n',
        encoding="utf-8",
    )
    return make_config(
        env={"GROQ_RELIABILITY_KEY": FILE_KEY},
        providers_file=str(providers),
        allowed_api_keys=f"{GATEWAY_KEY},second-gateway-key-000",
        custom_base_url="http://127.0.0.1:9/v1",
        custom_api_key=CUSTOM_KEY,
        cerebras_api_key=CEREBRAS_KEY,
    )


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret[:4]}… shown in {text[:200]!r}"


def test_config_objects_never_show_a_key(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    # The keys really are configured, so a clean text form means they were hidden.
    assert set(SECRETS) <= set(config.secrets())
    assert_clean(repr(config))
    assert_clean(str(config))
    assert_clean(repr(config.settings))
    assert_clean(str(config.settings))
    assert_clean(config.settings.model_dump_json())
    assert_clean(repr(config.settings.model_dump()))
    for spec in config.providers:
        assert_clean(repr(spec))
        assert_clean(str(spec))
    assert {p.name for p in config.providers} >= {"custom", "cerebras", "groq"}
