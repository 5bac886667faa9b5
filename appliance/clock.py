"""The one way the appliance reads time, so tests can fix it and nothing else does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Clock:
    """UTC wall clock; `now` is swappable at the edge (tests pass a fixed or stepping clock)."""

    now: Callable[[], datetime] = field(default=utc_now)

    def iso(self) -> str:
        return format_ts(self.now())


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
