"""The one way the appliance reads time, so tests can fix it and nothing else does."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

_MILLIS = tuple(f".{milli:03d}Z" for milli in range(1000))


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Clock:
    """UTC wall clock; `now` is swappable at the edge (tests pass a fixed or stepping clock)."""

    now: Callable[[], datetime] = field(default=utc_now)
    _second: int = field(default=-1, init=False, repr=False, compare=False)
    _prefix: str = field(default="", init=False, repr=False, compare=False)

    def iso(self) -> str:
        if self.now is not utc_now:
            return format_ts(self.now())
        # The system clock without a datetime (every audit append reads it): the same
        # instant, truncated to the millisecond as format_ts does.
        return self.format_ms(time.time_ns() // 1_000_000)

    def format_ms(self, ms: int) -> str:
        """`format_ts` of the instant `ms` milliseconds after the epoch: the date and time
        of day formatted once a second, the milliseconds from a table (right after each
        durable commit, every distinct piece of code an append touches runs slower)."""
        second = ms // 1000
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return self._prefix + _MILLIS[ms - second * 1000]


def format_ts(t: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a Z, the one timestamp form stored anywhere."""
    if t.tzinfo is not UTC:
        t = t.astimezone(UTC)
    return t.isoformat(timespec="milliseconds")[:-6] + "Z"  # drop "+00:00"


def parse_ts(s: str) -> datetime:
    """The inverse of `format_ts` (strict: the stored form only)."""
    if len(s) != 24 or s[10] != "T" or s[-1] != "Z":
        raise ValueError(f"not an appliance timestamp: {s!r}")
    return datetime.fromisoformat(s)
