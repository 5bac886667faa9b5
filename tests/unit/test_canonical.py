"""The fast canonical-JSON path is byte-for-byte RFC 8785 wherever it is taken."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.audit.events import Actor, Event
from appliance.canonical import canonical_bytes

scalars = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text() | st.floats(
    allow_nan=False, allow_infinity=False)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(values)
def test_fast_path_equals_rfc8785(value) -> None:
    try:
        expected = rfc8785.dumps(value)
    except Exception as exc:  # the reference refuses: so must we
        with pytest.raises(type(exc)):
            canonical_bytes(value)
        return
    assert canonical_bytes(value) == expected


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    value = {"\U0001f600": 1, "\ufb01": 2, "a": 3}
    assert canonical_bytes(value) == rfc8785.dumps(value)
    assert canonical_bytes({"x": 1.0, "y": 1e-7}) == b'{"x":1,"y":1e-7}'


texts = st.text(max_size=12)


def unexplained(event: Event) -> bool:
    """A change to a record (old values) with no reason: refused, whatever it holds."""
    if event.old is None or (event.reason or "").strip():
        return False
    with pytest.raises(ValueError, match="a change to a record needs its reason"):
        event.canonical(1, "2026-11-27T10:00:00.000Z", None)
    return True

events = st.builds(
    Event, action=texts, actor=st.builds(Actor, texts, texts, texts), target_type=texts,
    target_id=texts, target_digest=st.none() | texts,
    outcome=st.sampled_from(["success", "failure", "denied"]), reason=st.none() | texts,
    old=values, new=values, details=st.dictionaries(st.text(max_size=6), values, max_size=4),
    terminal=texts, signature=st.none() | st.dictionaries(st.text(max_size=6), values,
                                                           max_size=3))


@settings(max_examples=400, deadline=None)
@given(events, st.integers(1, 2**40), st.none() | texts)
def test_event_encoding_equals_rfc8785_of_its_body(event: Event, seq: int, warning) -> None:
    """The trail's assembled encoding is the reference encoding of the event's body; a
    change (old values) without a reason is refused instead."""
    if unexplained(event):
        return
    body = event.body(seq, "2026-11-27T10:00:00.000Z", warning)
    try:
        expected = rfc8785.dumps(body)
    except Exception as exc:
        with pytest.raises(type(exc)):
            event.canonical(seq, "2026-11-27T10:00:00.000Z", warning)
        return
    assert event.canonical(seq, "2026-11-27T10:00:00.000Z", warning) == expected


flat_scalars = (st.none() | st.booleans() | st.text(max_size=8)
                | st.integers(-(2**53) - 2, 2**53 + 2) | st.integers(-(2**64), 2**64))
flat_dicts = st.dictionaries(st.text(max_size=6), flat_scalars | st.floats(allow_nan=False),
                             max_size=5)


@settings(max_examples=400, deadline=None)
@given(st.builds(Event, action=texts, actor=st.builds(Actor, texts, texts, texts),
                 reason=st.text(min_size=1, max_size=8).filter(str.strip),
                 old=st.none() | flat_dicts, new=st.none() | flat_dicts, details=flat_dicts,
                 signature=st.none() | flat_dicts))
def test_flat_values_match_rfc8785_at_the_integer_limit(event: Event) -> None:
    """Flat dicts skip the Python walk: integers just past 2^53, floats and non-ASCII keys
    must still come out as the reference has them, or be refused as it refuses them."""
    if unexplained(event):
        return
    body = event.body(7, "2026-11-27T10:00:00.000Z", None)
    try:
        expected = rfc8785.dumps(body)
    except Exception as exc:
        with pytest.raises(type(exc)):
            event.canonical(7, "2026-11-27T10:00:00.000Z", None)
        return
    assert event.canonical(7, "2026-11-27T10:00:00.000Z", None) == expected


@pytest.mark.parametrize("value", [
    {"a": 1, "b": "x", "c": None, "d": True},  # flat: the fast path
    {"a": 1.5}, {"a": 1.0}, {"a": 1e21}, {1: "x"}, {"\u00e9": 1, "z": 2}, {"\U0001f600": 1, "\ufb01": 2},
    {"a": {"b": 1.0}}, ["a", 2.0],  # not flat: the reference takes them
])
def test_every_free_form_value_encodes_as_the_reference_does(value) -> None:
    for field_name in ("details", "old", "new", "signature"):
        event = Event(action="x", actor=Actor("u", "U", "r"), reason="why",
                      **{field_name: value})
        body = event.body(3, "2026-11-27T10:00:00.000Z", None)
        try:
            expected = rfc8785.dumps(body)
        except Exception as exc:  # the reference refuses a key that is not a string: so must we
            with pytest.raises(type(exc)):
                event.canonical(3, "2026-11-27T10:00:00.000Z", None)
            continue
        assert event.canonical(3, "2026-11-27T10:00:00.000Z", None) == expected
