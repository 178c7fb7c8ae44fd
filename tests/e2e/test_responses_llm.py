"""The Responses API through the gateway to a real llama-server (SPEC §9), and Codex CLI.

`custom` relays llama.cpp's own `/v1/responses` (native mode, through the normaliser: its events
carry no sequence numbers or indices, which the SDK's `responses.stream()` needs);
`translated` serves the same API from the same server's chat endpoint (translate mode).

Codex CLI (pinned in tests/codex, installed by `make codex-deps`) then runs `codex exec` on a
one-line task through the gateway, against a second llama-server started for it: Codex sends
function tools, which llama-server accepts only with a Jinja chat template (`--jinja`), and a
prompt of a few thousand tokens, which needs a larger context than the session server has.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_server  # scripts/, put on sys.path by tests/e2e/conftest.py
import pytest

from tests.e2e.conftest import GATEWAY_KEY, MODEL, UPSTREAM_KEY, _state, sdk_for
from tests.support.gateway import GatewayServer, make_config

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CODEX = ROOT / "tests" / "codex" / "node_modules" / ".bin" / "codex"
TEMPLATE = Path(__file__).with_name("gemma-tools.jinja")
CODEX_TIMEOUT_S = 150.0
CODEX_SERVER_START_S = 40.0
# pytest-timeout's bound covers fixture set-up too: the first Codex case also starts its
# llama-server, so the case may take both bounds (plus the gateway's start) before failing.
CODEX_TEST_TIMEOUT_S = CODEX_TIMEOUT_S + CODEX_SERVER_START_S + 30.0
MODES = ("custom", "translated")


@pytest.mark.parametrize("provider", MODES)
def test_create(llm_gateway: GatewayServer, provider: str) -> None:
    with sdk_for(llm_gateway, provider) as sdk:
        reply = sdk.responses.create(model=MODEL, input="Say hello.", max_output_tokens=4)
    assert reply.object == "response"
    assert reply.id.startswith("resp_")
    assert reply.model == MODEL
    assert reply.usage is not None
    assert reply.usage.input_tokens > 0
    assert 0 < reply.usage.output_tokens <= 4
    [message] = reply.output
    assert message.type == "message"


@pytest.mark.parametrize("provider", MODES)
def test_stream_helper(llm_gateway: GatewayServer, provider: str) -> None:
    with (
        sdk_for(llm_gateway, provider) as sdk,
        sdk.responses.stream(model=MODEL, input="Count to three.", max_output_tokens=5) as stream,
    ):
        events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created"
    # A length cut is `response.incomplete` (translate mode); llama.cpp says `completed`.
    assert events[-1].type in ("response.completed", "response.incomplete")
    final = events[-1].response
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == deltas
    assert final.usage is not None
    assert final.usage.output_tokens > 0


def test_translated_reasoning_items_are_not_sent_as_text(llm_gateway: GatewayServer) -> None:
    history: list[Any] = [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "x"}]},
        {"role": "user", "content": "Say hello."},
    ]
    with sdk_for(llm_gateway, "translated") as sdk:
        reply = sdk.responses.create(model=MODEL, input=history, max_output_tokens=3)
    assert reply.status in ("completed", "incomplete")


# -- Codex CLI -------------------------------------------------------------------------------


class AccessLines(logging.Handler):
    """The gateway's access lines (method, route, status, stream, tokens), as Codex made them."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = ("method", "route", "status", "stream", "prompt_tokens", "completion_tokens")
        self.lines.append({name: getattr(record, name, None) for name in fields})


