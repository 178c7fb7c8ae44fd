"""STORE_URL, ADMIN_API_KEY, STORE_FAILURE_MODE, METRICS_PER_KEY (SPEC §3.1): invalid values stop
startup with a message naming the variable, and never echo a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from oai_gateway.cli import main
from oai_gateway.config.loader import Config
from oai_gateway.config.settings import ConfigError, load_settings
from oai_gateway.keys.store import open_store, sqlite_path
from oai_gateway.keys.store_memory import MemoryStore
from oai_gateway.keys.store_redis import RedisStore
from oai_gateway.keys.store_sqlite import SQLiteStore

ADMIN_KEY = "adm-" + "k" * 40
REDIS_PASSWORD_SECRET = "redis-pw-not-for-logs-123"


@pytest.fixture(autouse=True)
def _no_machine_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("STORE_URL", "ADMIN_API_KEY", "STORE_FAILURE_MODE", "METRICS_PER_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here


def problems(**values: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(values)
    return caught.value.problems


def test_the_defaults_mean_no_virtual_keys() -> None:
    settings = load_settings()
    assert (settings.store_url, settings.admin_api_key) == (None, None)
    assert (settings.store_failure_mode, settings.metrics_per_key) == ("closed", False)


@pytest.mark.parametrize(
    "url",
    ["memory://", "sqlite:///./rel.db", "redis://127.0.0.1:6379/0", "rediss://:pw@cache:6380/2"],
)
def test_each_documented_store_url_form_is_accepted(url: str) -> None:
    assert load_settings({"store_url": url}).store_url == url


def test_a_sqlite_url_is_absolute_unless_it_starts_with_dot(tmp_path: Path) -> None:
    assert sqlite_path(f"sqlite:///{tmp_path}/gw.db") == tmp_path / "gw.db"
    assert sqlite_path("sqlite:///./gw.db") == Path("./gw.db")
    assert load_settings({"store_url": f"sqlite:///{tmp_path}/gw.db"}).store_url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgres://db/x", "must be empty, memory://"),
        ("sqlite:///nowhere-at-all/sub/gw.db", "does not exist"),
        ("sqlite:///tmp/", "must name a database file"),
        ("redis://", "needs a host"),
        ("redis://cache:70000/0", "1-65535"),
        ("redis://cache:6379/zero", "must be a number"),
    ],
)
def test_bad_store_urls_are_startup_errors_naming_the_variable(url: str, says: str) -> None:
    (problem,) = problems(store_url=url)
    assert problem.startswith("STORE_URL: ")
    assert says in problem


def test_a_store_url_password_never_reaches_the_error_or_the_logs() -> None:
    (problem,) = problems(store_url=f"redis://:{REDIS_PASSWORD_SECRET}@cache:99999/0")
    assert REDIS_PASSWORD_SECRET not in problem
    settings = load_settings({"store_url": f"redis://:{REDIS_PASSWORD_SECRET}@cache:6379/0"})
    assert REDIS_PASSWORD_SECRET in Config(settings, ()).secrets()


def test_the_admin_key_is_long_secret_and_never_a_data_plane_key() -> None:
    (short,) = problems(admin_api_key="x" * 31)
    assert short.startswith("ADMIN_API_KEY: ")
    assert "32" in short
    assert "x" * 31 not in short
    (reused,) = problems(admin_api_key=ADMIN_KEY, allowed_api_keys=f"other-key,{ADMIN_KEY}")
    assert "ADMIN_API_KEY" in reused
    assert "ALLOWED_API_KEYS" in reused
    assert ADMIN_KEY not in reused
    settings = load_settings({"admin_api_key": ADMIN_KEY})
    assert ADMIN_KEY in Config(settings, ()).secrets()


@pytest.mark.parametrize(("raw", "mode"), [("closed", "closed"), ("OPEN", "open")])
def test_store_failure_mode_closed_or_open(raw: str, mode: str) -> None:
    assert load_settings({"store_failure_mode": raw}).store_failure_mode == mode


def test_other_failure_modes_and_flags_are_rejected() -> None:
    assert problems(store_failure_mode="sometimes")[0].startswith("STORE_FAILURE_MODE: ")
    assert problems(metrics_per_key="perhaps")[0].startswith("METRICS_PER_KEY: ")


def test_a_memory_store_refuses_several_workers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STORE_URL", "memory://")
    assert main(["serve", "--workers", "2"]) == 2
    error = capsys.readouterr().err
    assert "STORE_URL" in error
    assert "--workers" in error


def test_each_url_opens_its_backend(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store(f"sqlite:///{tmp_path}/gw.db"), SQLiteStore)
    assert isinstance(open_store("redis://127.0.0.1:1/0"), RedisStore)
