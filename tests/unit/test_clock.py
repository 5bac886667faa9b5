"""The clock's fast path formats exactly as `format_ts` does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.clock import Clock, format_ts, utc_now

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**42), min_size=1, max_size=20))
def test_fast_formatting_equals_format_ts(instants: list[int]) -> None:
    clock = Clock()  # one clock across readings: its once-a-second cache must not leak
    for ms in sorted(instants) + instants:
        assert clock.format_ms(ms) == format_ts(EPOCH + timedelta(milliseconds=ms))


def test_the_system_clock_reading_lies_between_two_datetime_readings() -> None:
    clock = Clock()
    for _ in range(1000):
        before, reading, after = format_ts(utc_now()), clock.iso(), format_ts(utc_now())
        assert before <= reading <= after


def test_a_swapped_clock_is_read_through_its_function() -> None:
    fixed = datetime(2026, 1, 15, 9, 0, 0, 123456, tzinfo=UTC)
    assert Clock(now=lambda: fixed).iso() == "2026-01-15T09:00:00.123Z"
