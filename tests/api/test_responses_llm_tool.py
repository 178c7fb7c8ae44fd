"""Simon Willison's `llm` with an OpenAI-compatible model configured for the Responses API
(`responses: true` in extra-openai-models.yaml), streaming and not, through the gateway in both
modes. Its own temporary LLM_USER_PATH, so no user configuration is read or written. The
library is driven in-process (the command line costs seconds of start-up per call); the model,
its configuration file and its HTTP requests are the same ones `llm -m gw-custom` uses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llm
import pytest

from tests.conftest import CHAT_MODEL, GATEWAY_KEY
from tests.support.fake_upstreams import CerebrasUpstream, OpenAICompatUpstream
from tests.support.gateway import GatewayServer
from tests.support.values import PROMPT

MODES = ["custom", "cerebras"]  # native (llama.cpp-shaped upstream) and translate


@pytest.fixture
def upstreams(
    custom_upstream: OpenAICompatUpstream, cerebras_upstream: CerebrasUpstream
) -> Iterator[dict[str, OpenAICompatUpstream]]:
    custom_upstream.responses.deviant = True  # its /v1/responses answers as llama.cpp's does
    yield {"custom": custom_upstream, "cerebras": cerebras_upstream}
    custom_upstream.responses.deviant = False


@pytest.fixture
def user_dir(gateway: GatewayServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One model per provider, each named `gw-<provider>`, the way llm's docs configure them."""
    lines = []
    for provider in MODES:
        lines += [
            f"- model_id: gw-{provider}",
            f"  model_name: {CHAT_MODEL[provider]}",
            f"  api_base: {gateway.url}/{provider}/v1",
            "  api_key_name: gateway",
            "  responses: true",
        ]
    (tmp_path / "extra-openai-models.yaml").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
@pytest.mark.parametrize("provider", MODES)
def test_llm_prompts_through_the_responses_route(
    provider: str, stream: bool, upstreams: dict[str, OpenAICompatUpstream], user_dir: Path
) -> None:
    model = llm.get_model(f"gw-{provider}")
    assert type(model).__name__ == "Responses"  # `responses: true` chose llm's Responses client
    response = model.prompt(PROMPT, key=GATEWAY_KEY, stream=stream)
    pieces = list(response)
    assert "".join(pieces) == PROMPT  # the fake model echoes the prompt
    assert (len(pieces) > 1) is stream  # a stream arrives in pieces, an answer in one
    usage = response.usage()
    assert usage.output is not None
    assert usage.output > 0
    upstream = upstreams[provider]
    path = "/v1/responses" if provider == "custom" else "/v1/chat/completions"
    assert [r.path for r in upstream.requests] == [path]
    assert bool(upstream.requests[0].json.get("stream")) is stream
