"""Usage accounting values (SPEC §10.3): one record per request, roll-up queries and rows.

Costs are kept as integer nano-dollars (1e-9 USD) everywhere they are stored or summed, so the
three store backends add up to exactly the same totals; `cost_usd` only appears at the edges.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings import the store, which imports these values
    from oai_gateway.config.settings import Price

GROUP_FIELDS = ("key", "model", "provider", "day")
"""The `group_by` values of `/admin/v1/usage`; rows are sorted by key, provider, model, day."""

NANOS_PER_USD = 1_000_000_000
_SECONDS_PER_DAY = 86_400


@dataclass(slots=True)
class UsageRecord:
    """What one request used; written to the ledger once the response is done.

    Not frozen: a frozen dataclass sets each field through `object.__setattr__`, which made one
    record about ten times as costly to build (3.6 µs against 0.4 µs, one per request); nothing
    changes a record once made."""

    key_id: str
    route: str
    provider: str | None
    model: str | None
    status: int
    stream: bool
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_nanos: int = 0
    priced: bool = False
    duration_ms: float = 0.0
    timestamp: float = field(default_factory=time.time)  # seconds since the epoch, UTC
    request_id: str = ""

    @property
    def error(self) -> bool:
        return self.status >= 400

    @property
    def day(self) -> str:
        return day_of(self.timestamp)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Filters and grouping of a roll-up; `since` is inclusive, `until` exclusive."""

    key_id: str | None = None
    provider: str | None = None
    model: str | None = None
    since: float | None = None
    until: float | None = None
    group_by: tuple[str, ...] = ()

    def matches(self, record: UsageRecord) -> bool:
        return (
            (self.key_id is None or record.key_id == self.key_id)
            and (self.provider is None or record.provider == self.provider)
            and (self.model is None or record.model == self.model)
            and (self.since is None or record.timestamp >= self.since)
            and (self.until is None or record.timestamp < self.until)
        )


@dataclass(slots=True)
class UsageRow:
    """One roll-up row: the grouped fields (None when not grouped by) and the totals."""

    key_id: str | None = None
    model: str | None = None
    provider: str | None = None
    day: str | None = None
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_nanos: int = 0
    unpriced_requests: int = 0

    def add(self, record: UsageRecord) -> None:
        self.requests += 1
        self.errors += record.error
        self.input_tokens += record.input_tokens
        self.output_tokens += record.output_tokens
        self.cached_tokens += record.cached_tokens
        self.cost_nanos += record.cost_nanos
        self.unpriced_requests += not record.priced

    @property
    def cost_usd(self) -> float:
        return self.cost_nanos / NANOS_PER_USD

    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.key_id or "", self.provider or "", self.model or "", self.day or "")

    def as_json(self, group_by: Iterable[str]) -> dict[str, object]:
        grouped = set(group_by)
        row: dict[str, object] = {}
        for name, value in (
            ("key", self.key_id),
            ("model", self.model),
            ("provider", self.provider),
            ("day", self.day),
        ):
            if name in grouped:
                row["key_id" if name == "key" else name] = value
        row.update(
            requests=self.requests,
            errors=self.errors,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_tokens=self.cached_tokens,
            cost_usd=round(self.cost_usd, 9),
            unpriced_requests=self.unpriced_requests,
        )
        return row


def group_values(record: UsageRecord, group_by: Iterable[str]) -> UsageRow:
    """An empty row carrying the record's values of the grouped fields."""
    grouped = set(group_by)
    return UsageRow(
        key_id=record.key_id if "key" in grouped else None,
        model=record.model if "model" in grouped else None,
        provider=record.provider if "provider" in grouped else None,
        day=record.day if "day" in grouped else None,
    )


def roll_up(records: Iterable[UsageRecord], query: UsageQuery) -> list[UsageRow]:
    """The rows `query` asks for, from raw records (the memory backend and the tests)."""
    rows: dict[tuple[str, str, str, str], UsageRow] = {}
    for record in records:
        if not query.matches(record):
            continue
        empty = group_values(record, query.group_by)
        row = rows.setdefault(empty.sort_key(), empty)
        row.add(record)
    return sort_rows(rows.values())


def sort_rows(rows: Iterable[UsageRow]) -> list[UsageRow]:
    return sorted(rows, key=UsageRow.sort_key)


def cost_nanos(
    prices: Mapping[str, Price], model: str | None, input_tokens: int, output_tokens: int
) -> tuple[int, bool]:
    """The cost of a request in nano-dollars and whether the model has a price at all."""
    price = prices.get(model) if model is not None else None
    if price is None:
        return 0, False
    # USD per million tokens is exactly 1000 nano-dollars per token per USD of price.
    return round((input_tokens * price.input + output_tokens * price.output) * 1000), True


def day_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).date().isoformat()


def day_start(day: str) -> float:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).timestamp()


def parse_bound(text: str) -> float:
    """An ISO 8601 time (a bare date is its midnight; no offset means UTC) as epoch seconds.

    Raises ValueError with a message fit for the client.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text[:64]!r} is not an ISO 8601 time such as 2026-12-31T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def usage_tokens(usage: Mapping[str, object] | None) -> tuple[int, int, int]:
    """Input, output and cached tokens from an OpenAI (or Responses API) `usage` object."""
    if not usage:
        return 0, 0, 0
    input_tokens = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    output_tokens = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    details = usage.get("prompt_tokens_details", usage.get("input_tokens_details"))
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    return input_tokens, output_tokens, cached


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
