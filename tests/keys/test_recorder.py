"""What one request's context becomes in the ledger (SPEC §10.3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from oai_gateway.config.settings import Price, ProviderSpec
from oai_gateway.keys.ledger import Ledger
from oai_gateway.keys.recorder import UsageRecorder
from oai_gateway.keys.usage import UsageRecord
from oai_gateway.observability.context import RequestContext

CHAT = "/{provider}/v1/chat/completions"
USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 4,
    "total_tokens": 14,
    "prompt_tokens_details": {"cached_tokens": 6},
}


class Nowhere:
    async def append_usage(self, records: Sequence[UsageRecord]) -> None:
        raise AssertionError("not written in these tests")


def recorded(status: int = 200, **values: Any) -> list[UsageRecord]:
    ledger = Ledger(Nowhere())
    spec = ProviderSpec("priced", "openai", "http://x", prices={"m": Price(2.0, 8.0)})
    recorder = UsageRecorder(ledger, {"priced": spec})
    fields: dict[str, Any] = {"route": CHAT, "provider": "priced", "model": "m", "key_id": "k"}
    fields.update(values)
    context = RequestContext("req-1")
    for name, value in fields.items():
        setattr(context, name, value)
    recorder.observe(context, status)
    return list(ledger._pending)


def test_a_priced_answer() -> None:
    (record,) = recorded(usage=USAGE, stream=True)
    assert (record.key_id, record.route, record.provider, record.model) == (
        "k",
        CHAT,
        "priced",
        "m",
    )
    assert (record.input_tokens, record.output_tokens, record.cached_tokens) == (10, 4, 6)
    assert (record.cost_nanos, record.priced) == (round((10 * 2.0 + 4 * 8.0) * 1000), True)
    assert record.stream is True
    assert record.request_id == "req-1"
    assert record.duration_ms >= 0


def test_an_unpriced_model_costs_nothing() -> None:
    (record,) = recorded(usage=USAGE, model="other")
    assert (record.cost_nanos, record.priced) == (0, False)


@pytest.mark.parametrize(
    "values",
    [{"key_id": None}, {"route": "/metrics"}, {"route": ""}, {"route": "/admin/v1/keys"}],
)
def test_only_data_plane_requests_of_a_known_key(values: dict[str, Any]) -> None:
    assert recorded(**values) == []


def test_a_stream_cut_after_it_started_is_charged_its_reservation() -> None:
    (record,) = recorded(reserved_tokens=300, response_started=True)
    assert (record.input_tokens, record.output_tokens) == (0, 300)
    assert record.cost_nanos == 300 * 8 * 1000


def test_a_client_that_left_is_charged_its_reservation() -> None:
    (record,) = recorded(499, reserved_tokens=300)
    assert record.output_tokens == 300


def test_an_error_before_any_answer_costs_nothing() -> None:
    (record,) = recorded(502, reserved_tokens=300)
    assert (record.status, record.input_tokens, record.output_tokens) == (502, 0, 0)


def test_reported_usage_wins_over_the_reservation() -> None:
    (record,) = recorded(499, reserved_tokens=300, usage=USAGE, response_started=True)
    assert record.output_tokens == 4
