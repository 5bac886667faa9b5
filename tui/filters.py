"""Turning what people type in the audit screen's filter bar into an `EventFilter`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from appliance.audit.query import EventFilter
from appliance.clock import format_ts
from appliance.errors import InvalidInput

_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f")


def parse_time(text: str, *, end_of_day: bool = False) -> str | None:
    """UTC time as typed ("2026-01-15", "2026-01-15 09:30", ISO with Z) -> stored form.

    A bare date given as an upper bound means the whole day, so `until 2026-01-15` keeps
    that day's events (the bound itself is exclusive).
    """
    text = text.strip()
    if not text:
        return None
    bare = text.removesuffix("Z")
    for fmt in _FORMATS:
        try:
            t = datetime.strptime(bare, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        if end_of_day and fmt == "%Y-%m-%d":
            try:
                t += timedelta(days=1)
            except OverflowError:  # 9999-12-31: the whole day reaches past the calendar
                break
        return format_ts(t)
    raise InvalidInput(f"not a time: {text!r}", "use UTC like 2026-01-15 or 2026-01-15 09:30")


def build_filter(actor: str = "", action: str = "", target: str = "", since: str = "",
                 until: str = "") -> EventFilter:
    """Empty fields filter nothing; target is `type:id`, `type:` or a bare id."""
    target = target.strip()
    target_type = target_id = None
    if ":" in target:
        t, _, i = target.partition(":")
        target_type, target_id = t.strip() or None, i.strip() or None
    elif target:
        target_id = target
    lower = parse_time(since)
    upper = parse_time(until, end_of_day=True)
    if lower and upper and lower >= upper:
        raise InvalidInput("the time range is empty", "'since' must come before 'until'")
    return EventFilter(since=lower, until=upper, actor=actor.strip() or None,
                       action=action.strip() or None, target_type=target_type,
                       target_id=target_id)
