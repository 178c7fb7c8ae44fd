"""Errors, readiness and client disconnects against a real llama-server (SPEC §4.2a, §5, §7)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import httpx
import openai
import pytest
from llama_server import LlamaServer
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import GATEWAY_KEY, MODEL, UPSTREAM_KEY, llama_get, sdk_for
from tests.support.gateway import GatewayServer

pytestmark = pytest.mark.e2e

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


def _wait_for(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


def _tokens_predicted(llama: LlamaServer) -> int:
    """llama-server's count of tokens generated so far (its Prometheus /metrics)."""
    request = urllib.request.Request(
        llama.url + "/metrics", headers={"authorization": f"Bearer {UPSTREAM_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    [line] = [x for x in text.splitlines() if x.startswith("llamacpp:tokens_predicted_total ")]
    return int(float(line.split()[1]))


def _busy_slots(llama: LlamaServer) -> int:
    return sum(1 for slot in llama_get(llama, "/slots") if slot["is_processing"])


def test_out_of_range_max_tokens_is_bad_request(sdk: openai.OpenAI, llm_provider: str) -> None:
    # The gateway does not judge max_tokens; llama-server answers 400 with `code: 400` (a number,
    # where OpenAI has a string or null) and `Connection: close`.
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=-5)
    error = caught.value
    assert error.status_code == 400
    assert (error.type, error.code, error.param) == ("invalid_request_error", None, None)
    assert f"'{llm_provider}'" in error.message
    assert "Field 'max_tokens': Value must be between -1" in error.message
    # The upstream closed that connection: the next request must not trip over it.
    after = sdk.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=1)
    assert after.choices[0].finish_reason in ("length", "stop")


def test_context_overflow_keeps_upstream_error_type(sdk: openai.OpenAI) -> None:
    long_prompt: list[ChatCompletionMessageParam] = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=long_prompt, max_tokens=1)
    error = caught.value
    # OpenAI says invalid_request_error/context_length_exceeded; llama-server has its own type,
    # which the gateway keeps (§5: an OpenAI-shaped upstream error keeps its type).
    assert (error.type, error.code) == ("exceed_context_size_error", None)
    assert "exceeds the available context size" in error.message
    assert isinstance(error.body, dict)
    assert set(error.body) == {"message", "type", "param", "code"}  # n_ctx etc. dropped


def test_wrong_upstream_key_is_a_gateway_error(llm_gateway: GatewayServer) -> None:
    with sdk_for(llm_gateway, "wrongkey") as sdk:
        with pytest.raises(openai.InternalServerError) as chat:
            sdk.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=1)
        with pytest.raises(openai.InternalServerError) as models:
            sdk.models.list()
    for caught in (chat, models):
        error = caught.value
        assert error.status_code == 502
        assert (error.type, error.code) == ("api_error", "upstream_auth_failed")
        assert "WRONG_LLM_KEY" in error.message
        assert "sk-not-the-key" not in error.message


def test_readiness_reflects_the_real_server(llm_gateway: GatewayServer) -> None:
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    response = httpx.get(f"{llm_gateway.url}/readyz", headers=headers, timeout=10)
    assert response.status_code == 200
    providers = response.json()["providers"]
    assert providers["custom"] == {"ready": True, "detail": None}
    assert providers["local"] == {"ready": True, "detail": None}
    assert providers["wrongkey"]["ready"] is False
    assert "WRONG_LLM_KEY" in providers["wrongkey"]["detail"]


def test_gateway_key_is_not_sent_upstream(llama: LlamaServer, llm_gateway: GatewayServer) -> None:
    """llama-server takes UPSTREAM_KEY only: it refuses the client's key, so the gateway's call
    can only succeed with the key the gateway holds for it."""
    client_key = {"authorization": f"Bearer {GATEWAY_KEY}"}
    refused = httpx.get(f"{llama.base_url}/models", headers=client_key, timeout=5)
    assert refused.status_code == 401
    through = httpx.get(f"{llm_gateway.url}/custom/v1/models", headers=client_key, timeout=10)
    assert through.status_code == 200, through.text
    assert [m["id"] for m in through.json()["data"]] == [MODEL]
    chat = httpx.post(
        f"{llm_gateway.url}/custom/v1/chat/completions",
        headers=client_key,
        json={"model": MODEL, "messages": CHAT, "max_tokens": 1},
        timeout=30,
    )
    assert chat.status_code == 200, chat.text


def test_stream_disconnect_frees_the_slot(sdk: openai.OpenAI, llama: LlamaServer) -> None:
    assert _wait_for(lambda: _busy_slots(llama) == 0, 5.0), "a slot is busy before the test"
    # ignore_eos makes the generation run to exactly 200 tokens unless it is cancelled: fewer
    # tokens counted once the slot is free mean it was stopped, however fast the machine is.
    before = _tokens_predicted(llama)
    stream = sdk.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=200, stream=True, extra_body={"ignore_eos": True}
    )
    chunks = iter(stream)
    next(chunks)
    next(chunks)
    assert _busy_slots(llama) == 1
    stream.close()
    assert _wait_for(lambda: _busy_slots(llama) == 0, 30.0), "the slot never became free"
    generated = _tokens_predicted(llama) - before
    assert 2 <= generated < 200, f"{generated} tokens: the generation was not cut short"