@pytest.fixture(scope="module")
def codex_llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[llama_server.LlamaServer]:
    """llama-server with a Jinja template (tools) and one 8192-token slot (Codex's prompt)."""
    state = _state()
    args = list(state["server_args"])
    args[args.index("--no-jinja")] = "--jinja"
    at = args.index("--chat-template")
    args[at : at + 2] = ["--chat-template-file", str(TEMPLATE)]
    log = tmp_path_factory.mktemp("codex-llama") / "llama-server.log"
    # The base model must end its answer by itself (finish_reason stop), or translate mode's
    # Response is rightly `incomplete` and Codex exits 1: the template opens with a one-line
    # exchange to imitate, `<end_of_turn>` (token 106) is biased up, and sampling is greedy.
    extra: tuple[str, ...] = ("--api-key", UPSTREAM_KEY, "-c", "8192", "-np", "1", "-n", "64")
    extra += ("-l", "106+18", "--temp", "0")
    server = llama_server.LlamaServer({**state, "server_args": args}, log, extra_args=extra)
    server.start(timeout_s=CODEX_SERVER_START_S)
    try:
        yield server
    finally:
        server.stop()


def codex_config(home: Path, gateway: GatewayServer, provider: str) -> Path:
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    instructions = home / "instructions.md"
    instructions.write_text("You are a helpful assistant. Answer in one short sentence.\n")
    (codex_home / "config.toml").write_text(
        f'model = "{MODEL}"\n'
        'model_provider = "gateway"\n'
        f'model_instructions_file = "{instructions}"\n'
        "[model_providers.gateway]\n"
        'name = "oai-gateway"\n'
        f'base_url = "{gateway.url}/{provider}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "GATEWAY_API_KEY"\n'
        "supports_websockets = false\n",
        encoding="utf-8",
    )
    return codex_home


def codex_gateway_config(llama: llama_server.LlamaServer, tmp_path: Path) -> Any:
    """`custom` relays the server's /v1/responses; `translated` serves Codex from its chat
    endpoint, dropping the built-in tools Codex sends (`web_search`, `namespace`)."""
    providers = tmp_path / "providers.toml"
    providers.write_text(
        "[providers.translated]\n"
        'kind = "openai"\n'
        f'base_url = "{llama.base_url}"\n'
        'api_key_env = "CODEX_LLAMA_KEY"\n'
        'responses = "translate"\n'
        "drop_unsupported_params = true\n",
        encoding="utf-8",
    )
    return make_config(
        env={"CODEX_LLAMA_KEY": UPSTREAM_KEY},
        providers_file=str(providers),
        allowed_api_keys=GATEWAY_KEY,
        custom_base_url=llama.base_url,
        custom_api_key=UPSTREAM_KEY,
        request_timeout_s=120,
    )


@pytest.mark.timeout(CODEX_TEST_TIMEOUT_S)
@pytest.mark.parametrize("provider", MODES)
def test_codex_exec_through_the_gateway(
    codex_llama: llama_server.LlamaServer, tmp_path: Path, provider: str
) -> None:
    if not CODEX.exists():
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("Codex CLI is not installed: run `make codex-deps`")
        pytest.skip("Codex CLI is not installed: run `make codex-deps` (needs npm)")
    config = codex_gateway_config(codex_llama, tmp_path)
    access = AccessLines()
    logger = logging.getLogger("oai_gateway.access")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(access)
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    try:
        with GatewayServer(config) as gateway:
            codex_home = codex_config(home, gateway, provider)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(home),  # Codex writes under ~/.codex even with CODEX_HOME set
                "CODEX_HOME": str(codex_home),
                "GATEWAY_API_KEY": GATEWAY_KEY,
                "NO_COLOR": "1",
            }
            done = subprocess.run(
                [str(CODEX), "exec", "--skip-git-repo-check", "Say hello in one word."],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=CODEX_TIMEOUT_S,
                check=False,
            )
    finally:
        logger.removeHandler(access)
        logger.setLevel(level)
    transcript = "\n".join(map(str, access.lines))
    report = (
        f"codex via {provider}: exit {done.returncode}\n{transcript}\n"
        f"stderr:\n{done.stderr[-3000:]}"
    )
    print(report)
    assert done.returncode == 0, report
    assert done.stdout.strip(), report  # the model's answer, as Codex prints it
    posts = [a for a in access.lines if a["method"] == "POST"]
    assert posts, report
    assert all(a["route"] == "/{provider}/v1/responses" for a in posts), report
    assert all(a["status"] == 200 and a["stream"] for a in posts), report
    assert posts[0]["completion_tokens"], report  # usage from response.completed
