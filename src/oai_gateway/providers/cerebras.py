"""Cerebras Inference (kind `cerebras`): OpenAI-compatible, with no embeddings and no
`developer` role; its flat error bodies are handled by the shared error mapping.

Cerebras validates strictly: an OpenAI field it does not know is a 400 in its own format
(reference/cerebras.md §3), so those fields are listed here and answered by the gateway.
"""

from __future__ import annotations

from oai_gateway.config.settings import KindConfig
from oai_gateway.providers.base import Operation
from oai_gateway.providers.dialect import Dialect
from oai_gateway.providers.quirks import Fate, FieldRule, Quirks
from oai_gateway.providers.rewrites import developer_as_system

_REJECTED = FieldRule(Fate.REJECTED)

CHAT_RULES: dict[str, FieldRule] = {
    "metadata": FieldRule(Fate.REJECTED, defaults=({},)),
    "store": FieldRule(Fate.REJECTED, defaults=(False,)),
    "prompt_cache_key": _REJECTED,
    "safety_identifier": _REJECTED,
    "verbosity": FieldRule(Fate.REJECTED, defaults=("medium",)),
    "modalities": FieldRule(Fate.REJECTED, defaults=(["text"],)),
    "audio": _REJECTED,
    "web_search_options": _REJECTED,
    "functions": _REJECTED,
    "function_call": _REJECTED,
    "stream_options.include_obfuscation": FieldRule(Fate.REJECTED, defaults=(True,)),
}

COMPLETION_RULES: dict[str, FieldRule] = {
    "frequency_penalty": FieldRule(Fate.REJECTED, defaults=(0, 0.0)),
    "presence_penalty": FieldRule(Fate.REJECTED, defaults=(0, 0.0)),
    "logit_bias": FieldRule(Fate.REJECTED, defaults=({},)),
    "stream_options.include_obfuscation": FieldRule(Fate.REJECTED, defaults=(True,)),
}


DIALECT = Dialect(
    kind_label="Cerebras",
    unsupported=frozenset({Operation.EMBEDDINGS}),
    quirks=Quirks({Operation.CHAT: CHAT_RULES, Operation.COMPLETIONS: COMPLETION_RULES}),
    rewrites={Operation.CHAT: developer_as_system},
    # No /v1/responses upstream (SPEC §9): translated to chat.
    config=KindConfig(
        responses="translate", default_base_url="https://api.cerebras.ai/v1", key_required=True
    ),
)
