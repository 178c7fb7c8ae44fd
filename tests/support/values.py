"""The keys, models and prompt the suite's gateways and fake upstreams share."""

from __future__ import annotations

from typing import Any

GATEWAY_KEY = "gw-test-key-0123456789"
CUSTOM_KEY = "sk-upstream-custom-secret-42"
CEREBRAS_KEY = "csk-upstream-cerebras-secret-42"
PROVIDERS = ("custom", "ollama", "cerebras")
CHAT_MODEL = {"custom": "gpt-test", "ollama": "llama3.2:1b", "cerebras": "gpt-oss-120b"}
PROMPT = "hello brave new world"
CHAT_PATH = "/{}/v1/chat/completions"


def chat_body(provider: str, **extra: Any) -> dict[str, Any]:
    """A chat request for `provider`'s model carrying PROMPT, plus `extra` fields."""
    body: dict[str, Any] = {
        "model": CHAT_MODEL[provider],
        "messages": [{"role": "user", "content": PROMPT}],
    }
    body.update(extra)
    return body
