"""Cerebras Inference (kind `cerebras`): OpenAI-compatible, with no embeddings and no
`developer` role; its flat error bodies are handled by the shared error mapping."""

from __future__ import annotations

from typing import ClassVar

from oai_gateway.providers.base import Json, Operation
from oai_gateway.providers.openai_compat import OpenAICompatProvider, developer_as_system


class CerebrasProvider(OpenAICompatProvider):
    kind_label: ClassVar[str] = "Cerebras"
    unsupported = frozenset({Operation.EMBEDDINGS})

    def prepare_chat(self, body: Json) -> Json:
        return developer_as_system(body)
