"""The e2e tier: the real gateway in front of a real llama.cpp `llama-server` (SPEC §1 `custom`).

Before any e2e test runs, `scripts/setup_llm.py` makes sure the server and the model are in the
user's cache directory (seconds when they are; one ~5-minute compile on a fresh machine, done
outside every test's timeout and with its progress on the terminal). The tier skips, loudly,
only when this machine cannot build the server (no C/C++ compiler), and never when `CI=true`:
there that is a failure.

One llama-server per session, protected by an upstream key, sits behind one gateway twice: as
the built-in `custom` provider and as the named provider `local` from a providers file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.ci import running_in_ci
from tests.support.gateway import GatewayServer, make_config

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import llama_server  # noqa: E402
import setup_llm  # noqa: E402

GATEWAY_KEY = "gw-e2e-key-0123456789"
UPSTREAM_KEY = "sk-llama-e2e-secret-42"
LOCAL_KEY_ENV = "LOCAL_LLM_KEY"
MODEL = setup_llm.MODEL_ALIAS
PROVIDERS = ("custom", "local")
# A cold compile is minutes; the bound only stops a wedged build from hanging the run forever.
SETUP_TIMEOUT_S = 45 * 60.0
LLAMA_READY_TIMEOUT_S = 40.0

_setup: setup_llm.State | None = None
_setup_problem: tuple[bool, str] | None = None  # (may skip, reason)


def _run_setup(config: pytest.Config) -> None:
    global _setup, _setup_problem  # noqa: PLW0603 -- collection hooks have nowhere else to keep it
    state = setup_llm.load_state()
    if state is not None:
        _setup = state
        return
    capture: Any = config.pluginmanager.getplugin("capturemanager")
    command = [sys.executable, str(SCRIPTS / "setup_llm.py"), "--json"]
    print("\ne2e: llama-server is not set up yet: running scripts/setup_llm.py", file=sys.stderr)
    with capture.global_and_fixture_disabled():
        try:
            # stderr is the terminal, so the build's progress shows while it runs.
            done = subprocess.run(
                command, stdout=subprocess.PIPE, text=True, timeout=SETUP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            _setup_problem = (False, f"scripts/setup_llm.py took over {SETUP_TIMEOUT_S:.0f}s")
            return
    if done.returncode == 0:
        _setup = json.loads(done.stdout)
        return
    try:
        detail = str(json.loads(done.stdout)["error"])
    except (ValueError, KeyError, TypeError):
        detail = "see its output above"
    _setup_problem = (
        done.returncode == setup_llm.EXIT_CANNOT_BUILD,
        f"scripts/setup_llm.py failed (exit {done.returncode}): {detail}",
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Set up before the first e2e test, so no test's timeout has to cover a compile."""
    if any(item.get_closest_marker("e2e") for item in session.items):
        _run_setup(session.config)


def _state() -> setup_llm.State:
    if _setup is not None:
        return _setup
    may_skip, reason = _setup_problem or (False, "the e2e setup hook did not run")
    if may_skip and not running_in_ci():
        pytest.skip(f"E2E TIER SKIPPED — no real LLM server on this machine: {reason}")
    pytest.fail(f"e2e tier cannot run: {reason}" + (" (CI=true: not skipped)" if may_skip else ""))


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[llama_server.LlamaServer]:
    """llama-server on a free loopback port, with /slots and /metrics to observe it."""
    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    extra = ("--api-key", UPSTREAM_KEY, "--slots", "--metrics")
    server = llama_server.LlamaServer(_state(), log, extra_args=extra)
    # Inside the first test's 60 s timeout, so that a slow start fails with the server's log.
    server.start(timeout_s=LLAMA_READY_TIMEOUT_S)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def providers_file(
    tmp_path_factory: pytest.TempPathFactory, llama: llama_server.LlamaServer
) -> Path:
    path = tmp_path_factory.mktemp("providers") / "providers.toml"
    path.write_text(
        "[providers.local]\n"
        'kind = "openai"\n'
        f'base_url = "{llama.base_url}"\n'
        f'api_key_env = "{LOCAL_KEY_ENV}"\n'
        f'models = ["{MODEL}"]\n'
        "[providers.wrongkey]\n"
        'kind = "openai"\n'
        f'base_url = "{llama.base_url}"\n'
        'api_key_env = "WRONG_LLM_KEY"\n'
        # The same server's chat endpoint behind the Responses API (SPEC §9 translate mode).
        "[providers.translated]\n"
        'kind = "openai"\n'
        f'base_url = "{llama.base_url}"\n'
        f'api_key_env = "{LOCAL_KEY_ENV}"\n'
        'responses = "translate"\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="session")
def llm_gateway(llama: llama_server.LlamaServer, providers_file: Path) -> Iterator[GatewayServer]:
    config = make_config(
        env={LOCAL_KEY_ENV: UPSTREAM_KEY, "WRONG_LLM_KEY": "sk-not-the-key"},
        providers_file=str(providers_file),
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=llama.base_url,
        custom_api_key=UPSTREAM_KEY,
        request_timeout_s=30,
    )
    with GatewayServer(config) as server:
        yield server


@pytest.fixture(params=PROVIDERS)
def llm_provider(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def sdk_for(gateway: GatewayServer, provider: str) -> openai.OpenAI:
    # No SDK retries: a test must see the first answer, not the third.
    return openai.OpenAI(
        base_url=f"{gateway.url}/{provider}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=30
    )


@pytest.fixture
def sdk(llm_gateway: GatewayServer, llm_provider: str) -> Iterator[openai.OpenAI]:
    with sdk_for(llm_gateway, llm_provider) as client:
        yield client


def llama_get(llama: llama_server.LlamaServer, path: str) -> Any:
    """A JSON GET straight to llama-server (its own endpoints, such as /slots)."""
    request = urllib.request.Request(
        llama.url + path, headers={"authorization": f"Bearer {UPSTREAM_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())
