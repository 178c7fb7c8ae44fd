"""Streamed chunks: `ChunkNormalizer` keeps what one stream shares (id, created time, model,
usage held back for the end) and leaves each choice to its kind's `ChunkShape`."""

from __future__ import annotations

import time
from typing import Any, Protocol

from oai_gateway.wire.answer_shapes import is_int
from oai_gateway.wire.normalize.common import Json, new_id, usage


class ChunkShape(Protocol):
    """How one kind of stream (chat, legacy completions, …) shapes its chunks' choices."""

    object_name: str  # the chunks' `object`
    id_prefix: str  # of ids the gateway makes for the usage chunk
    null_usage: bool  # `usage: null` on every chunk when the client asked for usage

    def choice(self, choice: Json, position: int, roles: set[int]) -> Json:
        """One choice reshaped; `roles` holds the indexes whose role was already sent."""
        ...

    def exact(self, choice: Json, roles: set[int]) -> bool:
        """Whether `choice` (the only one of its chunk, at position 0) is already exactly what
        `choice` would make of it; if so, what `choice` would record in `roles` is recorded."""
        ...


# The top-level keys of chunks the gateway sends as they came (see `ChunkNormalizer._as_sent`),
# in the order `chunk` builds them, which is OpenAI's.
_HEAD = ("id", "object", "created", "model", "choices")
_AS_SENT = frozenset(
    {
        _HEAD,
        (*_HEAD, "system_fingerprint"),
        (*_HEAD, "usage"),
        (*_HEAD, "system_fingerprint", "usage"),
    }
)


class UpstreamStreamError(Exception):
    """The upstream reported an error inside its stream."""

    def __init__(self, payload: Any) -> None:
        message = payload.get("message") if isinstance(payload, dict) else payload
        super().__init__(str(message or "the upstream reported an error mid-stream"))


class ChunkNormalizer:
    """Re-shapes one stream's chunks: a stable id and created time, the role only in the first
    delta of each choice, `finish_reason` always present, extras dropped, and usage held back for
    one final `choices: []` chunk that is sent only when the client asked for it."""

    __slots__ = (
        "_choice_index",
        "_created",
        "_id",
        "_include_usage",
        "_model",
        "_roles",
        "_shape",
        "usage",
    )

    def __init__(
        self,
        shape: ChunkShape,
        *,
        model: str,
        include_usage: bool,
        ident: str | None = None,
        choice_index: int | None = None,
    ) -> None:
        self._shape = shape
        self._choice_index = choice_index  # forces every choice's index (merged streams)
        self._model = model
        self._include_usage = include_usage
        self._id = ident
        self._created: int | None = None
        self._roles: set[int] = set()
        self.usage: Json | None = None

    def chunk(self, obj: Json) -> Json | None:
        """The chunk to send for an upstream chunk, or None when nothing is left of it."""
        if self._as_sent(obj):
            # Most upstreams send every chunk in exactly this shape: only the values the
            # stream shares are set, instead of rebuilding the chunk key by key.
            self._remember(obj)
            out = {
                **obj,
                "id": self._id,
                "object": self._shape.object_name,
                "created": self._created,
                "model": self._model,
            }
            if self._include_usage and self._shape.null_usage:
                out["usage"] = None
            elif "usage" in out:
                del out["usage"]
            return out
        return self._rebuilt(obj)

    def _as_sent(self, obj: Json) -> bool:
        """Whether `_rebuilt` would keep the chunk's keys, their order, its one choice and its
        fingerprint as they are, and find no usage in it."""
        if tuple(obj) not in _AS_SENT or self._choice_index is not None:
            return False
        if obj.get("usage") is not None or type(obj.get("system_fingerprint", "")) is not str:
            return False
        choices = obj["choices"]
        return (
            type(choices) is list
            and len(choices) == 1
            and type(choices[0]) is dict
            and self._shape.exact(choices[0], self._roles)
        )

    def _rebuilt(self, obj: Json) -> Json | None:
        """The chunk built anew from what OpenAI's shape keeps of `obj`."""
        if obj.get("error"):
            raise UpstreamStreamError(obj["error"])
        found = usage(obj.get("usage"))
        if found is not None:
            self.usage = found
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            return None
        self._remember(obj)
        out: Json = {
            "id": self._id,
            "object": self._shape.object_name,
            "created": self._created,
            "model": self._model,
            "choices": [self._choice(c, i) for i, c in enumerate(choices) if isinstance(c, dict)],
        }
        fingerprint = obj.get("system_fingerprint")
        if isinstance(fingerprint, str):
            out["system_fingerprint"] = fingerprint
        if self._include_usage and self._shape.null_usage:
            out["usage"] = None
        return out

    def _remember(self, obj: Json) -> None:
        """The id and created time of the first chunk, and the model the chunks name."""
        if self._id is None:
            upstream_id = obj.get("id")
            self._id = upstream_id if isinstance(upstream_id, str) else new_id("chatcmpl")
        if self._created is None:
            created = obj.get("created")
            self._created = created if is_int(created) else int(time.time())
        model = obj.get("model")
        if isinstance(model, str) and model:
            self._model = model  # the final usage chunk names the model the chunks named

    def _choice(self, choice: Json, position: int) -> Json:
        if self._choice_index is not None:
            choice = {**choice, "index": self._choice_index}
        return self._shape.choice(choice, position, self._roles)

    def usage_chunk(self) -> Json | None:
        """The final usage-only chunk, when the client asked for it and the upstream reported it."""
        if not self._include_usage or self.usage is None:
            return None
        return {
            "id": self._id or new_id(self._shape.id_prefix),
            "object": self._shape.object_name,
            "created": self._created or int(time.time()),
            "model": self._model,
            "choices": [],
            "usage": self.usage,
        }
