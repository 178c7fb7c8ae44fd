"""The secret guard watches for every key the suite configures, wherever it is defined."""

from __future__ import annotations

import sys
from types import ModuleType

import pytest

import tests.config.test_secrets_in_text
from tests.support.log_guard import configured_secrets


def test_keys_of_every_loaded_test_module_are_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    # As the e2e tier's conftest is when that tier runs: a module no list names.
    e2e = ModuleType("tests.e2e.conftest")
    e2e.GATEWAY_KEY = "gw-e2e-like-key-0123456789"  # type: ignore[attr-defined]
    e2e.UPSTREAM_KEY = "sk-e2e-like-upstream-42"  # type: ignore[attr-defined]
    e2e.LOCAL_KEY_ENV = "LOCAL_LLM_KEY"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, e2e.__name__, e2e)
    watched = configured_secrets()
    assert tests.config.test_secrets_in_text.FILE_KEY in watched
    assert {"gw-e2e-like-key-0123456789", "sk-e2e-like-upstream-42"} <= watched
    assert "LOCAL_LLM_KEY" not in watched  # a variable's name, not a key
