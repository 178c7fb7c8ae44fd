"""The official `openai` Node SDK as the gateway's client: runs `node --test tests/node/`
against the session gateway (tests/node/ has the pinned SDK; `make setup` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conftest import GATEWAY_KEY
from tests.support.ci import running_in_ci
from tests.support.fake_upstreams import CerebrasUpstream, OpenAICompatUpstream
from tests.support.gateway import GatewayServer

NODE_DIR = Path(__file__).parents[1] / "node"
NODE_TESTS = NODE_DIR / "gateway.test.mjs"
AI_SDK_TESTS = NODE_DIR / "ai-sdk.test.mjs"
NODE_TIMEOUT_S = 45
OLDEST_NODE = 20  # tests/node/package.json `engines`; `--test-reporter` exists from here on


def _missing(message: str) -> NoReturn:
    if running_in_ci():
        pytest.fail(message)
    pytest.skip(f"{message} (CI fails here)")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        _missing(f"node is not installed: install Node.js >= {OLDEST_NODE} to run tests/node/")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    if int(version.strip().lstrip("v").split(".")[0]) < OLDEST_NODE:
        _missing(f"node {version.strip()} is older than {OLDEST_NODE}: tests/node/ cannot run")
    return node


def tap_counts(tap: str) -> dict[str, int]:
    """The `# tests N`, `# pass N`, `# fail N`... summary lines of a TAP report."""
    found = re.findall(r"^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$", tap, re.M)
    return {name: int(count) for name, count in found}


def test_tap_counts_reads_the_summary() -> None:
    tap = "TAP version 13\nok 1 - a\n1..2\n# tests 2\n# pass 1\n# fail 1\n# skipped 0\n"
    assert tap_counts(tap) == {"tests": 2, "pass": 1, "fail": 1, "skipped": 0}


def run_node_tests(
    tests: Path, expected: int, gateway: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    """Runs one tests/node file against the gateway; all `expected` tests in it must pass."""
    node = _node()
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail(
            "the Node SDK is not installed: run `make setup` or `npm ci --prefix tests/node`"
        )
    env = {
        **os.environ,
        "OAI_GATEWAY_URL": gateway.url,
        "OAI_GATEWAY_KEY": GATEWAY_KEY,
        "OAI_GATEWAY_PROVIDER": "custom",
        "NO_COLOR": "1",
    }
    # The file, not the directory: from Node 21 on, `--test` arguments are file patterns. The
    # reporter is named because the default one depends on the version and on a terminal.
    custom_upstream.responses.deviant = True  # its /v1/responses answers as llama.cpp's does
    try:
        done = subprocess.run(
            [node, "--test", "--test-reporter=tap", tests.name],
            cwd=NODE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_S,
            check=False,
        )
    finally:
        custom_upstream.responses.deviant = False
    output = f"--- node stdout ---\n{done.stdout}\n--- node stderr ---\n{done.stderr}"
    assert done.returncode == 0, output
    counts = tap_counts(done.stdout)
    assert counts.get("tests") == counts.get("pass") == expected, (counts, output)
    assert counts.get("fail") == 0, output


def test_node_sdk_against_the_gateway(
    gateway: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
    written = len(re.findall(r"^test\(", NODE_TESTS.read_text(), re.M))
    run_node_tests(NODE_TESTS, written, gateway, custom_upstream)
    # The SDK's calls really went through the gateway to the upstream.
    paths = {r.path for r in custom_upstream.requests}
    assert {"/v1/models", "/v1/chat/completions", "/v1/embeddings", "/v1/responses"} <= paths
    streamed = [
        r
        for r in custom_upstream.requests
        if r.path == "/v1/chat/completions" and r.json.get("stream")
    ]
    assert len(streamed) == 2


def test_ai_sdk_against_the_gateway(
    gateway: GatewayServer,
    custom_upstream: OpenAICompatUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> None:
    """The AI SDK's default `openai(model)`: generateText and streamText, native (through the
    llama.cpp-shaped upstream, where it used to fail with AI_TypeValidationError) and
    translated."""
    if not (NODE_DIR / "node_modules" / "@ai-sdk" / "openai").is_dir():
        pytest.fail("the AI SDK is not installed: run `make setup` or `npm ci --prefix tests/node`")
    run_node_tests(AI_SDK_TESTS, 4, gateway, custom_upstream)  # 2 calls x 2 modes
    for upstream, path in [
        (custom_upstream, "/v1/responses"),
        (cerebras_upstream, "/v1/chat/completions"),
    ]:
        assert [r.path for r in upstream.requests] == [path, path]
        assert [bool(r.json.get("stream")) for r in upstream.requests] == [False, True]
