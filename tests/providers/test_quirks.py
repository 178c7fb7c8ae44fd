"""Provider quirks as data: OpenAI fields an upstream kind would reject or silently ignore get a
clear 400 before any upstream call, or are dropped when the provider is configured with
`drop_unsupported_params = true`. Defaults are never errors; the `openai` kind forwards all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oai_gateway.providers import cerebras, ollama
from oai_gateway.providers.base import Operation
from oai_gateway.providers.quirks import Fate, FieldRule, apply_quirks
from tests.conftest import CEREBRAS_KEY, CHAT_MODEL, GATEWAY_KEY
from tests.support.errors import check_error
from tests.support.fake_upstreams import CerebrasUpstream, OllamaUpstream, OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config

Json = dict[str, Any]
MESSAGES = [{"role": "user", "content": "hello there"}]
CHAT = "chat/completions"
COMPLETIONS = "completions"
QUIRKS_LOGGER = "oai_gateway.providers.quirks"


def body_for(provider: str, endpoint: str, **extra: Any) -> Json:
    body: Json = {"model": CHAT_MODEL[provider], **extra}
    if endpoint == CHAT:
        body.setdefault("messages", MESSAGES)
    else:
        body.setdefault("prompt", "hello there")
    return body


def upstream_of(
    provider: str, ollama: OllamaUpstream, cerebras: CerebrasUpstream, custom: OpenAICompatUpstream
) -> OpenAICompatUpstream:
    return {"ollama": ollama, "cerebras": cerebras, "custom": custom}[provider]


def assert_unsupported(response: httpx.Response, param: str, field: str, provider: str) -> None:
    check_error(
        response,
        400,
        "unsupported_parameter",
        type_="invalid_request_error",
        param=param,
        contains=(f"'{field}'", f"'{provider}'", "drop_unsupported_params"),
    )


# (provider, endpoint, field, value): fields the upstream silently ignores or rejects.
UNSUPPORTED = [
    ("ollama", CHAT, "n", 2),
    ("ollama", CHAT, "tool_choice", "required"),
    ("ollama", CHAT, "logit_bias", {"50256": -100}),
    ("ollama", CHAT, "user", "user-1"),
    ("ollama", CHAT, "parallel_tool_calls", False),
    ("ollama", CHAT, "store", True),
    ("ollama", CHAT, "metadata", {"k": "v"}),
    ("ollama", CHAT, "service_tier", "priority"),
    ("ollama", CHAT, "verbosity", "high"),
    ("ollama", CHAT, "functions", [{"name": "f", "parameters": {}}]),
    ("ollama", CHAT, "prediction", {"type": "content", "content": "x"}),
    ("ollama", COMPLETIONS, "n", 3),
    ("ollama", COMPLETIONS, "best_of", 2),
    ("ollama", COMPLETIONS, "echo", True),
    ("ollama", COMPLETIONS, "logit_bias", {"1": 5}),
    ("ollama", COMPLETIONS, "user", "user-1"),
    ("cerebras", CHAT, "store", True),
    ("cerebras", CHAT, "metadata", {"k": "v"}),
    ("cerebras", CHAT, "prompt_cache_key", "abc"),
    ("cerebras", CHAT, "safety_identifier", "hash-1"),
    ("cerebras", CHAT, "verbosity", "low"),
    ("cerebras", CHAT, "modalities", ["text", "audio"]),
    ("cerebras", CHAT, "functions", [{"name": "f", "parameters": {}}]),
    ("cerebras", COMPLETIONS, "frequency_penalty", 0.5),
    ("cerebras", COMPLETIONS, "presence_penalty", 0.5),
    ("cerebras", COMPLETIONS, "logit_bias", {"1": 5}),
]


def _case_id(case: tuple[str, str, str, Any]) -> str:
    provider, endpoint, field, _ = case
    return f"{provider}-{endpoint.split('/')[0]}-{field}"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("case", UNSUPPORTED, ids=_case_id)
def test_unsupported_field_is_a_clear_400_before_the_upstream(
    client: httpx.Client,
    ollama_upstream: OllamaUpstream,
    *,
    cerebras_upstream: CerebrasUpstream,
    custom_upstream: OpenAICompatUpstream,
    case: tuple[str, str, str, Any],
    stream: bool,
) -> None:
    provider, endpoint, field, value = case
    body = body_for(provider, endpoint, **{field: value}, stream=stream)
    response = client.post(f"/{provider}/v1/{endpoint}", json=body)
    assert_unsupported(response, field, field, provider)
    upstream = upstream_of(provider, ollama_upstream, cerebras_upstream, custom_upstream)
    assert upstream.requests == []


def test_nested_field_names_its_parent_as_param(
    client: httpx.Client, cerebras_upstream: CerebrasUpstream
) -> None:
    body = body_for("cerebras", CHAT, stream=True, stream_options={"include_obfuscation": False})
    response = client.post(f"/cerebras/v1/{CHAT}", json=body)
    assert_unsupported(response, "stream_options", "stream_options.include_obfuscation", "cerebras")
    assert cerebras_upstream.requests == []


def test_multi_prompt_completion_is_judged_before_any_upstream_call(
    client: httpx.Client, ollama_upstream: OllamaUpstream
) -> None:
    body = body_for("ollama", COMPLETIONS, prompt=["one", "two", "three"], echo=True)
    response = client.post(f"/ollama/v1/{COMPLETIONS}", json=body)
    assert_unsupported(response, "echo", "echo", "ollama")
    assert ollama_upstream.requests == []


# Fields at their OpenAI default ask for nothing the upstream lacks.
IGNORED_DEFAULTS = [
    (CHAT, {"n": 1, "tool_choice": "auto", "parallel_tool_calls": True, "user": None}),
    (CHAT, {"store": False, "logit_bias": {}, "service_tier": "auto", "metadata": None}),
    (COMPLETIONS, {"n": 1, "best_of": 1, "echo": False, "logit_bias": None}),
]


@pytest.mark.parametrize(("endpoint", "fields"), IGNORED_DEFAULTS)
def test_ollama_forwards_fields_at_their_default(
    client: httpx.Client, ollama_upstream: OllamaUpstream, endpoint: str, fields: Json
) -> None:
    response = client.post(f"/ollama/v1/{endpoint}", json=body_for("ollama", endpoint, **fields))
    assert response.status_code == 200, response.text
    sent = ollama_upstream.requests[-1].json
    assert {k: sent[k] for k in fields} == fields


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_cerebras_drops_defaults_it_would_reject(
    client: httpx.Client, cerebras_upstream: CerebrasUpstream, stream: bool
) -> None:
    # Cerebras 400s on the mere presence of these, even at their default.
    extra: Json = {"store": False, "metadata": {}, "verbosity": "medium", "stream": stream}
    if stream:
        extra["stream_options"] = {"include_usage": True, "include_obfuscation": True}
    response = client.post(f"/cerebras/v1/{CHAT}", json=body_for("cerebras", CHAT, **extra))
    assert response.status_code == 200, response.text
    assert len(cerebras_upstream.requests) == 1
    sent = cerebras_upstream.requests[0].json
    assert not {"store", "metadata", "verbosity"} & set(sent)
    if stream:
        assert sent["stream_options"] == {"include_usage": True}
        assert '"usage"' in response.text


def test_cerebras_completions_drop_default_penalties(
    client: httpx.Client, cerebras_upstream: CerebrasUpstream
) -> None:
    body = body_for("cerebras", COMPLETIONS, frequency_penalty=0, presence_penalty=0.0)
    response = client.post(f"/cerebras/v1/{COMPLETIONS}", json=body)
    assert response.status_code == 200, response.text
    sent = cerebras_upstream.requests[0].json
    assert "frequency_penalty" not in sent
    assert "presence_penalty" not in sent


def test_custom_openai_kind_forwards_everything(
    client: httpx.Client, custom_upstream: OpenAICompatUpstream
) -> None:
    extra: Json = {"n": 2, "store": True, "user": "u", "logit_bias": {"1": 2}, "verbosity": "low"}
    body = body_for("custom", CHAT, **extra)
    response = client.post(f"/custom/v1/{CHAT}", json=body)
    assert response.status_code == 200, response.text
    assert custom_upstream.requests[0].json == body
    assert len(response.json()["choices"]) == 2


def test_unknown_fields_still_pass_through_to_ollama(
    client: httpx.Client, ollama_upstream: OllamaUpstream
) -> None:
    body = body_for("ollama", CHAT, keep_alive="5m", x_custom={"a": 1})
    response = client.post(f"/ollama/v1/{CHAT}", json=body)
    assert response.status_code == 200, response.text
    assert ollama_upstream.requests[0].json == body


# -- drop_unsupported_params = true -------------------------------------------------------------


@pytest.fixture(scope="module")
def dropping(
    tmp_path_factory: pytest.TempPathFactory,
    ollama_upstream: OllamaUpstream,
    cerebras_upstream: CerebrasUpstream,
) -> Iterator[GatewayServer]:
    text = f"""
