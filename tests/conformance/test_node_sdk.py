"""The official `openai` Node SDK as the gateway's client: runs `node --test tests/node/`
against the session gateway (tests/node/ has the pinned SDK; `make setup` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import GATEWAY_KEY
from tests.support.fake_upstreams import OpenAICompatUpstream
from tests.support.gateway import GatewayServer

NODE_DIR = Path(__file__).parents[1] / "node"
NODE_TIMEOUT_S = 45


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        message = "node is not installed: the Node SDK conformance tests in tests/node/ cannot run"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(f"{message} (install Node.js >= 20 to run them; CI fails here)")
    return node


def test_node_sdk_against_the_gateway(
    gateway: GatewayServer, custom_upstream: OpenAICompatUpstream
) -> None:
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
    done = subprocess.run(
        [node, "--test", str(NODE_DIR)],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    output = f"--- node stdout ---\n{done.stdout}\n--- node stderr ---\n{done.stderr}"
    assert done.returncode == 0, output
    assert "# fail 0" in done.stdout, output
    # The SDK's calls really went through the gateway to the upstream.
    paths = {r.path for r in custom_upstream.requests}
    assert {"/v1/models", "/v1/chat/completions", "/v1/embeddings"} <= paths, paths
    streamed = [
        r
        for r in custom_upstream.requests
        if r.path == "/v1/chat/completions" and r.json.get("stream")
    ]
    assert len(streamed) == 2
