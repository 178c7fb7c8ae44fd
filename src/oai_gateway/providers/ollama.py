"""Ollama (kind `ollama`): its OpenAI layer at /v1, corrected where it differs from OpenAI.

- the model list comes from the native /api/tags, with real `created` times and owners;
- `max_completion_tokens` (ignored by Ollama) becomes `max_tokens`; `developer` becomes `system`;
- ids are regenerated (Ollama's are `chatcmpl-<0..998>`, not unique);
- several prompts in one legacy completion become one upstream call each, merged back;
- embeddings are always fetched as floats and encoded here, since older servers lack base64;
- token-id inputs, which Ollama cannot take, get a clear 400 instead of its opaque one;
- fields its OpenAI layer silently ignores (reference/ollama.md §4.1, §4.3) are listed below and
  answered with a 400 (or dropped when configured) rather than producing a quietly wrong answer.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from oai_gateway.config.settings import KindConfig, ProviderSpec
from oai_gateway.providers.base import Json, Operation
from oai_gateway.providers.dialect import Dialect
from oai_gateway.providers.quirks import Fate, FieldRule, Quirks
from oai_gateway.providers.rewrites import (
    developer_as_system,
    max_completion_tokens_as_max_tokens,
    reject_token_ids,
)

_IGNORED = FieldRule(Fate.IGNORED)

CHAT_RULES: dict[str, FieldRule] = {
    "n": FieldRule(Fate.IGNORED, defaults=(1,), consequence="it always returns one choice"),
    "tool_choice": FieldRule(
        Fate.IGNORED, defaults=("auto",), consequence="the model alone decides on tool calls"
    ),
    "parallel_tool_calls": FieldRule(Fate.IGNORED, defaults=(True,)),
    "logit_bias": FieldRule(Fate.IGNORED, defaults=({},)),
    "user": _IGNORED,
    "metadata": FieldRule(Fate.IGNORED, defaults=({},)),
    "store": FieldRule(Fate.IGNORED, defaults=(False,)),
    "service_tier": FieldRule(Fate.IGNORED, defaults=("auto", "default")),
    "prediction": _IGNORED,
    "modalities": FieldRule(Fate.IGNORED, defaults=(["text"],)),
    "audio": _IGNORED,
    "web_search_options": _IGNORED,
    "functions": _IGNORED,
    "function_call": FieldRule(Fate.IGNORED, defaults=("auto",)),
    "prompt_cache_key": _IGNORED,
    "safety_identifier": _IGNORED,
    "verbosity": FieldRule(Fate.IGNORED, defaults=("medium",)),
}

COMPLETION_RULES: dict[str, FieldRule] = {
    "n": FieldRule(Fate.IGNORED, defaults=(1,), consequence="it always returns one choice"),
    "best_of": FieldRule(Fate.IGNORED, defaults=(1,)),
    "echo": FieldRule(Fate.IGNORED, defaults=(False,), consequence="the prompt is not echoed"),
    "logit_bias": FieldRule(Fate.IGNORED, defaults=({},)),
    "user": _IGNORED,
}

_FRACTION = re.compile(r"(\.\d{6})\d+")


def _timestamp(value: Any) -> int:
    """Ollama's RFC 3339 times carry nanoseconds, which `fromisoformat` does not take."""
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.fromisoformat(_FRACTION.sub(r"\1", value)).timestamp())
    except ValueError:
        return 0


def _model(entry: Any) -> Json | None:
    if not isinstance(entry, dict):
        return None
    name = entry.get("model") or entry.get("name")
    if not isinstance(name, str) or not name:
        return None
    owner, _, _ = name.rpartition("/")
    return {
        "id": name,
        "object": "model",
        "created": _timestamp(entry.get("modified_at")),
        "owned_by": owner or "library",
    }


def _models(answer: Json, owner: str) -> list[Json]:
    """The native /api/tags list; each model's owner is its namespace."""
    entries = answer.get("models") or []
    if not isinstance(entries, list):
        entries = []
    return [m for entry in entries if (m := _model(entry)) is not None]


def _aliases(model_id: str) -> tuple[str, ...]:
    # `llama3.2` and `llama3.2:latest` name the same model in Ollama.
    return (model_id,) if ":" in model_id else (model_id, model_id + ":latest")


def _chat(body: Json, spec: ProviderSpec) -> Json:
    return max_completion_tokens_as_max_tokens(developer_as_system(body, spec), spec)


def _completion(body: Json, spec: ProviderSpec) -> Json:
    reject_token_ids(body["prompt"], "prompt", spec, "Ollama")
    return body


def _embeddings(body: Json, spec: ProviderSpec) -> Json:
    # Always floats from the upstream, encoded here as the client asked.
    reject_token_ids(body.get("input"), "input", spec, "Ollama")
    fixed = dict(body)
    fixed.pop("encoding_format", None)
    return fixed


DIALECT = Dialect(
    kind_label="Ollama",
    api_prefix="/v1",
    quirks=Quirks({Operation.CHAT: CHAT_RULES, Operation.COMPLETIONS: COMPLETION_RULES}),
    rewrites={
        Operation.CHAT: _chat,
        Operation.COMPLETIONS: _completion,
        Operation.EMBEDDINGS: _embeddings,
    },
    models_path="/api/tags",
    parse_models=_models,
    model_aliases=_aliases,
    ready_path="/api/version",
    config=KindConfig(default_base_url="http://127.0.0.1:11434", strip_v1=True),
    regenerate_ids=True,
    one_prompt_per_call=True,
)
