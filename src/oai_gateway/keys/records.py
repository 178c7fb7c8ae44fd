"""Virtual key records (SPEC §10.1) and the UTC timestamps they carry.

Records are msgspec structs: every backend stores a record as its JSON encoding, so the three
backends cannot drift apart in what they keep.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

Period = Literal["day", "week", "month", "total"]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

_DAY_S = 86_400


class Limits(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """Per-key rate limits; None means no limit of that kind."""

    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    max_parallel: PositiveInt | None = None

    @property
    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_parallel is not None


class Budget(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """A spending cap per period: exactly one of `usd` or `tokens`."""

    period: Period
    usd: Annotated[float, msgspec.Meta(gt=0)] | None = None
    tokens: PositiveInt | None = None

    def __post_init__(self) -> None:
        if (self.usd is None) == (self.tokens is None):
            raise ValueError("a budget has exactly one of 'usd' or 'tokens'")

    @property
    def limit(self) -> float:
        return float(self.usd if self.usd is not None else self.tokens or 0)


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One virtual key as stored: never the secret, only its keyed hash (hex)."""

    id: str
    secret_hash: str
    name: str = ""
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None
    providers: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    limits: Limits = Limits()
    budget: Budget | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)

    def public(self) -> dict[str, object]:
        """The record as the admin API and CLI show it: everything but the hash."""
        shown = msgspec.to_builtins(self)
        del shown["secret_hash"]
        shown["object"] = "virtual_key"
        return shown  # type: ignore[no-any-return]

    @property
    def limited(self) -> bool:
        """Whether a request with this key needs the store's limiter at all."""
        return self.limits.any or self.budget is not None


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(KeyRecord)


def encode_record(record: KeyRecord) -> bytes:
    return _ENCODER.encode(record)


def decode_record(data: bytes | str) -> KeyRecord:
    return _DECODER.decode(data)


def now_iso() -> str:
    return format_time(time.time())


def format_time(epoch_s: float) -> str:
    """`2026-12-31T00:00:00Z`: whole seconds, always UTC, always with `Z`."""
    return datetime.fromtimestamp(int(epoch_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    """An ISO 8601 timestamp with an explicit UTC offset, as epoch seconds; ValueError else."""
    value = datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone; use UTC, e.g. 2026-12-31T00:00:00Z")
    return value.timestamp()


def normalise_time(text: str) -> str:
    """Any accepted ISO 8601 input in the one output form."""
    return format_time(parse_time(text))


def period_index(period: Period, epoch_s: float) -> int:
    """Which budget period `epoch_s` falls in; periods start at 00:00 UTC, weeks on Monday.

    The Redis backend computes the same numbers inside its script (store_redis_admit.lua).
    """
    day = int(epoch_s // _DAY_S)
    if period == "day":
        return day
    if period == "week":
        return (day + 3) // 7  # 1970-01-01 was a Thursday: +3 puts Mondays on multiples of 7
    if period == "month":
        moment = datetime.fromtimestamp(epoch_s, UTC)
        return moment.year * 12 + moment.month - 1
    return 0
