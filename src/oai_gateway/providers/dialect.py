"""What makes one provider kind differ from another, as data and small functions.

A kind's module builds one `Dialect`; `DialectProvider` (providers/provider.py) runs every kind
over the shared `Transport`. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from oai_gateway.config.settings import KindConfig, ProviderSpec
from oai_gateway.providers.base import Json, Operation
from oai_gateway.providers.quirks import NO_QUIRKS, Quirks
from oai_gateway.wire.normalize.chat import CHAT_CHUNKS, chat_completion
from oai_gateway.wire.normalize.models import model_object
from oai_gateway.wire.normalize.stream import ChunkShape
from oai_gateway.wire.normalize.text import TEXT_CHUNKS, text_completion

# A request body rewritten for the upstream (after the quirks were applied); may raise a
# GatewayError for a request the upstream cannot take. The spec names the provider in messages.
Rewrite = Callable[[Json, ProviderSpec], Json]
# An upstream model list answer to OpenAI Model objects; the second argument is the owner to
# name when the upstream names none.
ModelParser = Callable[[Json, str], list[Json]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How one generation operation is sent upstream and its answer shaped."""

    path: str  # under the dialect's api_prefix
    id_prefix: str  # of ids the gateway makes (`chatcmpl`, `cmpl`)
    shape: Callable[..., Json]  # the upstream's answer to OpenAI's (wire/normalize/)
    chunks: ChunkShape  # how its streamed chunks are shaped


GENERATION: Mapping[Operation, Endpoint] = {
    Operation.CHAT: Endpoint("/chat/completions", "chatcmpl", chat_completion, CHAT_CHUNKS),
    Operation.COMPLETIONS: Endpoint("/completions", "cmpl", text_completion, TEXT_CHUNKS),
}


def openai_models(answer: Json, owner: str) -> list[Json]:
    data = answer.get("data") or []
    if not isinstance(data, list):
        raise ValueError("a model list without a `data` array")
    return [m for raw in data if (m := model_object(raw, owner=owner)) is not None]


def same_model(model_id: str) -> tuple[str, ...]:
    return (model_id,)


def _keep(body: Json, spec: ProviderSpec) -> Json:
    return body


@dataclass(frozen=True, slots=True)
class Dialect:
    kind_label: str  # "Ollama": names the upstream in messages
    api_prefix: str = ""  # prepended to every Endpoint path
    unsupported: frozenset[Operation] = frozenset()
    quirks: Quirks = NO_QUIRKS  # request fields the upstream cannot honour
    rewrites: Mapping[Operation, Rewrite] = field(default_factory=dict)
    endpoints: Mapping[Operation, Endpoint] = field(default_factory=lambda: GENERATION)
    embeddings_path: str = "/embeddings"  # under api_prefix
    models_path: str = "/models"  # from the base URL, not under api_prefix
    parse_models: ModelParser = openai_models
    # Ids that name the same model, tried in order when one model is retrieved.
    model_aliases: Callable[[str], tuple[str, ...]] = same_model
    ready_path: str | None = None  # None: a model list answered is what "ready" means
    regenerate_ids: bool = False  # the upstream's ids are not unique
    one_prompt_per_call: bool = False  # legacy completions fan out, one prompt per call
    # How messages name one provider of this kind: by name, never by URL, since messages reach
    # clients and spans, and the URL is the operator's topology.
    label: str = "{kind} '{name}'"
    # What a providers file needs of the kind: default base URL, /responses mode, key required.
    config: KindConfig = field(default_factory=KindConfig)

    def rewrite(self, operation: Operation, body: Json, spec: ProviderSpec) -> Json:
        return self.rewrites.get(operation, _keep)(body, spec)

    def label_for(self, spec: ProviderSpec) -> str:
        return self.label.format(kind=self.kind_label, name=spec.name)
