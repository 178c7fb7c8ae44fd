"""Pure normalisation rules that the loopback upstreams do not exercise."""

from __future__ import annotations

import orjson

from oai_gateway.wire.normalize.chat import CHAT_CHUNKS, chat_logprobs
from oai_gateway.wire.normalize.embeddings import exact_embeddings
from oai_gateway.wire.normalize.stream import ChunkNormalizer
from oai_gateway.wire.normalize.text import text_logprobs


def test_chat_logprobs_gain_the_required_refusal_key() -> None:
    content = [{"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []}]
    assert chat_logprobs({"content": content}) == {"content": content, "refusal": None}
    assert chat_logprobs(None) is None


def test_chat_form_logprobs_become_legacy_completion_logprobs() -> None:
    chat_form = {
        "content": [
            {"token": "Hi", "logprob": -0.5, "top_logprobs": [{"token": "Hi", "logprob": -0.5}]},
            {"token": " there", "logprob": -1.0, "top_logprobs": [{"token": "!", "logprob": -2.0}]},
        ]
    }
    assert text_logprobs(chat_form) == {
        "tokens": ["Hi", " there"],
        "token_logprobs": [-0.5, -1.0],
        "top_logprobs": [{"Hi": -0.5}, {"!": -2.0}],
        "text_offset": [0, 2],
    }
    legacy = {"tokens": ["x"], "token_logprobs": [-1.0], "top_logprobs": [{}], "text_offset": [0]}
    assert text_logprobs(legacy) is legacy
    # The spec has every key as an array: one a server sends as null is left out.
    assert text_logprobs({**legacy, "top_logprobs": None}) == {
        "tokens": ["x"],
        "token_logprobs": [-1.0],
        "text_offset": [0],
    }


def test_usage_chunk_names_the_model_the_stream_named() -> None:
    normalizer = ChunkNormalizer(CHAT_CHUNKS, model="alias", include_usage=True)
    chunk = {"id": "c", "created": 1, "model": "real-model", "choices": [{"index": 0, "delta": {}}]}
    assert normalizer.chunk(chunk) is not None
    normalizer.chunk({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    final = normalizer.usage_chunk()
    assert final is not None
    assert final["model"] == "real-model"
    assert final["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def _embedding_answer(vectors: list[object]) -> dict[str, object]:
    return {
        "object": "list",
        "model": "m",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }


def test_exact_embedding_answers_are_recognised_for_pass_through() -> None:
    def exact(answer: dict[str, object], count: int = 2, encoding: str = "float") -> bool:
        raw = orjson.dumps(answer)
        found = exact_embeddings(raw, count=count, encoding=encoding)
        if found is None:
            return False
        assert found.body is raw
        assert found.usage == answer["usage"]
        return True

    floats = _embedding_answer([[0.5, 1.0], [0.25, 2.0]])
    assert exact(floats)
    assert not exact(floats, encoding="base64")
    assert not exact(floats, count=3)
    assert exact(_embedding_answer(["AAAAPw==", "AACAPw=="]), encoding="base64")
    assert not exact({**floats, "timings": {}})
    shuffled = _embedding_answer([[0.5], [0.25]])
    shuffled["data"] = list(reversed(shuffled["data"]))  # type: ignore[call-overload]
    assert not exact(shuffled)
    assert not exact({k: v for k, v in floats.items() if k != "usage"})
    assert not exact({**floats, "model": ""})
    assert not exact({**floats, "object": "embedding_list"})
    assert not exact({**floats, "usage": {"prompt_tokens": 2, "total_tokens": True}})
    assert not exact(_embedding_answer([[0.5], {"values": [0.25]}]))
    with_extra_field = _embedding_answer([[0.5], [0.25]])
    with_extra_field["data"][1]["norm"] = 1.0  # type: ignore[index]
    assert not exact(with_extra_field)
    truncated = orjson.dumps(floats)[:-9]
    assert exact_embeddings(truncated, count=2, encoding="float") is None