[providers.lenient-ollama]
kind = "ollama"
base_url = "{ollama_upstream.base_url}"
drop_unsupported_params = true

[providers.lenient-cerebras]
kind = "cerebras"
base_url = "{cerebras_upstream.base_url}/v1"
api_key_env = "CB_KEY"
drop_unsupported_params = true
"""
    path: Path = tmp_path_factory.mktemp("quirks") / "providers.toml"
    path.write_text(text, encoding="utf-8")
    config = make_config(
        providers_file=str(path),
        env={"CB_KEY": CEREBRAS_KEY},
        allowed_api_keys=GATEWAY_KEY,
        request_timeout_s=5,
    )
    with GatewayServer(config) as server:
        yield server


@pytest.fixture
def lenient(dropping: GatewayServer) -> Iterator[httpx.Client]:
    with dropping.client() as http:
        yield http


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("name", "provider", "endpoint", "extra"),
    [
        ("lenient-ollama", "ollama", CHAT, {"n": 3, "tool_choice": "required", "user": "u"}),
        ("lenient-ollama", "ollama", COMPLETIONS, {"echo": True, "best_of": 2, "n": 2}),
        ("lenient-cerebras", "cerebras", CHAT, {"store": True, "metadata": {"k": "v"}}),
        ("lenient-cerebras", "cerebras", COMPLETIONS, {"logit_bias": {"1": 5}}),
    ],
)
def test_configured_provider_drops_the_field_and_logs_it(
    lenient: httpx.Client,
    ollama_upstream: OllamaUpstream,
    *,
    cerebras_upstream: CerebrasUpstream,
    caplog: pytest.LogCaptureFixture,
    name: str,
    provider: str,
    endpoint: str,
    extra: Json,
    stream: bool,
) -> None:
    body = body_for(provider, endpoint, **extra, stream=stream)
    with caplog.at_level(logging.DEBUG, logger=QUIRKS_LOGGER):
        response = lenient.post(f"/{name}/v1/{endpoint}", json=body)
    assert response.status_code == 200, response.text
    upstream = ollama_upstream if provider == "ollama" else cerebras_upstream
    assert len(upstream.requests) == 1
    sent = upstream.requests[0].json
    assert not set(extra) & set(sent)
    assert sent["model"] == body["model"]
    logged = [r.getMessage() for r in caplog.records if r.name == QUIRKS_LOGGER]
    for field in extra:
        assert any(f"'{field}'" in line and f"'{name}'" in line for line in logged), logged
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == QUIRKS_LOGGER)


def test_configured_provider_keeps_defaults_without_logging(
    lenient: httpx.Client, ollama_upstream: OllamaUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    body = body_for("ollama", CHAT, n=1)
    with caplog.at_level(logging.DEBUG, logger=QUIRKS_LOGGER):
        response = lenient.post(f"/lenient-ollama/v1/{CHAT}", json=body)
    assert response.status_code == 200, response.text
    assert ollama_upstream.requests[0].json["n"] == 1
    assert [r for r in caplog.records if r.name == QUIRKS_LOGGER] == []


# -- the rule machinery (pure logic) ------------------------------------------------------------


def test_apply_quirks_never_mutates_the_callers_body() -> None:
    rules = {"n": FieldRule(Fate.IGNORED, defaults=(1,)), "a.b": FieldRule(Fate.REJECTED)}
    body: Json = {"n": 2, "a": {"b": 1, "c": 2}, "keep": True}
    out = apply_quirks(body, rules, provider="p", kind_label="K", drop_unsupported=True)
    assert out == {"a": {"c": 2}, "keep": True}
    assert body == {"n": 2, "a": {"b": 1, "c": 2}, "keep": True}


def test_a_bool_is_not_the_numeric_default() -> None:
    rule = FieldRule(Fate.IGNORED, defaults=(1, 0.0))
    assert rule.is_default(1)
    assert rule.is_default(0.0)
    assert rule.is_default(None)
    assert not rule.is_default(True)
    assert not rule.is_default(0)


def test_rules_are_data_per_kind() -> None:
    assert set(ollama.DIALECT.quirks.rules(Operation.CHAT)) >= {"n", "tool_choice", "user"}
    assert set(ollama.DIALECT.quirks.rules(Operation.COMPLETIONS)) >= {"best_of", "echo"}
    assert "store" in cerebras.DIALECT.quirks.rules(Operation.CHAT)
    assert ollama.DIALECT.quirks.rules(Operation.MODELS) == {}


# -- what each kind honours is forwarded untouched ------------------------------------------------

HONOURED: dict[str, Json] = {
    "sampling": {"seed": 7, "stop": ["\n\n"], "temperature": 0.5, "top_p": 0.9},
    "logprobs": {"logprobs": True, "top_logprobs": 2},
    "response_format": {"response_format": {"type": "json_object"}},
    "tools": {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    "include_usage": {"stream": True, "stream_options": {"include_usage": True}},
    "max_tokens": {"max_tokens": 5},
}


@pytest.mark.parametrize("feature", sorted(HONOURED))
def test_honoured_chat_fields_are_forwarded_unchanged(
    client: httpx.Client, provider: str, upstream: OpenAICompatUpstream, feature: str
) -> None:
    fields = HONOURED[feature]
    response = client.post(f"/{provider}/v1/{CHAT}", json=body_for(provider, CHAT, **fields))
    assert response.status_code == 200, response.text
    sent = upstream.requests[0].json
    assert {k: sent.get(k) for k in fields} == fields


def test_cerebras_forwards_n_and_token_prompts(
    client: httpx.Client, cerebras_upstream: CerebrasUpstream
) -> None:
    chat = client.post(f"/cerebras/v1/{CHAT}", json=body_for("cerebras", CHAT, n=2))
    assert chat.status_code == 200, chat.text
    assert [c["index"] for c in chat.json()["choices"]] == [0, 1]
    body = body_for("cerebras", COMPLETIONS, prompt=[1, 2, 3], echo=False, best_of=1)
    done = client.post(f"/cerebras/v1/{COMPLETIONS}", json=body)
    assert done.status_code == 200, done.text
    assert cerebras_upstream.requests[0].json["n"] == 2
    assert cerebras_upstream.requests[1].json == body
