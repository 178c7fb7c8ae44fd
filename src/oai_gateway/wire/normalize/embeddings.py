"""Embeddings: base64 and float vectors, and the exact answers passed on as received."""

from __future__ import annotations

import base64
import struct

import msgspec

from oai_gateway.errors import UpstreamError
from oai_gateway.wire.answer import Answer
from oai_gateway.wire.answer_shapes import is_int, is_number
from oai_gateway.wire.normalize.common import Json


def encode_base64(vector: list[float]) -> str:
    """OpenAI's base64 embedding: packed little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def decode_base64(text: str) -> list[float]:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error: not base64
        raise UpstreamError("The upstream returned an embedding that is not base64.") from None
    if len(raw) % 4:
        raise UpstreamError("The upstream returned a base64 embedding of partial float32 values.")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


class _ExactUsage(msgspec.Struct, forbid_unknown_fields=True):
    prompt_tokens: int
    total_tokens: int


class _ExactEmbedding(msgspec.Struct, forbid_unknown_fields=True):
    object: str
    index: int
    embedding: msgspec.Raw  # located and syntax-checked, never converted


class _ExactEmbeddingList(msgspec.Struct, forbid_unknown_fields=True):
    object: str
    data: list[_ExactEmbedding]
    model: str
    usage: _ExactUsage


_EXACT_EMBEDDINGS = msgspec.json.Decoder(_ExactEmbeddingList)


def exact_embeddings(raw: bytes, *, count: int, encoding: str) -> Answer | None:
    """The upstream's answer as it is, when `embeddings()` would change nothing in it.

    A megabyte of float vectors costs several milliseconds to parse into Python floats and as
    much again to serialise; this check reads the structure and skips over the vectors, so an
    answer already in OpenAI's exact shape goes out as received. None means: normalise it.
    """
    try:
        answer = _EXACT_EMBEDDINGS.decode(raw)
    except msgspec.DecodeError:  # not exact (or not JSON): the full path decides what it is
        return None
    opener = b"[" if encoding == "float" else b'"'
    exact = (
        answer.object == "list"
        and bool(answer.model)
        and len(answer.data) == count
        and all(
            item.object == "embedding"
            and item.index == position
            and memoryview(item.embedding)[:1] == opener
            for position, item in enumerate(answer.data)
        )
    )
    if not exact:
        return None
    usage = answer.usage
    return Answer(raw, {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens})


def _item(item: object, position: int, encoding: str) -> Json:
    if not isinstance(item, dict):
        raise UpstreamError("The upstream returned a malformed embedding.")
    index = item.get("index")
    return {
        "object": "embedding",
        "index": index if is_int(index) else position,
        "embedding": _vector(item.get("embedding"), encoding),
    }


def _vector(vector: object, encoding: str) -> list[float] | str:
    """An embedding in the client's encoding, from floats or base64, checked either way."""
    if isinstance(vector, str):
        floats = decode_base64(vector)  # checks it even when it is passed on as it is
        return vector if encoding == "base64" else floats
    if not isinstance(vector, list) or not all(map(is_number, vector)):
        raise UpstreamError("The upstream returned a malformed embedding.")
    if encoding != "base64":
        return vector
    try:
        return encode_base64(vector)
    except OverflowError:  # a value beyond float32's range
        raise UpstreamError("The upstream returned an embedding out of float32 range.") from None


def _usage(found: object) -> Json:
    tokens = found.get("prompt_tokens") if isinstance(found, dict) else None
    tokens = tokens if is_int(tokens) else 0
    total = found.get("total_tokens") if isinstance(found, dict) else None
    return {"prompt_tokens": tokens, "total_tokens": total if is_int(total) else tokens}


def embeddings(obj: Json, *, model: str, count: int, encoding: str) -> Json:
    """One embedding per input in input order, in the encoding the client asked for."""
    data = obj.get("data")
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else 0
        raise UpstreamError(f"The upstream returned {got} embeddings for {count} inputs.")
    items = [_item(item, position, encoding) for position, item in enumerate(data)]
    items.sort(key=lambda i: i["index"])
    name = obj.get("model")
    return {
        "object": "list",
        "data": items,
        "model": name if isinstance(name, str) and name else model,
        "usage": _usage(obj.get("usage")),
    }
