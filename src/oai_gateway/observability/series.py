"""Writers bound to one prometheus-client child's values, for the updates made on every request.

`Counter.inc` and `Histogram.observe` re-check on each call what never changes for a child made
once (that it has its labels, that the amount is valid, a linear search of the buckets): about
four Python calls per update, some forty per request. The values underneath (`MutexValue` in one
process, the mmap-backed value of multiprocess mode) do the actual write through their own
`inc`, so binding those once keeps both modes, and the exposition, exactly as they were.

In one process the value's `inc` takes its mutex on every update. The gateway updates and reads
its metrics only on the event loop's thread, so that lock guards nothing there: the bound writer
adds to the value's float directly (about a fifth of the cost). Multiprocess values keep their
own `inc`, which also writes the worker's file.

They are prometheus-client internals; tests/observability/test_series.py checks them against
the public API, so a release that changes them fails there, by name.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

Inc = Callable[[float], None]


def _value_inc(value: Any) -> Inc:
    if value._multiprocess:
        shared: Inc = value.inc
        return shared

    def inc(amount: float) -> None:
        value._value += amount

    return inc


def counter_inc(child: Any) -> Inc:
    """`child.inc(amount)` for a counter or gauge child, amount >= 0 for a counter."""
    return _value_inc(child._value)


class HistogramWriter:
    """`child.observe(amount)` for a histogram child."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Any) -> None:
        self._bounds: list[float] = list(child._upper_bounds)  # sorted, ends with +Inf
        self._buckets: list[Inc] = [_value_inc(bucket) for bucket in child._buckets]
        self._sum: Inc = _value_inc(child._sum)

    def observe(self, amount: float) -> None:
        self._sum(amount)
        # The first bucket whose upper bound is >= amount, as `Histogram.observe` picks it.
        self._buckets[bisect_left(self._bounds, amount)](1.0)
