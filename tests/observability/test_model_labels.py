"""Client-chosen `model` strings cannot mint unbounded Prometheus series (metric cardinality).

The upstream here serves every name it is asked for, as a wildcard-routing upstream does, so each
made-up model gets an answer with usage: exactly the case where labels would grow without end.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oai_gateway.observability.model_labels import MAX_MODELS, OTHER, ModelLabels
from tests.conftest import CUSTOM_KEY, GATEWAY_KEY
from tests.support.fake_upstreams import OpenAICompatUpstream
from tests.support.gateway import GatewayServer, make_config

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}


class ServesAnyModel(OpenAICompatUpstream):
    def resolve_model(self, name: str) -> str | None:
        return name


@pytest.fixture(scope="module")
def wildcard() -> Iterator[GatewayServer]:
    with ServesAnyModel(api_key=CUSTOM_KEY) as upstream:
        config = make_config(
            allowed_api_keys=GATEWAY_KEY,
            custom_base_url=upstream.base_url + "/v1",
            custom_api_key=CUSTOM_KEY,
        )
        with GatewayServer(config) as server:
            yield server


def token_models(client: httpx.Client) -> dict[str, float]:
    """Prompt tokens per `model` label of the custom provider."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            wanted = sample.labels.get("kind") == "prompt" and sample.labels["provider"] == "custom"
            if sample.name == "oai_gateway_tokens_total" and wanted:
                found[sample.labels["model"]] = sample.value
    return found


def test_made_up_models_share_one_bounded_other_label(wildcard: GatewayServer) -> None:
    names = [f"made-up-{i}" for i in range(MAX_MODELS + 20)]
    with httpx.Client(base_url=wildcard.url, headers=AUTH, timeout=10) as client:
        for name in names:
            body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
            assert client.post("/custom/v1/chat/completions", json=body).status_code == 200
        seen = token_models(client)
        # A model already labelled keeps its label; only new names beyond the bound are `other`.
        body = {"model": names[0], "messages": [{"role": "user", "content": "hi again"}]}
        assert client.post("/custom/v1/chat/completions", json=body).status_code == 200
        again = token_models(client)
    assert len(seen) == MAX_MODELS + 1, sorted(seen)
    assert OTHER in seen
    assert set(seen) - {OTHER} == set(names[:MAX_MODELS])
    assert again[names[0]] > seen[names[0]]
    assert again[OTHER] == seen[OTHER]


def test_an_allow_list_is_the_label_set() -> None:
    labels = ModelLabels({"p": frozenset({"a", "b"}), "q": None})
    assert [labels.label("p", m) for m in ("a", "b", "c")] == ["a", "b", OTHER]
    assert labels.label("q", "c") == "c"
